"""Every figure type draws from synthetic tables, and methods that did not run stay visible."""
import anndata as ad
import numpy as np
import pandas as pd

from concerto_workflow import figures, tables
from concerto_workflow.columns import CONFIDENCE, PREDICTED, ROLE, TEST, VALID

PROV = dict(experiment="e", task="annotate", dataset="d", split="s", preprocessing="p")


def _scores():
    rows = []
    for fold in ("f0", "f1"):
        for method, kind, v in (("concerto", "method", 0.8), ("pca", "method", 0.7), ("random", "negative_control", 0.1)):
            rows.append(tables.rows(dict(PROV, fold=fold, method=method, seed=0), kind,
                                    {"median_f1": v + 0.05 * (fold == "f1")}))
    rows.append(tables.rows(dict(PROV, fold="f0", method="seurat", seed=0), "method", {}, status="failed",
                            reason="exit code 1: boom", log="l", metrics=["median_f1"]))
    return pd.concat(rows, ignore_index=True)


def test_paper_methods_become_not_configured_rows():
    df = figures.with_paper_methods(_scores(), ["symphony", "pca"])
    sym = df[df["method"] == "symphony"]
    assert len(sym) == 1 and sym["status"].iloc[0] == figures.NOT_CONFIGURED and sym["value"].isna().all()
    assert (df["method"] == "pca").sum() == 2                      # a method that ran is not duplicated


def test_gain_over_subtracts_the_baseline_fold_by_fold():
    df = figures.gain_over(_scores(), "pca")
    assert "pca" not in set(df["method"])
    got = df[df["method"] == "concerto"].set_index("fold")["value"]
    assert np.allclose(got.sort_index(), [0.1, 0.1])                 # 0.8 - 0.7, 0.85 - 0.75
    failed = df[df["method"] == "seurat"]
    assert failed["status"].iloc[0] == "failed" and failed["value"].isna().all()


def test_table_figures_draw(tmp_path):
    df = figures.with_paper_methods(_scores(), ["symphony"])
    for name, draw, kw in (("bars", figures.plot_bars, {"x": "preprocessing"}), ("box", figures.plot_box, {}),
                           ("heatmap", figures.plot_heatmap, {"x": "fold"})):
        out = tmp_path / f"{name}.png"
        draw(df, str(out), metrics=["median_f1"], title="test", **kw)
        assert out.stat().st_size > 5000, name
    assert figures.method_order(df)[-1] == "random"               # controls last


def test_sweep_places_each_experiment_at_its_grid_value(tmp_path):
    rows = [tables.rows(dict(PROV, experiment=x, fold="f0", method=m, seed=0), kind, {"accuracy": v})
            for x, m, kind, v in (("de1", "concerto", "method", 0.7), ("de2", "concerto", "method", 0.9),
                                  ("drop0", "concerto", "method", 0.95), ("de2", "majority", "negative_control", 0.2),
                                  ("drop0", "majority", "negative_control", 0.2))]
    rows.append(tables.rows(dict(PROV, experiment="de1", fold="f0", method="cell_blast", seed=0), "method", {},
                            status="not_installed", reason="no torch", log="l", metrics=["accuracy"]))
    df = pd.concat(rows, ignore_index=True)
    sweeps = {"DE": {"de1": 0.1, "de2": 0.2}, "dropout": {"drop0": 0.0, "de2": 1.0}}   # de2 is shared
    t = figures.sweep_table(df, sweeps, "accuracy")
    c = t[t["method"] == "concerto"]
    assert c[c["sweep"] == "DE"]["x"].tolist() == [0.1, 0.2] and c[c["sweep"] == "DE"]["mean"].tolist() == [0.7, 0.9]
    assert c[c["sweep"] == "dropout"].set_index("x")["mean"].to_dict() == {0.0: 0.95, 1.0: 0.9}
    assert "cell_blast" not in set(t["method"])                    # not run: no point, only the legend
    out = tmp_path / "sweep.png"
    figures.plot_sweep(df, str(out), metrics=["accuracy"], sweeps=sweeps, title="test")
    assert out.stat().st_size > 5000


def test_prediction_figures_draw(tmp_path):
    n = 60
    a = ad.AnnData(obs=pd.DataFrame({"cell_type": np.tile(["x", "y", "z"], n // 3), ROLE: [VALID, TEST] * (n // 2)},
                                    index=[f"c{i}" for i in range(n)]))
    a.obs[PREDICTED] = np.tile(["x", "y", "y"], n // 3)
    a.obs[CONFIDENCE] = np.linspace(0, 1, n)
    a.uns.update(status="ok", reason="")
    conf = figures.confusion_table(a)
    assert set(conf.columns) == {"true", "predicted", "fraction", "n"}
    np.testing.assert_allclose(conf.groupby("true")["fraction"].sum(), 1.0)
    figures.plot_confusion(a, str(tmp_path / "c.png"), title="t")
    figures.plot_densities({"m": a, "symphony": None}, str(tmp_path / "d.png"), title="t")
    assert (tmp_path / "c.png").stat().st_size > 5000 and (tmp_path / "d.png").stat().st_size > 5000


def test_sankey_flows_are_the_test_cells(tmp_path):
    n = 60
    a = ad.AnnData(obs=pd.DataFrame({"cell_type": np.tile(["x", "y", "z"], n // 3), ROLE: [VALID, TEST] * (n // 2)},
                                    index=[f"c{i}" for i in range(n)]))
    a.obs[PREDICTED] = np.tile(["x", "y", "y"], n // 3)
    a.uns.update(status="ok", reason="")
    flows = figures.sankey_table(a)
    assert flows["n"].sum() == n // 2 and (flows["n"] > 0).all()          # every test cell, once
    assert set(flows.loc[flows["true"] == "z", "predicted"]) == {"y"}        # z is always called y
    figures.plot_sankey(a, str(tmp_path / "s.png"), title="t")
    assert (tmp_path / "s.png").stat().st_size > 5000
    a.uns.update(status="failed", reason="boom")
    figures.plot_sankey(a, str(tmp_path / "f.png"), title="t")               # not run: drawn, not raised


def _scaling_scores(exponent_a=1.0, exponent_b=2.0):
    rows = []
    for i, n in enumerate((1_000, 4_000, 16_000)):
        for method, kind, k in (("concerto", "method", exponent_a), ("seurat", "method", exponent_b)):
            for seed in (0, 1):
                prov = dict(PROV, experiment=f"scale{i}", fold="all", method=method, seed=seed)
                rows.append(tables.rows(prov, kind, {"runtime_s": 1e-3 * n ** k * (1 + 0.01 * seed),
                                                     "peak_memory_mb": 50 + n / 100, "n_cells": n}))
    rows.append(tables.rows(dict(PROV, experiment="scale2", fold="all", method="scarches", seed=0), "method", {},
                            status="not_installed", reason="scarches not installed", log="l",
                            metrics=["runtime_s"]))
    return pd.concat(rows, ignore_index=True)


def test_loglog_recovers_scaling_exponents(tmp_path):
    df = _scaling_scores()
    slopes = figures.scaling_exponents(df, "runtime_s")
    np.testing.assert_allclose(slopes[["concerto", "seurat"]], [1.0, 2.0], atol=0.01)
    assert "scarches" not in slopes                                        # not run: no slope invented
    out = tmp_path / "loglog.png"
    figures.plot_loglog(df, str(out), metrics=["runtime_s", "peak_memory_mb"], title="scaling")
    assert out.stat().st_size > 5000


def test_loglog_marks_methods_stopped_at_the_time_budget(tmp_path):
    df = pd.concat([_scaling_scores(), tables.rows(
        dict(PROV, experiment="scale2", fold="all", method="seurat_v4", seed=0), "method", {},
        status="over_budget", reason="over the time budget: stopped after 30 s", log="l",
        metrics=["runtime_s", "n_cells"])], ignore_index=True)
    assert figures.over_budget_sizes(df) == {"seurat_v4": [16_000.0]}     # the size the others ran at
    out = tmp_path / "budget.png"
    figures.plot_loglog(df, str(out), metrics=["runtime_s"], title="scaling")
    assert out.stat().st_size > 5000
    stopped = df[df["method"] == "seurat_v4"].assign(value=lambda t: np.where(t["metric"] == "n_cells", 16_000.0, np.nan))
    figures.plot_loglog(stopped, str(out), metrics=["runtime_s"], title="nothing finished")   # drawn, not raised


def test_marker_figures_draw_values_missing_features_and_not_run_methods(tmp_path):
    n = 50
    rng = np.random.default_rng(0)
    umap = pd.DataFrame({"cell": [f"c{i}" for i in range(n)], "umap1": rng.normal(size=n), "umap2": rng.normal(size=n),
                         "status": "ok", "reason": "", "log": ""})
    failed = pd.DataFrame([{"cell": "", "umap1": np.nan, "umap2": np.nan, "status": "failed", "reason": "boom",
                            "log": ""}])
    values = pd.DataFrame({"GZMA": rng.normal(size=n), "CCR7": np.nan}, index=umap["cell"])
    figures.plot_feature_umaps({"concerto": umap, "pca": failed}, values, str(tmp_path / "f.png"),
                               features=["GZMA", "CCR7"], title="t", missing=["CCR7"])
    points = values.assign(distance=rng.uniform(size=n))
    corr = pd.DataFrame({"feature": ["GZMA", "CCR7"], "r": [0.1, np.nan], "p": [0.5, np.nan], "n_cells": n,
                         "missing": [False, True]})
    per_row = {"measured": values, "concerto inferred": values * 0.5, "pca": values}   # Fig 4f: values per row
    figures.plot_feature_umaps({"measured": umap, "concerto inferred": umap, "pca": failed}, per_row,
                               str(tmp_path / "m.png"), features=["GZMA", "CCR7"], title="t", missing=["CCR7"])
    assert (tmp_path / "m.png").stat().st_size > 5000
    figures.plot_marker_distance({"concerto": points, "pca": ("failed", "boom")}, {"concerto": corr},
                                 str(tmp_path / "d.png"), features=["GZMA", "CCR7"], group="CD8 T", target="NK",
                                 title="t")
    assert (tmp_path / "f.png").stat().st_size > 5000 and (tmp_path / "d.png").stat().st_size > 5000


def test_overall_figure_draws_ranks_capabilities_and_not_run(tmp_path):
    t = pd.DataFrame({"criterion": ["d / s: accuracy", "d / s: accuracy", "ran on all genes", "ran on all genes",
                                    "overall (mean rank)"],
                      "kind": ["quality", "quality", "capability", "capability", "overall"],
                      "tool": ["A", "B", "A", "B", "A"], "value": [0.9, 0.8, 1.0, 0.0, 1.0],
                      "rank": [1.0, 2.0, np.nan, np.nan, 1.0]})
    figures.plot_overall(t, str(tmp_path / "o.png"), tools=["A", "B", "C"], title="t")
    assert (tmp_path / "o.png").stat().st_size > 5000


def test_palette_gives_distinct_colours_beyond_twenty_categories():
    from concerto_workflow.figures import _palette

    for n in (5, 15, 24, 60):
        colours = _palette([f"type{i}" for i in range(n)]).values()
        assert len(set(colours)) == n, n


def test_bar_panels_wrap_into_rows_keeping_metric_pairs():
    """Six 8.5-inch panels (Fig 3g: pegasus / scib pairs) wrap to 2 per row instead of a 51-inch
    row; few or narrow panels stay on one row."""
    from concerto_workflow.figures import panel_columns

    assert panel_columns(6, 8.5) == 2
    assert panel_columns(3, 4.0) == 3
    assert panel_columns(6, 3.2) == 6          # 6 x 3.2 = 19.2 inches fits
    assert panel_columns(8, 4.5) == 4          # 4 fit: pairs intact
    assert panel_columns(6, 6.0) == 2          # 3 fit, but 3 would split pairs
    assert panel_columns(5, 25.0) == 1
