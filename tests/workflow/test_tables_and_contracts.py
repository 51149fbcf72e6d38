import numpy as np
import pandas as pd
import pytest

from concerto_workflow import tables

PROV = dict(experiment="e", task="embed", dataset="d", split="s", fold="all", preprocessing="p", method="pca",
            seed=0)


def test_rows_ok_failed_and_settings(tmp_path):
    ok = tables.rows(PROV, "method", {"asw_batch": 0.1, "ari": {"0.2": 0.5, "0.4": 0.6}})
    bad = tables.rows(dict(PROV, method="seurat"), "method", {}, status="not_installed",
                      log="results/logs/x.log", reason="not installed: rpy2", metrics=["asw_batch"])
    tables.write(pd.concat([ok, bad]), tmp_path / "t.tsv")
    back = tables.read(tmp_path / "t.tsv")
    assert list(back.columns) == tables.COLUMNS
    assert back.loc[back.method == "seurat", "value"].isna().all()
    assert back.loc[back.method == "seurat", "reason"].iloc[0] == "not installed: rpy2"
    assert sorted(back.loc[back.metric == "ari", "setting"]) == ["0.2", "0.4"]


def test_not_ok_rows_need_a_reason():
    df = tables.rows(PROV, "method", {}, status="failed", metrics=["accuracy"])
    with pytest.raises(tables.TableError, match="reason"):
        tables.check(df)


def test_ok_rows_need_a_value():
    df = tables.rows(PROV, "method", {"accuracy": np.nan})
    with pytest.raises(tables.TableError, match="accuracy"):
        tables.check(df)
