#!/usr/bin/env bash
# Local stand-in for sacct (cluster-generic-status-cmd): prints running, success or failed
# for a job id from submit.sh, read from its status marker.
set -euo pipefail
jobid=${1:?status.sh: no job id given}
marker="${LOCAL_CLUSTER_DIR:-.snakemake/local-cluster}/$jobid/status"
if [ -f "$marker" ]; then
    cat "$marker"
else
    # no record = the job cannot have succeeded
    echo "status.sh: no job $jobid ($marker missing)" >&2
    echo failed
fi
