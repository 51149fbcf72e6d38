import numpy as np
import pandas as pd
import pytest

from concerto_workflow import embedding_io, tables


def test_rows_ok_and_failed(tmp_path):
    ok = tables.rows("d", "integration", "all", "pca", {"asw_batch": 0.1})
    bad = tables.rows("d", "integration", "all", "seurat", {}, status="not_installed",
                      log="results/logs/x.log", reason="not installed: rpy2", metrics=["asw_batch"])
    df = pd.concat([ok, bad])
    tables.write(df, tmp_path / "t.tsv")
    back = tables.read(tmp_path / "t.tsv")
    assert list(back.columns) == tables.COLUMNS
    assert back.loc[back.method == "seurat", "value"].isna().all()
    assert back.loc[back.method == "seurat", "reason"].iloc[0] == "not installed: rpy2"


def test_not_ok_rows_need_a_log():
    df = tables.rows("d", "mapping", "all", "x", {}, status="failed", metrics=["accuracy"])
    with pytest.raises(AssertionError, match="log"):
        tables.check(df)


def test_embedding_contract(tmp_path, raw_adata):
    obs = raw_adata.obs
    embedding_io.write_embedding(tmp_path / "ok.h5ad", obs, np.zeros((len(obs), 3)), method="m",
                                 status="ok", log="l")
    assert embedding_io.read_embedding(tmp_path / "ok.h5ad").obsm["X_emb"].shape == (len(obs), 3)
    embedding_io.write_embedding(tmp_path / "f.h5ad", obs, None, method="m", status="failed",
                                 reason="boom", log="l")
    assert embedding_io.read_embedding(tmp_path / "f.h5ad").uns["reason"] == "boom"
    with pytest.raises(ValueError):
        embedding_io.write_embedding(tmp_path / "x.h5ad", obs, None, method="m", status="ok")
