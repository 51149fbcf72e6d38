import copy
from pathlib import Path
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import validate

from concerto_workflow.workflow_config import ConfigError, check_config, plan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg():
    c = yaml.safe_load(open(REPO / "config.yaml"))
    validate(c, str(REPO / "rules" / "config.schema.yaml"))
    return c


def test_default_config_valid_and_planned(cfg):
    check_config(cfg)
    assert {p["hvg"] for p in plan(cfg, "integration")} == {"2000", "all"}
    cfg["experiments"]["mapping"]["enabled"] = False
    assert plan(cfg, "mapping") == []


def test_schema_fills_defaults():
    c = {"datasets": {"pancreas": {"source": "standin"}}, "experiments": {}}
    validate(c, str(REPO / "rules" / "config.schema.yaml"))
    assert c["metrics"]["kbet_k"] == 15 and c["concerto"]["epochs"] == 5 and c["concerto"]["batch_size"] == 64
    assert c["experiments"]["integration"]["methods"] == ["concerto", "pca"]


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["experiments"]["mapping"].update(methods=["concerto", "harmony"]),
     "experiments.mapping.methods"),
    (lambda c: c["experiments"]["integration"].update(datasets=["nope"]),
     "experiments.integration.datasets"),
    (lambda c: c["datasets"]["pancreas"].pop("mapping_query"), "datasets.pancreas.mapping_query"),
    (lambda c: c["datasets"]["pancreas"].update(source="real", real={}), "datasets.pancreas.real.url"),
])
def test_cross_field_errors_name_the_key(cfg, mutate, message):
    c = copy.deepcopy(cfg)
    mutate(c)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_config(c)


def _dry_run(tmp_path, cfg):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path),
                           "--directory", str(tmp_path), "-s", str(REPO / "Snakefile")],
                          capture_output=True, text=True, cwd=REPO)


def test_wrong_key_fails_with_its_name(tmp_path, cfg):
    cfg["preprocesing"] = {"min_genes": 1}  # typo
    r = _dry_run(tmp_path, cfg)
    assert r.returncode != 0
    assert "preprocesing" in r.stdout + r.stderr


def test_wrong_value_fails_with_its_name(tmp_path, cfg):
    cfg["experiments"]["integration"]["methods"] = ["concerto", "scvi"]
    r = _dry_run(tmp_path, cfg)
    assert r.returncode != 0
    assert "scvi" in r.stdout + r.stderr
