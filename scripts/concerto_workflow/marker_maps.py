"""Marker values over a method's map and their relation to distances in it (paper Fig 4d).

Two analyses of a mapping output (obsm['X_emb'] of reference and query cells) together with
the fold's preprocessed cells (log-normalised X, obsm['protein']):

* :func:`feature_values`: the values of named features per cell, a gene of ``X`` (``'GZMA'``)
  or a protein of ``obsm['protein']`` (``'protein:CD8'``, as log(1 + count)), for heatmaps
  over the UMAP;
* :func:`imputed_feature_values`: the measured and the inferred values of named features of
  an impute output's query cells (paper Fig 4f), on the same log(1 + count) scale;
* :func:`marker_distance_correlation`: for the query cells of one type (the paper: CD8 T
  cells, unseen in the reference), the Euclidean distance in the embedding to the centroid of
  the reference cells of a target type (NK cells) against each marker's expression, as a
  Pearson r with its two-sided p-value (scipy).
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .columns import EMBEDDING, FEATURES, IMPUTED, MEASURED, OK, PROTEIN, PROTEIN_NAMES, ROLE, TEST, TRAIN

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


def imputed_feature_values(output: ad.AnnData, features) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(measured, inferred, missing) of an impute output (:mod:`concerto_workflow.outputs`):
    two held-out cells x features tables of ``obsm['measured']`` and ``obsm['imputed']``, as
    log(1 + value) when the measured values are counts (none negative; the scale of the protein
    heatmaps), as they are otherwise (e.g. CLR-scaled), for features named 'protein:NAME' or NAME
    of ``uns['feature_names']``; a feature the output lacks is a NaN column and listed."""
    for k in (IMPUTED, MEASURED):
        if k not in output.obsm:
            raise KeyError(f"not an impute output with a result: obsm[{k!r}] missing "
                           f"(status {output.uns.get('status', '?')!r})")
    names = [str(n) for n in output.uns[FEATURES]]
    held = (output.obs[ROLE].astype(str) != TRAIN).to_numpy()
    values = [np.asarray(output.obsm[k], dtype=float)[held] for k in (MEASURED, IMPUTED)]
    if np.nanmin(values[0], initial=0.0) >= 0:
        values = [np.log1p(v) for v in values]
    tables, missing = ({}, {}), []
    for f in features:
        name = f[len(PROTEIN_PREFIX):] if f.startswith(PROTEIN_PREFIX) else f
        for table, v in zip(tables, values):
            table[f] = v[:, names.index(name)] if name in names else np.full(int(held.sum()), np.nan)
        if name not in names:
            missing.append(f)
    index = output.obs_names[held]
    return (*(pd.DataFrame(t, index=index, columns=list(features)) for t in tables), missing)


def measured_vs_inferred_rows(layout: pd.DataFrame, outputs: dict, features, layout_method: str):
    """The rows of a measured-vs-inferred figure (paper Fig 4f): ({row: UMAP table},
    {row: cells x features values}, missing features). ``layout``: the UMAP table
    (:func:`concerto_workflow.figures.umap_table`) of ``layout_method``'s output, whose held-out
    cells every row draws; ``outputs``: {name: impute output}. Rows: 'measured', then
    '<method> inferred' per output; a method without a result keeps its one-row status table
    (drawn 'not run' with the reason)."""
    ok = (layout["status"] == OK).all()
    query = layout[layout[ROLE].astype(str) != TRAIN] if ok else layout
    if ok:
        query = query.assign(status=OK)
    rows, values, missing = {}, {}, set()
    for a in outputs.values():
        m = str(a.uns["method"])
        if a.uns["status"] != OK:
            rows[f"{m} inferred"] = pd.DataFrame([{"cell": "", "umap1": np.nan, "umap2": np.nan,
                                                   "status": a.uns["status"], "reason": a.uns["reason"]}])
            values[f"{m} inferred"] = pd.DataFrame(columns=list(features))
            continue
        measured, inferred, miss = imputed_feature_values(a, features)
        missing |= set(miss)
        if "measured" not in rows:
            rows["measured"], values["measured"] = query, measured
        label = f"{m} inferred" + (f" (UMAP of {layout_method}'s space)" if m != layout_method else "")
        rows[label], values[label] = query, inferred
    rows = {"measured": rows.pop("measured"), **rows} if "measured" in rows else rows
    return rows, {r: values[r] for r in rows}, sorted(missing)


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
