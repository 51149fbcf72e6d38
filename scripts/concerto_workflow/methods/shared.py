"""Operations the engine applies on top of a method's embedding, one implementation each:
the k-NN label vote (paper eq 14-16), k-NN smoothing of a missing modality, and Leiden /
Louvain clustering of an embedding. All come from ``concerto_core`` or scanpy, never re-implemented."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def dense(X, dtype=np.float32) -> np.ndarray:
    """A fold's X (CSR) as a dense array of ``dtype``, for tools that take no sparse input."""
    return (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(dtype, copy=False)


def scaled_counts(X) -> np.ndarray:
    """``expm1`` of the fold's log-normalised values: counts scaled to 10,000 per cell (not
    integers), for the competitors that model transcript counts (SciBet, Cell BLAST, Moana,
    scDeepCluster)."""
    return np.expm1(dense(X, np.float64))


def vote(ref_emb, ref_labels, query_emb, k: int):
    """Cosine-weighted k-NN vote -> ((n_query, C) probabilities, C class names)."""
    from concerto_core.label_transfer import knn_vote

    res = knn_vote(np.asarray(ref_emb, dtype=np.float32), np.asarray(ref_labels).astype(str),
                   np.asarray(query_emb, dtype=np.float32), k=k)
    return np.asarray(res.probs, dtype=np.float64), [str(c) for c in res.categories]


def smooth(ref_emb, ref_values, query_emb, k: int) -> np.ndarray:
    """Query feature values as the similarity-weighted mean of their k nearest reference cells."""
    from concerto_core import impute_modality

    return np.asarray(impute_modality(np.asarray(ref_emb, dtype=np.float32), np.asarray(ref_values),
                                      np.asarray(query_emb, dtype=np.float32), k=k))


#: graph clustering algorithms of the engine -> the Python modules scanpy needs for them
CLUSTER_ALGORITHMS = {"leiden": ("igraph",), "louvain": ("louvain",)}


def missing_for_algorithm(algorithm: str) -> list[str]:
    """Python modules ``algorithm`` needs that are not installed (empty = it can run)."""
    import importlib.util

    if algorithm not in CLUSTER_ALGORITHMS:
        raise ValueError(f"unknown cluster algorithm {algorithm!r}; known: {sorted(CLUSTER_ALGORITHMS)}")
    return [m for m in CLUSTER_ALGORITHMS[algorithm] if importlib.util.find_spec(m) is None]


def cluster_embedding(emb, resolutions, *, seed: int, algorithm: str = "leiden",
                      n_neighbors: int = 15) -> np.ndarray:
    """(n_cells, len(resolutions)) Leiden or Louvain cluster ids of an embedding (scanpy's
    15-NN graph, as Seurat's and the paper's defaults)."""
    import anndata as ad
    import scanpy as sc

    missing = missing_for_algorithm(algorithm)
    if missing:
        raise ImportError(f"{algorithm} clustering needs the Python module(s) {missing}")
    a = ad.AnnData(np.zeros((len(emb), 1), dtype=np.float32))
    a.obsm["X_emb"] = np.asarray(emb, dtype=np.float32)
    sc.pp.neighbors(a, n_neighbors=n_neighbors, use_rep="X_emb", random_state=seed)
    out = np.empty((len(emb), len(resolutions)), dtype=np.int64)
    for j, r in enumerate(resolutions):
        if algorithm == "leiden":
            sc.tl.leiden(a, resolution=float(r), random_state=seed, key_added="cl",
                         flavor="igraph", n_iterations=2, directed=False)
        else:
            sc.tl.louvain(a, resolution=float(r), random_state=seed, key_added="cl")
        out[:, j] = a.obs["cl"].astype(int).to_numpy()
    return out


def leiden(emb, resolutions, *, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """(n_cells, len(resolutions)) Leiden cluster ids of an embedding (scanpy)."""
    return cluster_embedding(emb, resolutions, seed=seed, algorithm="leiden", n_neighbors=n_neighbors)
