"""Workflow-level tests: dry run and lint of the default config, and an end-to-end smoke
run of the tiny config in a temporary directory with contract checks of every output."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

from concerto_workflow import embedding_io, tables

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(*args, cwd=REPO, timeout=600):
    r = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=timeout)
    return r


def test_dry_run_default_config(tmp_path):
    # in an empty directory, so the full default DAG is planned whatever results/ holds
    r = snakemake("-n", "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "train_concerto" in r.stdout + r.stderr


def test_lint_clean():
    r = snakemake("--lint")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Congratulations" in r.stdout + r.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the whole workflow on tests/configs/tiny.yaml in a fresh directory."""
    work = tmp_path_factory.mktemp("tiny")
    shutil.copy(TINY, work / "config.yaml")
    common = ("-s", str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(TINY))
    r = snakemake(*common, "--cores", "2", timeout=900)
    log = r.stdout[-5000:] + r.stderr[-5000:]
    assert r.returncode == 0, log
    return work, common


@pytest.mark.slow
def test_smoke_outputs_meet_contracts(tiny_run):
    work, _ = tiny_run
    res = work / "results"
    # preprocessed data
    cells = ad.read_h5ad(res / "pancreas/integration/hvg_150/cells.h5ad")
    assert cells.n_vars == 150 and cells.X.format == "csr"
    for c in ("cell_type", "batch", "tech"):
        assert c in cells.obs
    ref = ad.read_h5ad(res / "pancreas/mapping/hvg_150/reference.h5ad")
    qry = ad.read_h5ad(res / "pancreas/mapping/hvg_150/query.h5ad")
    assert list(ref.var_names) == list(qry.var_names)
    assert set(qry.obs["tech"]) == {"inDrop"} and "inDrop" not in set(ref.obs["tech"])
    # every embedding file
    for p in res.glob("pancreas/*/hvg_*/embeddings/*.h5ad"):
        e = ad.read_h5ad(p)
        embedding_io.check_embedding(e)
        if p.stem == "concerto":
            assert e.uns["status"] == "ok" and e.obsm["X_emb"].shape[1] == 128
    # tidy tables
    integ = tables.read(res / "pancreas/integration/metrics.tsv")
    mapping = tables.read(res / "pancreas/mapping/metrics.tsv")
    assert set(integ["method"]) == {"concerto", "pca", "harmony", "random", "seurat"}
    assert set(integ["hvg"]) == {"150", "all"}
    assert set(integ["metric"]) == {"kbet_accept_rate", "asw_batch", "asw_celltype"}
    ok = integ[integ["method"].isin(["concerto", "pca", "harmony"])]
    assert (ok["status"] == "ok").all()
    seurat = integ[integ["method"] == "seurat"]
    assert seurat["status"].isin(["ok", "not_installed", "failed"]).all()
    assert seurat["log"].str.len().gt(0).all()
    acc = mapping[mapping["metric"] == "accuracy"].set_index("method")["value"]
    assert 0 <= acc["concerto"] <= 1 and acc["random"] < acc["pca"]
    conf = pd.read_csv(res / "pancreas/mapping/hvg_150/confusion/concerto.tsv", sep="\t")
    assert {"true", "predicted", "fraction", "n"} <= set(conf.columns)
    # figures and runtime table
    for f in ("fig3e_umap_hvg_150.png", "fig3e_umap_hvg_all.png", "fig3g_batch_metrics.png",
              "fig4a_mapping_accuracy.png", "fig4b_confusion_concerto_hvg_150.png"):
        assert (res / "figures/pancreas" / f).stat().st_size > 1000, f
    rt = pd.read_csv(res / "runtimes.tsv", sep="\t")
    assert {"rule", "job", "s"} <= set(rt.columns) and "train_concerto" in set(rt["rule"])


@pytest.mark.slow
def test_smoke_rerun_is_noop_and_report_builds(tiny_run):
    work, common = tiny_run
    r = snakemake(*common, "-n")
    assert r.returncode == 0
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]
    r = snakemake(*common, "--report", str(work / "report.zip"), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = zipfile.ZipFile(work / "report.zip").namelist()
    for f in ("fig3e_umap_hvg_150.png", "fig3g_batch_metrics.png", "fig4a_mapping_accuracy.png",
              "fig4b_confusion_concerto_hvg_150.png", "runtimes.tsv", "config_used.yaml"):
        assert any(n.endswith(f) for n in names), f
