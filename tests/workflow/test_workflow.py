"""Workflow-level tests: dry run and lint of the default study, the tiny study end to end (one
experiment per family: integration, mapping, k-fold annotation, label-mask rejection) with the
contract checked on every output and the control ordering, and a new experiment added by config
alone."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from concerto_workflow import outputs, tables
from concerto_workflow.columns import OK

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"


def snakemake(*args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_dry_run_default_config(tmp_path):
    # in an empty directory, so the full default DAG is planned whatever results/ holds
    r = snakemake("-n", "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    for rule in ("make_split", "preprocess", "train_concerto", "run_method", "score", "plot_table_figure"):
        assert f"\n{rule} " in log, rule
    # the DAG is built without loading R or probing CUDA: no start-up noise in normal output
    for noise in ("contains no packages", "cuInit", "Could not find cuda drivers"):
        assert noise not in log, noise


def test_lint_clean():
    r = snakemake("--lint")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Congratulations" in r.stdout + r.stderr


def test_readme_coverage_table_matches_the_config():
    from concerto_workflow import coverage

    text = (REPO / "README.md").read_text()
    config, opt_in = (coverage.load_config(str(REPO / f)) for f in ("config.yaml", coverage.OPT_IN))
    assert coverage.update_readme(text, config, opt_in) == text, \
        "README coverage table is stale: python -m concerto_workflow.coverage --write README.md"


COVID_CONDITIONS = {"healthy": "control", "moderate": "mild", "severe": "severe"}


def write_covid_query_like_real(path: Path, standin: dict) -> dict:
    """The tiny COVID stand-in written as a real query file would come (Schulte-Schrepping et al.
    style: counts in a layer, log data in X, the authors' column names and status names, no
    reference-level labels), and the dataset / covid config that reads it (source local)."""
    from concerto_workflow.simulate.standins import make_covid_pbmc

    q = make_covid_pbmc(**standin)
    obs = pd.DataFrame({"sampleID": q.obs["donor"].astype(str).str.replace("healthy", "control")
                        .str.replace("moderate", "mild"),
                        "group_per_sample": q.obs["condition"].astype(str).map(COVID_CONDITIONS),
                        "cell.type": q.obs["cell_type"].astype(str)}, index=q.obs_names)
    real = ad.AnnData(np.log1p(q.X.toarray()), obs=obs, var=q.var[[]].copy(), layers={"counts": q.X.copy()})
    real.write_h5ad(path)
    dataset = {"source": "local", "local": {"path": str(path), "batch_col": "sampleID", "label_col": "cell.type",
                                            "counts_layer": "counts", "keep_obs": ["sampleID", "group_per_sample"]}}
    covid = {"donor_key": "sampleID", "condition_key": "group_per_sample",
             "conditions": list(COVID_CONDITIONS.values()), "query_truth": []}
    return dataset, covid


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the whole tiny study in a fresh directory; its COVID query takes the real-data path
    (a local h5ad, rules unchanged) at no extra cost: the stand-in path runs in the default study."""
    work = tmp_path_factory.mktemp("tiny")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"]["covid_pbmc"], covid = write_covid_query_like_real(
        work / "covid_query.h5ad", cfg["datasets"]["covid_pbmc"]["standin"])
    cfg["covid"].update(covid)
    study = work / "study.yaml"
    study.write_text(yaml.safe_dump(cfg))
    common = ("-s", str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(study))
    r = snakemake(*common, "--cores", "2", timeout=1500)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    return work, common


def _scores(work, experiment):
    return tables.read(work / "results" / experiment / "scores.tsv")


def _mean(df, metric):
    d = df[(df["metric"] == metric) & (df["status"] == OK)]
    return d.groupby("method")["value"].mean()


TASKS = {"tiny_integration": "embed", "tiny_mapping": "map", "tiny_annotation": "annotate",
         "tiny_rejection": "annotate", "tiny_clustering": "cluster"}


@pytest.mark.slow
def test_every_output_meets_its_contract(tiny_run):
    work, _ = tiny_run
    n = 0
    for experiment, task in TASKS.items():
        for p in (work / "results" / experiment).glob("*/*/*/seed*.h5ad"):
            outputs.read_output(str(p), task)            # raises ContractError naming the problem
            n += 1
    assert n >= 20


@pytest.mark.slow
def test_controls_bound_the_methods(tiny_run):
    work, _ = tiny_run
    integ = _scores(work, "tiny_integration")
    asw = _mean(integ, "asw_celltype")
    assert asw["random"] < asw["pca"] < asw["true_embedding"]
    assert asw["random"] < asw["concerto"] < asw["true_embedding"]
    mapping = _scores(work, "tiny_mapping")
    acc = _mean(mapping, "accuracy")
    # (not exactly 1: a rare query type may be absent from the tiny reference)
    assert acc["random"] < acc["pca"] <= acc["true_embedding"] and acc["true_embedding"] > 0.95
    assert set(mapping["seed"]) == {"0", "1"}          # repeats
    annot = _scores(work, "tiny_annotation")
    f1 = _mean(annot, "median_f1")
    assert f1["majority"] < f1["logreg"] < f1["true_labels"] == 1.0
    assert f1["majority"] < f1["concerto"]
    assert set(annot["fold"]) == {"f0", "f1"}
    for fold in ("f0", "f1"):       # every method of a fold scored on the same cells and roles
        roles = {p.parent.name: ad.read_h5ad(p).obs["role"].astype(str)
                 for p in (work / "results" / "tiny_annotation" / fold).glob("*/*/seed0.h5ad")}
        assert len(roles) == 4 and all(r.equals(roles["logreg"]) for r in roles.values())
    rej = _mean(_scores(work, "tiny_rejection"), "auroc_unseen")
    assert rej["true_labels"] == 1.0 and rej["random"] < rej["true_labels"]
    clus = _scores(work, "tiny_clustering")
    ari = _mean(clus, "ari")                             # mean over the resolutions
    assert ari["random"] < ari["pca"] < ari["true_labels"] == 1.0
    assert set(clus.loc[clus["metric"] == "ari", "setting"]) == {"0.3", "1.0"}   # resource rows have none
    obs = outputs.read_output(str(work / "results/tiny_clustering/all/hvg150/pca/seed0.h5ad"), "cluster").obs
    assert set(obs.loc[obs["cell_type"] == "beta", "tech"].astype(str)) == {"CEL-seq2"}


@pytest.mark.slow
def test_not_installed_or_failed_methods_are_rows_with_reasons(tiny_run):
    work, _ = tiny_run
    integ = _scores(work, "tiny_integration")
    assert set(integ["method"]) == {"concerto", "pca", "seurat", "random", "true_embedding"}
    assert (integ.loc[integ["method"] != "seurat", "status"] == OK).all()
    seurat = integ[integ["method"] == "seurat"]
    assert seurat["status"].isin(["ok", "not_installed", "failed"]).all()
    assert (seurat.loc[seurat["status"] != OK, "reason"].str.len() > 0).all()


@pytest.mark.slow
def test_figures_runtimes_rerun_and_report(tiny_run):
    work, common = tiny_run
    res = work / "results"
    for f in ("fig3e_umap_tiny", "fig3g_tiny", "fig4a_tiny", "fig4b_tiny", "fig2a_tiny", "supp01_tiny",
              "fig2d_tiny", "fig2i_tiny", "fig3a_tiny", "fig3b_tiny", "fig4g_tiny", "runtimes",
              "fig5a_hierarchical_mapping", "fig5b_cd8_t", "fig5c_nk", "fig5d_monocytes", "fig5c_nk_status_de",
              "fig5d_monocytes_status_de"):
        assert (res / "figures" / f"{f}.png").stat().st_size > 5000, f
    # Fig 5: percentages per donor sum to 100; Level-2 labels lie in the predicted Level-1 group
    pct = pd.read_csv(res / "covid" / "percentages.tsv", sep="\t")
    assert np.allclose(pct.groupby(["compartment", "donor"])["percent"].sum(), 100.0)
    ref = ad.read_h5ad(res / "data" / "pbmc160k" / "raw.h5ad")
    allowed = ref.obs.groupby("celltype.l1", observed=True)["celltype.l2"].agg(lambda s: set(s.astype(str)))
    states = pd.read_csv(res / "covid" / "states.tsv", sep="\t")
    assert all(l2 in allowed[l1] for l1, l2 in zip(states["level1"], states["level2"]))
    # the query came from the local file: its donors and status names, counts from its layer
    query = ad.read_h5ad(res / "data" / "covid_pbmc" / "raw.h5ad")
    assert set(query.obs["group_per_sample"]) == set(COVID_CONDITIONS.values()) == set(states["condition"])
    assert np.allclose(query.X.data, np.round(query.X.data))
    sde = pd.read_csv(res / "covid" / "status_de.tsv", sep="\t")
    assert set(sde["compartment"]) == {"nk", "mono"} and set(sde["reference"]) == {"control"}
    assert set(sde["group"]) == {"mild", "severe"}
    rt = pd.read_csv(res / "runtimes.tsv", sep="\t")
    assert {"rule", "job", "s"} <= set(rt.columns) and "train_concerto" in set(rt["rule"])
    r = snakemake(*common, "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]
    r = snakemake(*common, "--report", str(work / "report.zip"), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = zipfile.ZipFile(work / "report.zip").namelist()
    for f in ("fig3g_tiny.png", "fig2d_tiny.png", "fig5b_cd8_t.png", "runtimes.tsv", "config_used.yaml"):
        assert any(n.endswith(f) for n in names), f


@pytest.mark.slow
def test_new_experiment_is_config_only(tmp_path):
    """A leave-one-out annotation experiment with a heatmap, added as config (no code)."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["splits"]["leave_tech_out"] = {"kind": "leave_one_out", "key": "tech", "bootstraps": 2,
                                       "values": ["inDrop"]}
    cfg["experiments"] = {"new_loo": {"task": "annotate", "dataset": "pancreas", "split": "leave_tech_out",
                                      "preprocessing": ["hvg150"], "methods": ["logreg", "majority"],
                                      "metrics": ["median_f1"], "n_comps": 16}}
    cfg["figures"] = {"fig2b_new": {"type": "heatmap", "panel": "2b", "experiments": ["new_loo"],
                                    "x": "fold_group"}}
    cfg["covid"] = {"enabled": False}  # the tiny study's Fig 5 rules are tested by tiny_run
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = snakemake("-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(path),
                  "--cores", "2", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    df = tables.read(tmp_path / "results" / "new_loo" / "scores.tsv")
    assert set(df["fold"]) == {"inDrop_b0", "inDrop_b1"}
    f1 = _mean(df, "median_f1")
    assert f1["majority"] < f1["logreg"]
    assert (tmp_path / "results" / "figures" / "fig2b_new.png").stat().st_size > 5000
