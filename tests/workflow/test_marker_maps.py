"""Fig 4c/4d: the unseen-type split, marker values over a map, distance-marker correlations, and
the stand-in structure the panel relies on."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_workflow import marker_maps, splits
from concerto_workflow.columns import EMBEDDING, ROLE, TEST, TRAIN
from concerto_workflow.simulate.standins import make_pbmc160k_citeseq


def _cells(n=60, seed=0):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, size=(n, 3)).astype(np.float32)),
                   obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]), var=pd.DataFrame(index=["GZMA", "CCR7", "ACTB"]))
    a.obsm["protein"] = rng.poisson(5.0, size=(n, 2)).astype(np.float32)
    a.uns["protein_names"] = ["CD8", "CD4"]
    return a


def test_feature_values_reads_genes_and_proteins_and_reports_missing():
    a = _cells()
    v, missing = marker_maps.feature_values(a, ["GZMA", "protein:CD8", "NKG7", "protein:CD99"])
    assert list(v.columns) == ["GZMA", "protein:CD8", "NKG7", "protein:CD99"]
    np.testing.assert_allclose(v["GZMA"], a.X[:, 0].toarray().ravel())
    np.testing.assert_allclose(v["protein:CD8"], np.log1p(a.obsm["protein"][:, 0]))
    assert missing == ["NKG7", "protein:CD99"] and v["NKG7"].isna().all()


def test_marker_distance_correlation_recovers_planted_signs():
    rng = np.random.default_rng(1)
    n_ref, n_q = 40, 200
    dist = rng.uniform(0, 5, n_q)                      # query cells along the x axis, NK at 0
    emb = np.r_[rng.normal(0, 0.1, (n_ref, 2)), np.c_[dist, np.zeros(n_q)]].astype(np.float32)
    names = [f"c{i}" for i in range(n_ref + n_q)]
    obs = pd.DataFrame({"celltype.l1": ["NK"] * n_ref + ["CD8 T"] * n_q,
                        ROLE: [TRAIN] * n_ref + [TEST] * n_q}, index=names)
    out = ad.AnnData(obs=obs)
    out.obsm[EMBEDDING] = emb
    X = np.zeros((n_ref + n_q, 2), np.float32)
    X[n_ref:, 0] = 5 - dist + rng.normal(0, 0.5, n_q)  # cytotoxic: high near NK
    X[n_ref:, 1] = dist + rng.normal(0, 0.5, n_q)      # naive: high far from NK
    cells = ad.AnnData(sp.csr_matrix(X), obs=obs.copy(), var=pd.DataFrame(index=["NKG7", "CCR7"]))
    t = marker_maps.marker_distance_correlation(out, cells, label_key="celltype.l1", group="CD8 T",
                                                target="NK", features=["NKG7", "CCR7", "GNLY"]).set_index("feature")
    assert t.loc["NKG7", "r"] < -0.8 and t.loc["CCR7", "r"] > 0.8
    assert t.loc["NKG7", "p"] < 1e-10 and t.loc["NKG7", "n_cells"] == n_q
    assert t.loc["GNLY", "missing"] and np.isnan(t.loc["GNLY", "r"])
    with pytest.raises(ValueError, match="no query"):
        marker_maps.marker_distance_correlation(out, cells, label_key="celltype.l1", group="B", target="NK",
                                                features=["NKG7"])


def _impute_output(method="concerto", status="ok"):
    """8 cells (3 reference, 5 query) of an impute output with 2 proteins (counts)."""
    from concerto_workflow.columns import FEATURES, IMPUTED, MEASURED

    obs = pd.DataFrame({ROLE: [TRAIN] * 3 + [TEST] * 5}, index=[f"c{i}" for i in range(8)])
    out = ad.AnnData(obs=obs)
    out.uns.update(method=method, status=status, reason="" if status == "ok" else "boom")
    if status == "ok":
        measured = np.full((8, 2), np.nan)
        measured[3:] = np.arange(10).reshape(5, 2)
        out.obsm[MEASURED], out.obsm[IMPUTED] = measured, np.where(np.isnan(measured), np.nan, 2.0)
        out.uns[FEATURES] = ["CD14", "CLEC12A"]
    return out


def test_imputed_feature_values_are_the_query_cells_measured_and_inferred_on_one_scale():
    measured, inferred, missing = marker_maps.imputed_feature_values(_impute_output(), ["protein:CD14", "CD155"])
    assert list(measured.index) == [f"c{i}" for i in range(3, 8)] == list(inferred.index)   # query cells only
    np.testing.assert_allclose(measured["protein:CD14"], np.log1p([0, 2, 4, 6, 8]))
    np.testing.assert_allclose(inferred["protein:CD14"], np.log1p(2.0))
    assert missing == ["CD155"] and measured["CD155"].isna().all()
    with pytest.raises(KeyError, match="not an impute output"):
        marker_maps.imputed_feature_values(_impute_output(status="failed"), ["CD14"])


def test_measured_vs_inferred_rows_share_the_layout_and_keep_failed_methods():
    layout = pd.DataFrame({"cell": [f"c{i}" for i in range(8)], "umap1": np.arange(8.0), "umap2": 0.0,
                           "status": "ok", "reason": "", ROLE: [TRAIN] * 3 + [TEST] * 5})
    outs = {"a": _impute_output("concerto"), "b": _impute_output("pca"), "c": _impute_output("seurat_v4", "failed")}
    rows, values, missing = marker_maps.measured_vs_inferred_rows(layout, outs, ["CD14"], "concerto")
    assert list(rows) == ["measured", "concerto inferred", "pca inferred (UMAP of concerto's space)",
                          "seurat_v4 inferred"] == list(values)
    assert list(rows["measured"]["cell"]) == [f"c{i}" for i in range(3, 8)]       # the query cells drawn
    assert rows["seurat_v4 inferred"]["status"].iloc[0] == "failed" and missing == []
    np.testing.assert_allclose(values["measured"]["CD14"], np.log1p([0, 2, 4, 6, 8]))


@pytest.fixture(scope="module")
def pbmc():
    return make_pbmc160k_citeseq(n_cells=1600, n_genes=300, seed=0)


def test_unseen_cd8_split_keeps_cd8_t_cells_out_of_the_reference(pbmc):
    split = {"kind": "holdout", "key": "donor", "values": ["P3"],
             "cells": {"drop": {"label": "celltype.l1", "values": ["CD8 T"], "except_key": "donor",
                                "except_values": ["P3"]}}}
    t = splits.make_split(split, pbmc.obs, "pbmc", seed=0)
    obs = pbmc.obs.loc[t["cell"]]
    ref, query = (t[ROLE] == TRAIN).to_numpy(), (t[ROLE] == TEST).to_numpy()
    assert not (obs["celltype.l1"].astype(str).to_numpy()[ref] == "CD8 T").any()
    assert (obs["donor"].astype(str).to_numpy()[query] == "P3").all()
    assert (obs["celltype.l1"].astype(str).to_numpy()[query] == "CD8 T").sum() > 20
    assert set(obs["celltype.l1"].astype(str)[ref]) == set(pbmc.obs["celltype.l1"].astype(str)) - {"CD8 T"}


def test_standin_plants_cytotoxic_and_naive_gradients_in_cd8_t_cells(pbmc):
    """What Fig 4d reads: NK cells and CD8 TEM cells carry the cytotoxic programme (GNLY, NKG7,
    GZMA), CD8 naive cells CCR7, so expression ranks CD8 subtypes by their likeness to NK cells."""
    X = pbmc.X.toarray()
    logn = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    g = {n: logn[:, list(pbmc.var_names).index(n)] for n in ("GNLY", "NKG7", "GZMA", "CCR7")}
    l2 = pbmc.obs["celltype.l2"].astype(str).to_numpy()
    tem, naive, nk = l2 == "CD8 TEM", l2 == "CD8 Naive", pbmc.obs["celltype.l1"].astype(str).to_numpy() == "NK"
    for gene in ("GNLY", "NKG7", "GZMA"):
        assert g[gene][tem].mean() > g[gene][naive].mean() + 0.3, gene
        assert g[gene][nk].mean() > g[gene][naive].mean() + 0.3, gene
    assert g["CCR7"][naive].mean() > g["CCR7"][tem].mean() + 0.3
