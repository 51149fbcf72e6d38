# Concerto reproduction workflow: one experiment engine for every panel of the paper.
#   config (datasets, splits, preprocessing, experiments, figures) -> validate + cross-field
#   checks -> make_split -> preprocess -> train_concerto -> run_method -> score -> collect ->
#   plot_<type>. Targets follow from the enabled experiments and figures (rules/common.smk).
import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")


# The repository's study (config.yaml), also when run with --directory elsewhere. A study
# given with `--configfile my.yaml` replaces it (schema defaults fill what it leaves out);
# `--config seed=1` changes a top-level scalar of whichever study runs.
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config.yaml"


# Rule scripts (and cluster jobs, which inherit the environment) import the workflow
# library from <repo>/scripts.
SCRIPTS_DIR = os.path.join(workflow.basedir, "scripts")
sys.path.insert(0, SCRIPTS_DIR)
# (set, not asserted with `envvars:` -- an existing PYTHONPATH is optional and kept)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (SCRIPTS_DIR, workflow.basedir, os.environ.get("PYTHONPATH", "")) if p
    ),
    # TensorFlow's C++ start-up chatter would otherwise fill every rule log
    TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
)

from concerto_workflow.workflow_config import (check_config, check_resource_placeholders, extend_config,
                                              resolve_paths)

# a study may build on another (config/real.yaml: config.yaml with real datasets)
_study = extend_config(config)
config.clear()
config.update(_study)
validate(config, schema="rules/config.schema.yaml")
resolve_paths(config, workflow.basedir)  # relative data paths start at the repository
check_config(config)
check_resource_placeholders(workflow.resource_settings)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/download.smk"
include: "rules/engine.smk"
include: "rules/figures.smk"
include: "rules/benchmarks.smk"
include: "rules/covid.smk"
include: "rules/ablation.smk"


report: "report/workflow.rst"


onerror:
    print(
        "\nThe workflow stopped. Each failed job's log is named above ('log:'); all logs are under "
        "results/logs/<rule>/. After fixing the cause, run the same command again: finished "
        "jobs are kept. If Snakemake itself was killed, run `snakemake --unlock` first and add "
        "`--rerun-incomplete`.",
        file=sys.stderr,
    )


rule all:
    input:
        all_targets,
        covid_targets(config),
    default_target: True
