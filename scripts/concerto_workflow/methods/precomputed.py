"""Bring-your-own embedding: a method whose embedding is read from the dataset itself.

A dataset converted with ``keep_obsm: [X_mine]`` carries ``obsm['X_mine']`` through
preprocessing (rows follow the cells), so ``precomputed`` with ``params: {obsm_key: X_mine}``
stands in for a method the workflow does not run: the engine scores it, clusters it (Leiden),
votes labels with it and smooths proteins with it exactly as it does for any other embedding.
The embedding was computed outside the workflow, so nothing guarantees it was fitted on the
training cells only; captions should say so.
"""
from __future__ import annotations

import numpy as np


def _read(adata, obsm_key: str) -> np.ndarray:
    if obsm_key not in adata.obsm:
        raise KeyError(f"method 'precomputed': obsm[{obsm_key!r}] is not in the dataset (obsm keys: "
                       f"{sorted(adata.obsm)}); keep it with datasets.<name>.<source>.keep_obsm and set "
                       f"the experiment's params.precomputed.obsm_key")
    emb = np.asarray(adata.obsm[obsm_key], dtype=np.float32)
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise ValueError(f"method 'precomputed': obsm[{obsm_key!r}] must be a finite (n_cells, d) array, "
                         f"got shape {emb.shape}")
    return emb


def embed(adata, ctx, *, obsm_key: str = "X_precomputed"):
    """(n_cells, d) embedding stored in ``adata.obsm[obsm_key]``."""
    return _read(adata, obsm_key)


def map_query(ref, query, ctx, *, obsm_key: str = "X_precomputed"):
    """The stored embedding of the reference and of the query cells."""
    return _read(ref, obsm_key), _read(query, obsm_key)
