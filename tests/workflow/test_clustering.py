"""Clustering (paper Fig 3a, 3b, Supp 9-11): metrics equal scikit-learn's on hand-made clusters,
the engine's Leiden / Louvain, Seurat's own clustering, the figures of cluster outputs."""
import importlib.util
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_workflow import figures, scoring, tables
from concerto_workflow.columns import CLUSTER_SETTINGS, CLUSTERS, NOT_INSTALLED, OK
from concerto_workflow.methods.api import RunContext
from concerto_workflow.methods.shared import cluster_embedding, missing_for_algorithm


def _output(with_emb=True):
    """12 cells, 3 types; setting '0.1' = the truth with relabelled ids, '0.4' = one cell off."""
    truth = np.repeat(["a", "b", "c"], 4)
    perfect = np.repeat([2, 0, 1], 4)
    off = perfect.copy()
    off[0] = 0
    a = ad.AnnData(obs=pd.DataFrame({"cell_type": truth, "batch": "x", "tech": "x"},
                                    index=[f"c{i}" for i in range(12)]))
    a.obsm[CLUSTERS] = np.column_stack([perfect, off])
    a.uns[CLUSTER_SETTINGS] = ["0.1", "0.4"]
    if with_emb:
        a.obsm["X_emb"] = (np.repeat(np.eye(3) * 5, 4, axis=0)
                           + np.random.default_rng(0).normal(scale=0.3, size=(12, 3))).astype(np.float32)
    return a, truth, off


def test_cluster_metrics_equal_scikit_learn():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    a, truth, off = _output()
    p = {"seed": 0, "asw_max_cells": 0}
    assert scoring.ari(a, p) == {"0.1": 1.0, "0.4": pytest.approx(adjusted_rand_score(truth, off))}
    assert scoring.nmi(a, p)["0.1"] == pytest.approx(1.0)
    assert scoring.nmi(a, p)["0.4"] == pytest.approx(normalized_mutual_info_score(truth, off))
    assert scoring.nmi(a, p)["0.4"] < 1 and scoring.ari(a, p)["0.4"] < 1
    sil = scoring.silhouette_clusters(a, p)
    assert sil["0.4"] == pytest.approx(silhouette_score(a.obsm["X_emb"], off))
    assert sil["0.1"] > 0.8 > sil["0.4"]
    b, _, _ = _output(with_emb=False)                               # controls: clusters without a space
    assert all(np.isnan(v) for v in scoring.silhouette_clusters(b, p).values())


def test_engine_leiden_finds_planted_groups_and_louvain_needs_its_package():
    rng = np.random.default_rng(0)
    emb = np.vstack([rng.normal(loc=c, scale=0.2, size=(60, 5)) for c in (0, 5, 10)])
    cl = cluster_embedding(emb, (0.1, 0.5), seed=0, algorithm="leiden")
    from sklearn.metrics import adjusted_rand_score

    assert cl.shape == (180, 2) and adjusted_rand_score(np.repeat([0, 1, 2], 60), cl[:, 0]) == 1.0
    with pytest.raises(ValueError, match="unknown cluster algorithm"):
        missing_for_algorithm("kmeans")
    if importlib.util.find_spec("louvain") is None:
        assert missing_for_algorithm("louvain") == ["louvain"]
        with pytest.raises(ImportError, match="louvain"):
            cluster_embedding(emb, (0.5,), seed=0, algorithm="louvain")


def test_louvain_without_its_package_is_a_not_installed_row(tmp_path, raw_adata):
    if importlib.util.find_spec("louvain") is not None:
        pytest.skip("the louvain package is installed here")
    from test_methods import _cells, _run

    _cells(raw_adata, tmp_path / "cells.h5ad")
    status, out = _run(tmp_path, "pca", "cluster", tmp_path / "cells.h5ad", settings=(0.4,),
                       cluster_algorithm="louvain")
    assert status == NOT_INSTALLED and "louvain" in out.uns["reason"] and CLUSTERS not in out.obsm
    status, out = _run(tmp_path, "pca", "cluster", tmp_path / "cells.h5ad", settings=(0.4,))
    assert status == OK and out.obsm["X_emb"].shape[0] == out.n_obs    # the space kept for silhouette / UMAP


def test_seurat_leiden_on_snn_graph_separates_blocks():
    from concerto_workflow.methods.seurat import leiden_on_graph

    block = sp.block_diag([np.ones((20, 20)), np.ones((20, 20))]).tocsr()
    cl = leiden_on_graph(block, 0.5, seed=0)
    assert len(set(cl[:20])) == 1 and len(set(cl[20:])) == 1 and cl[0] != cl[20]


@pytest.mark.skipif(shutil.which("Rscript") is None or importlib.util.find_spec("rpy2") is None,
                    reason="R / rpy2 not installed")
def test_seurat_findclusters_both_algorithms():
    from concerto_workflow.methods import missing_dependencies
    from concerto_workflow.methods.seurat import seurat_cluster
    from concerto_workflow.preprocessing import normalise
    from concerto_workflow.simulate.standins import make_pbmc45k
    from sklearn.metrics import adjusted_rand_score

    if missing_dependencies("seurat"):
        pytest.skip(f"Seurat not installed: {missing_dependencies('seurat')}")
    a = normalise(make_pbmc45k(n_cells=400, n_genes=300, seed=0), 1e4)
    for alg in ("louvain", "leiden"):
        cl, emb = seurat_cluster(a, RunContext(n_comps=15, settings=(0.2, 1.0), cluster_algorithm=alg),
                                 n_features=200)
        assert cl.shape == (400, 2) and emb.shape == (400, 15)
        assert len(np.unique(cl[:, 1])) >= len(np.unique(cl[:, 0])) >= 2, alg
        assert adjusted_rand_score(a.obs["cell_type"], cl[:, 0]) > 0.3, alg


def test_cluster_figures_draw(tmp_path):
    rows = []
    for exp in ("leiden", "louvain"):
        for method, kind, v in (("concerto", "method", 0.8), ("random", "negative_control", 0.0)):
            base = dict(experiment=exp, task="cluster", dataset="d", split="s", preprocessing="p", fold="all",
                        method=method, seed=0)
            rows.append(tables.rows(base, kind, {"nmi": {"0.1": v, "0.4": v + 0.1}}))
        rows.append(tables.rows(dict(base, method="pca"), "method", {}, status=NOT_INSTALLED,
                                reason="not installed: louvain", log="l", metrics=["nmi"]))
    out = tmp_path / "lines.png"
    figures.plot_lines(pd.concat(rows, ignore_index=True), str(out), metrics=["nmi"], title="t")
    assert out.stat().st_size > 5000
    a, _, _ = _output()
    a.uns.update(status=OK, reason="", log="l")
    t = figures.umap_table(a, n_neighbors=3, seed=0)
    assert list(t["clusters_0.4"]) == [str(v) for v in a.obsm[CLUSTERS][:, 1]]
    b, _, _ = _output(with_emb=False)
    b.uns.update(status=OK, reason="", log="l")
    assert figures.umap_table(b, n_neighbors=3, seed=0)["status"].iloc[0] == "no embedding"


def test_umap_tables_of_several_methods_round_trip(tmp_path):
    """One UMAP file per fold: each method reads back its own rows and only its own obs columns."""
    a, _, _ = _output()
    a.uns.update(status=OK, reason="", log="la", method="concerto")
    b, _, _ = _output(with_emb=False)
    b.uns.update(status=OK, reason="", log="lb", method="random")
    b.obs = b.obs.drop(columns=[c for c in b.obs.columns if c != "cell_type"])
    path = tmp_path / "umap.tsv"
    figures.umap_tables([a, b], n_neighbors=3, seed=0).to_csv(path, sep="\t", index=False)
    tabs = figures.read_umap_tables(str(path), ["random", "concerto"])
    assert list(tabs) == ["random", "concerto"]
    assert len(tabs["concerto"]) == a.n_obs and tabs["concerto"]["umap1"].notna().all()
    assert "clusters_0.4" in tabs["concerto"] and "clusters_0.4" not in tabs["random"]
    assert list(tabs["random"]["status"]) == ["no embedding"]
    with pytest.raises(KeyError, match="no UMAP of \\['pca'\\]"):
        figures.read_umap_tables(str(path), ["pca"])
