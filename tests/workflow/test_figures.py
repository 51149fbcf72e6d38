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


def test_table_figures_draw(tmp_path):
    df = figures.with_paper_methods(_scores(), ["symphony"])
    for name, draw, kw in (("bars", figures.plot_bars, {"x": "preprocessing"}), ("box", figures.plot_box, {}),
                           ("heatmap", figures.plot_heatmap, {"x": "fold"})):
        out = tmp_path / f"{name}.png"
        draw(df, str(out), metrics=["median_f1"], title="test", **kw)
        assert out.stat().st_size > 5000, name
    assert figures.method_order(df)[-1] == "random"               # controls last


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
