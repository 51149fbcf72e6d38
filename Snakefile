# Concerto reproduction workflow.
#   configfile -> validate (schema + cross-field checks) -> rule modules -> rule all
# Targets follow from the config switches (experiments.*.enabled, datasets, methods).
import os
import sys

from snakemake.utils import min_version, validate

min_version("8.0")


# the repository's default config, also when run with --directory elsewhere;
# `--configfile my.yaml` is merged on top of it
configfile: f"{workflow.basedir}/config.yaml"


validate(config, schema="rules/config.schema.yaml")

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

from concerto_workflow.workflow_config import check_config

check_config(config)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/preprocess.smk"
include: "rules/concerto.smk"
include: "rules/competitors.smk"
include: "rules/evaluate.smk"
include: "rules/figures.smk"
include: "rules/benchmarks.smk"


rule all:
    input:
        all_targets,
    default_target: True
