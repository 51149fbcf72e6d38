"""The comparison table (figure type 'table'): rows per experiment and metric from the score
tables, experiments on one dataset and split merged, not-run methods kept with their reason,
the README block rewritten from a run's table."""
import numpy as np
import pandas as pd
import pytest

from concerto_workflow import comparison, figures, tables


def _rows(experiment, task, split, method, kind, values, *, fold="f0", status="ok", reason=""):
    prov = dict(experiment=experiment, task=task, dataset="d", split=split, fold=fold, preprocessing="p",
                method=method, seed=0)
    if status != "ok":
        return tables.rows(prov, kind, {}, status=status, reason=reason, log="l", metrics=list(values))
    return tables.rows(prov, kind, values)


def _scores():
    r = [_rows("m", "map", "q", "concerto", "method", {"accuracy": 0.7}),
         _rows("m", "map", "q", "pca", "method", {"accuracy": 0.8}),
         _rows("m", "map", "q", "random", "negative_control", {"accuracy": 0.1}),
         _rows("m", "map", "q", "scarches", "method", {"accuracy": np.nan}, status="failed",
               reason="exit code 1: CUDA? no | boom"),
         _rows("m_cls", "annotate", "q", "logreg", "method", {"accuracy": 0.9}),
         _rows("m_cls", "annotate", "q", "majority", "negative_control", {"accuracy": 0.95})]
    for fold, (c, p) in {"f0": ({"0.1": 0.5, "0.4": 0.9}, {"0.1": 0.6, "0.4": 0.4}),
                         "f1": ({"0.1": 0.3, "0.4": 0.7}, {"0.1": 0.6, "0.4": 0.2})}.items():
        r.append(_rows("c", "cluster", "all", "concerto", "method", {"ari": c}, fold=fold))
        r.append(_rows("c", "cluster", "all", "pca", "method", {"ari": p}, fold=fold))
    return pd.concat(r, ignore_index=True)


def test_rows_merge_experiments_on_one_split_and_keep_every_method():
    long = comparison.comparison(_scores(), ["accuracy", "ari", "nmi"])
    assert set(long["row"]) == {"m + m_cls", "c"}                    # map + classifiers = one row
    assert "nmi" not in set(long["metric"])                          # not computed: no row
    acc = long[long["metric"] == "accuracy"].set_index("method")
    assert acc.loc["logreg", "mean"] == 0.9 and acc.loc["logreg", "role"] == "bound"
    assert acc.loc["concerto", "role"] == "focus" and acc.loc["majority", "role"] == "control"
    assert acc.loc["scarches", "status"] == "failed" and "boom" in acc.loc["scarches", "reason"]
    ari = long[long["metric"] == "ari"].set_index("method")
    # clustering: each fold at the method's best resolution, then the mean over folds
    assert ari.loc["concerto", "mean"] == pytest.approx(0.8) and ari.loc["concerto", "n"] == 2
    assert ari.loc["pca", "mean"] == pytest.approx(0.6) and ari.loc["pca", "summary"] == "best resolution"
    assert comparison.method_columns(long)[0] == "concerto"


def test_markdown_bolds_the_best_non_control_and_shows_why_a_method_did_not_run():
    md = comparison.to_markdown(comparison.comparison(_scores(), ["accuracy", "ari"]), source="from a test")
    lines = md.splitlines()
    assert lines[0].startswith("| experiment | metric | **concerto** |") and "logreg (bound)" in lines[0]
    acc = next(line for line in lines if line.startswith("| m + m_cls | accuracy"))
    assert "**0.900**" in acc and "0.950" in acc and "**0.950**" not in acc   # control never best
    assert "not run [1]" in acc and any(line.startswith("[1] failed: exit code 1") for line in lines)
    ari = next(line for line in lines if line.startswith("| c | ari ↑ (best resolution)"))
    assert "**0.800 ± 0.141**" in ari and "–" in ari                 # logreg not in the clustering row
    assert lines[-1] == "from a test"


def test_not_configured_paper_methods_appear_as_not_run():
    df = figures.with_paper_methods(_scores(), ["mars"])
    long = comparison.comparison(df, ["accuracy"])
    mars = long[long["method"] == "mars"]
    assert len(mars) == 1 and mars["status"].iloc[0] == figures.NOT_CONFIGURED


def test_figure_tsv_roundtrip_and_readme_block(tmp_path):
    long = comparison.comparison(_scores(), ["accuracy", "ari"])
    comparison.draw(long, str(tmp_path / "t.png"), title="test")
    assert (tmp_path / "t.png").stat().st_size > 5000
    long.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    back = comparison.read(str(tmp_path / "t.tsv"))
    assert comparison.to_markdown(back) == comparison.to_markdown(long)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{comparison.BEGIN}\nstale table\n{comparison.END}\nrest\n")
    assert comparison.main([str(tmp_path / "t.tsv"), "--write", str(readme), "--note", "run: x"]) == 0
    text = readme.read_text()
    assert "stale table" not in text and "| m + m_cls |" in text and text.endswith(f"run: x\n{comparison.END}\nrest\n")
    with pytest.raises(ValueError, match="real-data-comparison:begin"):
        comparison.update_readme("no block", "x")
