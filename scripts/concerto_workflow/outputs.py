"""File contracts of method outputs, one per task (in the style of component APIs).

Every ``run_method`` output is an h5ad whose ``obs`` holds the fold's cells with the dataset
columns and ``role``; ``uns`` holds the provenance keys of :data:`columns.PROVENANCE`
(status ``ok`` / ``failed`` / ``not_installed``, reason, seconds, peak memory, log path).
When the status is ``ok`` the task's slots are present:

=========  ====================================================================================
task       required slots (status ok)
=========  ====================================================================================
embed      obsm['X_emb'] (every cell); optional attention signatures (Concerto with
           ``attention=True``): obsm['attention_<modality>'], a CSR (every cell x F) of each
           cell's attention weights (>= 0, a row sums to <= 1) + uns['attention_features']
           {modality: F names}
map        obsm['X_emb'] (every cell); obs['predicted_label'], obs['conf_score'] (non-train
           cells: the shared k-NN vote); obsm['label_probabilities'] + uns['label_classes']
annotate   obs['predicted_label'], obs['conf_score'] (non-train cells);
           obsm['label_probabilities'] + uns['label_classes']; optional obsm['X_emb'] (every
           cell): the space the labels came from (a map embedding, fine-tuned Concerto's), for UMAPs
cluster    obsm['clusters'] (every cell x setting, int) + uns['cluster_settings']; optional
           obsm['X_emb']: the space the clusters came from (silhouette, UMAPs)
impute     obsm['imputed'], obsm['measured'] (non-train cells x features) + uns['feature_names'];
           optional obsm['X_emb'] (every cell): the space the values were smoothed in, for UMAPs
=========  ====================================================================================

A failed method carries none of them, so nothing downstream can mistake it for a result.
:func:`check_output` raises :class:`ContractError` naming every problem (no ``assert``:
contracts hold under ``python -O`` too).
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .columns import (ATTENTION, ATTENTION_FEATURES, CLASSES, CLUSTER_SETTINGS, CLUSTERS, CONFIDENCE,
                      DATASET_COLUMNS, EMBEDDING, FEATURES, IMPUTED, MEASURED, OK, PREDICTED, PROBABILITIES, PROVENANCE, ROLE,
                      STATUSES, TRAIN)

TASKS = ("embed", "map", "annotate", "cluster", "impute")
#: slots by task: (obsm keys, obs columns, uns keys)
SLOTS = {
    "embed": ((EMBEDDING,), (), ()),
    "map": ((EMBEDDING, PROBABILITIES), (PREDICTED, CONFIDENCE), (CLASSES,)),
    "annotate": ((PROBABILITIES,), (PREDICTED, CONFIDENCE), (CLASSES,)),
    "cluster": ((CLUSTERS,), (), (CLUSTER_SETTINGS,)),
    "impute": ((IMPUTED, MEASURED), (), (FEATURES,)),
}
#: tasks whose slots cover only the non-training cells
PREDICTS_HELD_OUT = {"map": (PREDICTED, CONFIDENCE, PROBABILITIES),
                     "annotate": (PREDICTED, CONFIDENCE, PROBABILITIES)}


class ContractError(ValueError):
    """A method output that breaks its task's file contract."""


def attention_problems(a: ad.AnnData) -> list[str]:
    """What is wrong with an output's optional attention slots (empty list = nothing)."""
    import scipy.sparse as sp

    keys = [k for k in a.obsm if k.startswith(ATTENTION)]
    if not keys:
        return []
    names = a.uns.get(ATTENTION_FEATURES, {})
    problems = []
    for k in keys:
        m, A = k[len(ATTENTION):], a.obsm[k]
        if m not in names:
            problems.append(f"obsm[{k!r}] without uns[{ATTENTION_FEATURES!r}][{m!r}]")
            continue
        if not sp.issparse(A):
            problems.append(f"obsm[{k!r}] is not a sparse matrix")
            continue
        if A.shape[1] != len(names[m]):
            problems.append(f"obsm[{k!r}] has {A.shape[1]} columns for {len(names[m])} feature names")
        data = np.asarray(A.data)
        if data.size and (not np.isfinite(data).all() or data.min() < 0):
            problems.append(f"obsm[{k!r}] has negative or non-finite weights")
        elif data.size and np.asarray(A.sum(axis=1)).max() > 1 + 1e-3:
            problems.append(f"obsm[{k!r}]: a cell's attention weights sum to more than 1")
    return problems


def check_output(a: ad.AnnData, task: str) -> None:
    if task not in TASKS:
        raise ContractError(f"unknown task {task!r}; known: {TASKS}")
    problems = [f"uns[{k!r}] missing" for k in PROVENANCE if k not in a.uns]
    status = a.uns.get("status")
    if status not in STATUSES:
        problems.append(f"uns['status'] = {status!r}, not one of {STATUSES}")
    problems += [f"obs[{c!r}] missing" for c in (*DATASET_COLUMNS, ROLE) if c not in a.obs]
    obsm, obs, uns = SLOTS[task]
    if status == OK:
        problems += [f"obsm[{k!r}] missing (status ok)" for k in obsm if k not in a.obsm]
        problems += [f"obs[{k!r}] missing (status ok)" for k in obs if k not in a.obs]
        problems += [f"uns[{k!r}] missing (status ok)" for k in uns if k not in a.uns]
        for k in obsm:
            if k in a.obsm:
                v = np.asarray(a.obsm[k])
                if k in (IMPUTED, MEASURED) or k == PROBABILITIES:
                    held_out = a.obs[ROLE].astype(str) != TRAIN if ROLE in a.obs else slice(None)
                    v = v[np.asarray(held_out)]
                if v.size and not np.isfinite(v).all():
                    problems.append(f"obsm[{k!r}] has NaN/inf values")
        if PROBABILITIES in a.obsm and CLASSES in a.uns and \
                np.shape(a.obsm[PROBABILITIES])[1] != len(a.uns[CLASSES]):
            problems.append(f"obsm[{PROBABILITIES!r}] columns != len(uns[{CLASSES!r}])")
        if CLUSTERS in a.obsm and CLUSTER_SETTINGS in a.uns and \
                np.shape(a.obsm[CLUSTERS])[1] != len(a.uns[CLUSTER_SETTINGS]):
            problems.append(f"obsm[{CLUSTERS!r}] columns != len(uns[{CLUSTER_SETTINGS!r}])")
        if task in PREDICTS_HELD_OUT and PREDICTED in a.obs and ROLE in a.obs:
            held_out = (a.obs[ROLE].astype(str) != TRAIN).to_numpy()
            if pd.isna(a.obs[PREDICTED].to_numpy()[held_out]).any():
                problems.append("a non-training cell has no obs['predicted_label']")
        problems += attention_problems(a)
    else:
        problems += [f"obsm[{k!r}] present although status is {status!r}" for k in a.obsm
                     if k in obsm or k.startswith(ATTENTION)]
        if not str(a.uns.get("reason", "")).strip():
            problems.append(f"status {status!r} without a reason")
    if problems:
        raise ContractError(f"{task} output of {a.uns.get('method', '?')!r} breaks its contract: "
                            + "; ".join(problems))


def read_output(path: str, task: str) -> ad.AnnData:
    a = ad.read_h5ad(path)
    check_output(a, task)
    return a


def held_out(a: ad.AnnData) -> np.ndarray:
    """Boolean mask of the cells a map/annotate/impute output predicts (valid + test)."""
    return (a.obs[ROLE].astype(str) != TRAIN).to_numpy()


def recorded_failure(path: str) -> str:
    """'failed: <reason>' for an existing output with status 'failed'; for any other existing
    output the failure it was a retry of (``uns['retry_of']``, so a recovered job keeps the param
    value it ran with and is not rerun again); else ''. Read straight from the file's uns."""
    import os

    import h5py

    if not os.path.exists(path):
        return ""
    try:
        with h5py.File(path, "r") as f:
            status = f["uns/status"][()]
            reason = f["uns/reason"][()] if "uns/reason" in f else b""
            retry_of = f["uns/retry_of"][()] if "uns/retry_of" in f else b""
    except (OSError, KeyError):
        return ""
    status, reason, retry_of = (x.decode() if isinstance(x, bytes) else str(x) for x in (status, reason, retry_of))
    return f"failed: {reason}" if status == "failed" else retry_of
