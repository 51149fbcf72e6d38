"""config/real_subsets.yaml end to end on real cells, reduced for CI: the CBMC annotation
experiment (one fold of the 5-fold split), the human -> mouse pancreas mapping through the
ortholog table, the pancreas 3-tech integration and the CBMC protein inference, each with
Concerto (1 epoch), a bound and a control, plus their figures and the comparison table. The
reduction is made here from the real config, so the datasets, splits and figures tested are the
ones users run. Skipped, with the reason, where ../shared/data is absent."""
import copy
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from concerto_workflow import comparison, tables
from concerto_workflow.columns import OK

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"          # where the config's ../shared/data/... paths point
CONFIG = REPO / "config" / "real_subsets.yaml"

pytestmark = [
    pytest.mark.realdata, pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent (the shared data "
                                                  "directory must sit beside the repository)"),
]

#: experiment -> the methods the CI run keeps (Concerto, a bound, a control)
KEEP = {"cbmc_cv": ["concerto", "logreg", "pca", "majority"],
        "human_to_mouse": ["concerto", "pca", "random"],
        "pancreas_integration": ["concerto", "pca", "random"],
        "cbmc_protein": ["concerto", "pca", "mean"]}
FIGURES = ["fig2a_real_median_f1", "fig3g_real_batch_metrics", "fig4e_real_protein_pearson",
           "fig4b_real_confusion_human_to_mouse", "fig4h_real_data_comparison"]


def reduced_config() -> dict:
    """The real-subsets study cut to :data:`KEEP`, one CV fold and 1 Concerto epoch."""
    c = yaml.safe_load(CONFIG.read_text())
    for name, e in c["experiments"].items():
        e["enabled"] = name in KEEP
        if name in KEEP:
            e["methods"] = KEEP[name]
            e["params"] = {m: p for m, p in e.get("params", {}).items() if m in KEEP[name]}
    c["splits"]["cv"]["max_folds"] = 1
    c["method_params"]["concerto"]["epochs"] = 1
    # the figures of the kept experiments; the table lists only those
    c["figures"] = {n: copy.deepcopy(f) for n, f in c["figures"].items() if n in FIGURES}
    c["figures"]["fig2a_real_median_f1"]["experiments"] = ["cbmc_cv"]
    c["figures"]["fig3g_real_batch_metrics"]["experiments"] = ["pancreas_integration"]
    table = c["figures"]["fig4h_real_data_comparison"]
    table["experiments"] = list(KEEP)
    computed = {m for x in KEEP for m in c["experiments"][x]["metrics"]}
    table["metrics"] = [m for m in table["metrics"] if m in computed]
    return c


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("real_subsets")
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(reduced_config()))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(REPO / "Snakefile"),
                        "--directory", str(work), "--configfile", str(path)],
                       cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    print(f"reduced real-subsets run: {time.time() - t0:.0f} s", flush=True)
    return work / "results"


def _ok_means(res, experiment, metric):
    df = tables.read(str(res / experiment / "scores.tsv"))
    d = df[df["metric"] == metric]
    assert (d["status"] == OK).all(), d.loc[d["status"] != OK, ["method", "reason"]].to_string()
    return d.groupby("method")["value"].mean()


def test_every_expected_score_row_is_present(real_run):
    for experiment, methods in KEEP.items():
        df = tables.read(str(real_run / experiment / "scores.tsv"))
        got = df[~df["metric"].isin(["runtime_s", "peak_memory_mb", "n_cells"])]
        cfg = yaml.safe_load(CONFIG.read_text())["experiments"][experiment]
        for method in methods:
            have = set(got.loc[got["method"] == method, "metric"])
            assert have == set(cfg["metrics"]), (experiment, method, have)
        assert set(got["status"]) == {OK}, got.loc[got["status"] != OK, ["method", "reason"]].to_string()


def test_real_data_results_are_sane(real_run):
    acc = _ok_means(real_run, "cbmc_cv", "accuracy")
    # CBMC's 11 types are well separated in RNA: a linear classifier on PCA gets most cells right
    assert acc["logreg"] > 0.85 and acc["pca"] > 0.8
    assert acc["concerto"] > acc["majority"] + 0.2              # 1 epoch, but far above the control
    mouse = _ok_means(real_run, "human_to_mouse", "accuracy")
    assert mouse["pca"] > mouse["random"] + 0.2                 # the ortholog gene map carries signal
    asw = _ok_means(real_run, "pancreas_integration", "asw_celltype")
    assert asw["pca"] > asw["random"]
    r = _ok_means(real_run, "cbmc_protein", "pearson_median")
    assert r["pca"] > 0.3 and r["concerto"] > 0.1
    assert pd.isna(r.get("mean")) or r["mean"] < 0.1         # the reference mean: r undefined or ~0


def test_figures_and_comparison_table_are_written(real_run):
    for f in FIGURES:
        assert (real_run / "figures" / f"{f}.png").stat().st_size > 5000, f
    long = comparison.read(str(real_run / "tables" / "fig4h_real_data_comparison.tsv"))
    assert set(long["row"]) == set(KEEP)                      # one row per experiment here
    assert {"accuracy", "kbet_accept_rate", "asw_batch", "pearson_median"} <= set(long["metric"])
    ran = long[(long["status"] == OK) & (long["role"] != "control")]   # the mean control's r is undefined
    assert ran["mean"].notna().all(), ran[ran["mean"].isna()].to_string()
    md = (real_run / "tables" / "fig4h_real_data_comparison.md").read_text()
    assert md.splitlines()[0].startswith("| experiment | metric | **concerto** |")
    assert md.strip() == comparison.to_markdown(long).strip()
