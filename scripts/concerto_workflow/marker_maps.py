"""Marker values over a method's map and their relation to distances in it (paper Fig 4d).

Two analyses of a mapping output (obsm['X_emb'] of reference and query cells) together with
the fold's preprocessed cells (log-normalised X, obsm['protein']):

* :func:`feature_values`: the values of named features per cell, a gene of ``X`` (``'GZMA'``)
  or a protein of ``obsm['protein']`` (``'protein:CD8'``, as log(1 + count)), for heatmaps
  over the UMAP;
* :func:`marker_distance_correlation`: for the query cells of one type (the paper: CD8 T
  cells, unseen in the reference), the Euclidean distance in the embedding to the centroid of
  the reference cells of a target type (NK cells) against each marker's expression, as a
  Pearson r with its two-sided p-value (scipy).
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .columns import EMBEDDING, PROTEIN, PROTEIN_NAMES, ROLE, TEST, TRAIN

PROTEIN_PREFIX = "protein:"
CORRELATION_COLUMNS = ["feature", "r", "p", "n_cells", "missing"]


def feature_values(cells: ad.AnnData, features) -> tuple[pd.DataFrame, list[str]]:
    """(cells x features table, features not in this fold) for gene / 'protein:NAME' features.

    A gene outside the fold's genes (e.g. not among its HVGs) or an unknown protein becomes a
    NaN column and is listed as missing, so a figure can say so instead of failing."""
    out, missing = {}, []
    genes = pd.Index(cells.var_names)
    proteins = list(cells.uns.get(PROTEIN_NAMES, [])) if PROTEIN in cells.obsm else []
    for f in features:
        if f.startswith(PROTEIN_PREFIX):
            name = f[len(PROTEIN_PREFIX):]
            if name in proteins:
                # ADT counts on the log scale the paper's heatmaps use
                out[f] = np.log1p(np.asarray(cells.obsm[PROTEIN])[:, proteins.index(name)].astype(float))
                continue
        elif f in genes:
            col = cells.X[:, genes.get_loc(f)]
            out[f] = np.asarray(col.todense() if hasattr(col, "todense") else col, dtype=float).ravel()
            continue
        out[f] = np.full(cells.n_obs, np.nan)
        missing.append(f)
    return pd.DataFrame(out, index=cells.obs_names, columns=list(features)), missing


def distance_to_centroid(emb: np.ndarray, cells: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Euclidean distance of the rows ``cells`` (bool mask) of ``emb`` (n, d) to the mean of the
    rows ``target`` (bool mask); shape (cells.sum(),)."""
    if not target.any():
        raise ValueError("no target cells to measure distances to")
    centroid = np.asarray(emb)[target].mean(axis=0)
    return np.linalg.norm(np.asarray(emb)[cells] - centroid, axis=1)


def marker_distance_correlation(output: ad.AnnData, cells: ad.AnnData, *, label_key: str, group: str,
                                target: str, features) -> pd.DataFrame:
    """Pearson r (and p) of distance-to-``target`` against each feature over the ``group`` cells.

    ``group`` cells are the test (query) cells with ``obs[label_key] == group``; the centroid is
    taken over the training (reference) cells with ``obs[label_key] == target``. Returns one row
    per feature (:data:`CORRELATION_COLUMNS`); r and p are NaN for a missing or constant feature.
    """
    from scipy.stats import pearsonr

    for name, a in (("method output", output), ("cells", cells)):
        if label_key not in a.obs:
            raise KeyError(f"{name} has no obs column {label_key!r}; columns: {list(a.obs.columns)}")
    if EMBEDDING not in output.obsm:
        raise KeyError(f"the method output has no obsm[{EMBEDDING!r}] (a mapping or embedding output is needed)")
    labels = output.obs[label_key].astype(str).to_numpy()
    role = output.obs[ROLE].astype(str).to_numpy()
    in_group = (labels == group) & (role == TEST)
    in_target = (labels == target) & (role == TRAIN)
    if not in_group.any():
        raise ValueError(f"no query (test) cells with {label_key} == {group!r}")
    dist = distance_to_centroid(output.obsm[EMBEDDING], in_group, in_target)
    values, missing = feature_values(cells[output.obs_names[in_group]], features)
    rows = []
    for f in features:
        v = values[f].to_numpy()
        ok = f not in missing and np.std(v) > 0 and np.std(dist) > 0
        r, p = pearsonr(dist, v) if ok else (np.nan, np.nan)
        rows.append({"feature": f, "r": float(r), "p": float(p), "n_cells": int(in_group.sum()),
                     "missing": f in missing})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def distance_table(output: ad.AnnData, cells: ad.AnnData, *, label_key: str, group: str, target: str,
                   features) -> pd.DataFrame:
    """Per ``group`` query cell: its distance to the ``target`` centroid and its feature values
    (the points behind :func:`marker_distance_correlation`, for scatter plots)."""
    labels = output.obs[label_key].astype(str).to_numpy()
    role = output.obs[ROLE].astype(str).to_numpy()
    in_group = (labels == group) & (role == TEST)
    dist = distance_to_centroid(output.obsm[EMBEDDING], in_group, (labels == target) & (role == TRAIN))
    values, _ = feature_values(cells[output.obs_names[in_group]], features)
    return values.assign(distance=dist)
