"""Missing-modality inference by kNN smoothing in the joint embedding.

Following the paper (and Symphony), a query cell's missing modality (e.g.
protein/ADT) is the mean — or cosine-similarity-weighted mean — of that
modality over its k=5 nearest reference cells.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .neighbors import NeighborIndex

__all__ = ["impute_modality", "per_feature_pearson"]


def impute_modality(ref_emb, ref_values, query_emb, k: int = 5, weighted: bool = True, *,
                    feature_names=None, query_names=None, index: NeighborIndex | None = None,
                    **index_kwargs) -> pd.DataFrame:
    """Predict a modality for query cells from their reference neighbours.

    ref_emb : (n_ref, d); query_emb : (n_query, d).
    ref_values : (n_ref, n_features) ndarray, scipy sparse or DataFrame (columns
        used as feature names). NaN values propagate; impute them upstream.
    weighted : True -> weights = cosine similarity clipped at 0 (uniform if all
        are 0), normalised to sum 1; False -> plain mean of the k neighbours.
    index : prebuilt ``NeighborIndex`` on ``ref_emb`` (reuse across calls).
    Returns DataFrame (n_query, n_features).
    """
    if isinstance(ref_values, pd.DataFrame):
        feature_names = list(ref_values.columns) if feature_names is None else feature_names
        ref_values = ref_values.to_numpy(dtype=np.float64)
    vals = ref_values.tocsr() if sp.issparse(ref_values) else np.asarray(ref_values, dtype=np.float64)
    if vals.ndim != 2:
        raise ValueError(f"ref_values must be 2-D (cells x features), got shape {vals.shape}")
    n_ref = np.asarray(ref_emb).shape[0] if index is None else index.n_ref
    if vals.shape[0] != n_ref:
        raise ValueError(f"ref_values has {vals.shape[0]} rows but the reference has {n_ref} cells")
    if index is None:
        index = NeighborIndex(ref_emb, **index_kwargs)
    nbrs, sims = index.query(query_emb, k)
    nq, kk = nbrs.shape
    if weighted:
        w = np.clip(sims.astype(np.float64), 0.0, None)
        zero = w.sum(axis=1) <= 0
        w[zero] = 1.0
    else:
        w = np.ones((nq, kk))
    w /= w.sum(axis=1, keepdims=True)
    W = sp.csr_matrix((w.ravel(), nbrs.ravel(), np.arange(0, nq * kk + 1, kk)), shape=(nq, n_ref))
    pred = W @ vals
    pred = pred.toarray() if sp.issparse(pred) else np.asarray(pred)
    if feature_names is None:
        feature_names = [f"feature_{j}" for j in range(vals.shape[1])]
    if len(feature_names) != vals.shape[1]:
        raise ValueError("feature_names length does not match ref_values columns")
    return pd.DataFrame(pred, index=query_names, columns=list(feature_names))


def per_feature_pearson(predicted, measured) -> pd.DataFrame:
    """Per-feature (e.g. per-protein) Pearson r between prediction and truth.

    predicted, measured : (n_cells, n_features) DataFrames (aligned on columns;
        intersection used) or arrays/sparse of equal shape.
    Returns DataFrame indexed by feature: ``pearson_r``, ``n_cells`` (finite
    pairs used) and ``note`` (why r is NaN: constant column / < 2 cells).
    """
    if isinstance(predicted, pd.DataFrame) and isinstance(measured, pd.DataFrame):
        common = [c for c in predicted.columns if c in set(measured.columns)]
        if not common:
            raise ValueError("predicted and measured share no feature columns")
        names = common
        P = predicted[common].to_numpy(dtype=np.float64)
        M = measured[common].to_numpy(dtype=np.float64)
    else:
        names = list(predicted.columns) if isinstance(predicted, pd.DataFrame) else (
            list(measured.columns) if isinstance(measured, pd.DataFrame) else None)
        P = _dense(predicted)
        M = _dense(measured)
    if P.shape != M.shape:
        raise ValueError(f"shape mismatch: predicted {P.shape} vs measured {M.shape}")
    if names is None:
        names = [f"feature_{j}" for j in range(P.shape[1])]
    ok = np.isfinite(P) & np.isfinite(M)
    n = ok.sum(axis=0)
    Pz = np.where(ok, P, 0.0)
    Mz = np.where(ok, M, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = Pz.sum(0) / n
        mm = Mz.sum(0) / n
        dp = np.where(ok, P - mp, 0.0)
        dm = np.where(ok, M - mm, 0.0)
        sp_ = np.sqrt((dp * dp).sum(0))
        sm = np.sqrt((dm * dm).sum(0))
        r = (dp * dm).sum(0) / (sp_ * sm)
    notes = np.full(P.shape[1], "", dtype=object)
    tol = 1e-12
    const_p = sp_ <= tol * np.maximum(1.0, np.abs(mp) * np.sqrt(np.maximum(n, 1)))
    const_m = sm <= tol * np.maximum(1.0, np.abs(mm) * np.sqrt(np.maximum(n, 1)))
    notes[const_p] = "constant predicted"
    notes[const_m] = "constant measured"
    notes[const_p & const_m] = "constant predicted and measured"
    notes[n < 2] = "fewer than 2 finite cells"
    bad = const_p | const_m | (n < 2)
    r = np.where(bad, np.nan, np.clip(r, -1.0, 1.0))
    return pd.DataFrame({"pearson_r": r, "n_cells": n, "note": notes}, index=pd.Index(names, name="feature"))


def _dense(x):
    if sp.issparse(x):
        return x.toarray().astype(np.float64)
    if isinstance(x, pd.DataFrame):
        return x.to_numpy(dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x
