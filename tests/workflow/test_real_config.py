"""config/real.yaml: the dry run plans download -> convert -> prepare (-> concatenate) -> split for
every dataset and experiment (nothing is fetched), and a download source naming an unknown entry is
refused."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from concerto_workflow import sources as S
from concerto_workflow.workflow_config import ConfigError, check_config, enabled_experiments, extend_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real():
    c = extend_config(yaml.safe_load((REPO / "config" / "real.yaml").read_text()))
    validate(c, str(REPO / "rules" / "config.schema.yaml"))
    return c


def test_real_study_keeps_every_experiment_and_only_downloads(real):
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    assert set(real["experiments"]) == set(base["experiments"]) and set(real["figures"]) == set(base["figures"])
    # Fig 4g (scsim) and Supp 8 (Splatter): the paper simulates these datasets too
    simulated = {n for n, d in real["datasets"].items()
                 if d.get("standin", {}).get("maker") in ("scsim_scale", "splat_robustness")}
    assert {"scsim_1k", "scsim_4k", "splat_de0.2"} <= simulated
    assert {d["source"] for n, d in real["datasets"].items() if n not in simulated} == {"download", "concat"}
    check_config(real)


def test_fig2c_dataset_is_the_thymus_atlas_concatenated_with_pbmc45k(real):
    """Paper Fig 2c trains and tests on thymus (Park 2020) + PBMC45k (Ding 2020) cells together."""
    d = real["datasets"]["thymus_pbmc45k"]
    assert d["source"] == "concat"
    parts = d["concat"]["datasets"]
    assert [real["datasets"][p]["download"]["source_id"] for p in parts] == ["park2020_thymus", "ding2020_pbmc"]


def test_unknown_source_id_is_named(real):
    real = yaml.safe_load(yaml.safe_dump(real))
    real["datasets"]["pancreas"]["download"]["source_id"] = "nope"
    with pytest.raises(ConfigError, match=r"datasets.pancreas.download.source_id' = 'nope'"):
        check_config(real)


def test_dry_run_lists_download_convert_and_experiment_jobs(real, tmp_path):
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile",
                        str(REPO / "config" / "real.yaml"), "--directory", str(tmp_path), "-s",
                        str(REPO / "Snakefile")], capture_output=True, text=True, cwd=REPO)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    # every planned job's "Reason: Missing output files: a, b; ..." line
    outputs = {f.strip() for line in re.findall(r"Missing output files: ([^;\n]+)", out) for f in line.split(",")}
    sources = S.load_sources()
    used = {d["download"]["source_id"] for d in real["datasets"].values() if d["source"] == "download"}
    for sid in used:
        assert S.converted_path(sid) in outputs, sid
        for role, f in sources[sid]["files"].items():
            assert S.download_path(sid, role, f["url"]) in outputs, (sid, role)
    assert S.gene_map_path("mgi_homology") in outputs
    used = {real["experiments"][x]["dataset"] for x in enabled_experiments(real)}
    used |= {p for n in used if real["datasets"][n]["source"] == "concat" for p in real["datasets"][n]["concat"]["datasets"]}
    for name in used:   # the experiments' datasets and the parts of concatenated ones
        assert f"results/data/{name}/raw.h5ad" in outputs, name
    for x in enabled_experiments(real):
        assert f"results/{x}/split.tsv" in outputs, x
    assert "results/covid/query_mapped.h5ad" in outputs
    assert not (tmp_path / "results").exists()            # a dry run: nothing fetched or written
