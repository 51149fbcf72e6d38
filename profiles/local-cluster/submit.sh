#!/usr/bin/env bash
# Local stand-in for sbatch (cluster-generic-submit-cmd): records the resources it was given,
# starts the job script in the background on this machine and prints a job id.
#   submit.sh --rule R --threads N --mem MB --gpus N --runtime MIN JOBSCRIPT
# Job records go to $LOCAL_CLUSTER_DIR (default .snakemake/local-cluster, relative to the
# working directory Snakemake runs in), one folder per job id:
#   resources  key=value lines as submitted     log  the job's stdout + stderr
#   status     running | success | failed (read by status.sh)
set -euo pipefail

declare -A res=([rule]="" [threads]=1 [mem]="" [gpus]=0 [runtime]="")
while [ $# -gt 1 ]; do
    case "$1" in
        --rule|--threads|--mem|--gpus|--runtime) res[${1#--}]=$2; shift 2 ;;
        *) echo "submit.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
jobscript=${1:?submit.sh: no job script given}
[ -n "${res[mem]}" ] || { echo "submit.sh: --mem is required" >&2; exit 2; }

queue=${LOCAL_CLUSTER_DIR:-.snakemake/local-cluster}
jobid="$(date +%s%N)_$$"
dir="$queue/$jobid"
mkdir -p "$dir"
{
    for key in rule threads mem gpus runtime; do echo "$key=${res[$key]}"; done
    echo "jobscript=$jobscript"
} > "$dir/resources"
echo running > "$dir/status"

# The job: run the script, then replace the status marker atomically (status.sh never sees
# a half-written file). setsid + nohup: the job outlives this submit call, like a batch job.
setsid nohup bash -c '
    dir=$1; jobscript=$2
    if bash "$jobscript" > "$dir/log" 2>&1; then s=success; else s=failed; fi
    echo "$s" > "$dir/status.tmp" && mv "$dir/status.tmp" "$dir/status"
' local-cluster-job "$dir" "$jobscript" < /dev/null > /dev/null 2>&1 &

echo "$jobid"
