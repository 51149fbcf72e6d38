"""Metric registry per task: each metric reads a method output (:mod:`.outputs`) and returns a
number, or {setting: number} for sweeps (clustering resolutions, imputed features).

Label metrics are computed on the ``test`` cells only; rejection metrics compare the
confidence of ``valid`` cells (known types) with ``test`` cells (unseen types, label-mask
splits). Embedding metrics use each method's own space (``obsm['X_emb']``), as the paper:
kBET acceptance (pegasus ``calc_kBET``, K=15), ASW of batch and cell-type labels (sklearn);
beside them scib-metrics' per-cell-type kBET and scaled ASWs (Luecken et al. 2022), because a
global kBET also rewards an embedding that has lost the cell types (a random one).
Adding a metric: write ``fn(a, params) -> float | dict`` and one :class:`Metric` entry.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd

from .columns import (BATCH, CELL_TYPE, CLUSTER_SETTINGS, CLUSTERS, CONFIDENCE, EMBEDDING, FEATURES, IMPUTED,
                      MEASURED, OK, PREDICTED, ROLE, TEST, VALID)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    description: str
    fn: Callable

    @property
    def axis_label(self) -> str:
        return f"{self.name} ({'higher' if self.higher_is_better else 'lower'} is better)"


def _subsample(n: int, max_cells: int | None, seed: int) -> np.ndarray:
    if not max_cells or n <= max_cells:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))


# ------------------------------------------------------------------------------- embeddings
def kbet_accept_rate(a: ad.AnnData, p: dict) -> float:
    """pegasus kBET acceptance rate (pegasus wants a MultimodalData)."""
    import pegasus as pg
    import pegasusio as io

    b = ad.AnnData(np.zeros((a.n_obs, 1), dtype=np.float32),
                   obs=pd.DataFrame({BATCH: a.obs[BATCH].astype(str).values}, index=a.obs_names))
    b.obsm[EMBEDDING] = np.asarray(a.obsm[EMBEDDING], dtype=np.float32)
    data = io.MultimodalData(io.UnimodalData(b))
    _, _, accept = pg.calc_kBET(data, attr=BATCH, rep=EMBEDDING[2:], K=p.get("kbet_k", 15),
                                alpha=p.get("kbet_alpha", 0.05), n_jobs=1,
                                random_state=p.get("seed", 0), use_cache=False)
    return float(accept)


def _asw(a: ad.AnnData, labels: str, p: dict) -> float:
    from sklearn.metrics import silhouette_samples

    idx = _subsample(a.n_obs, p.get("asw_max_cells"), p.get("seed", 0))
    y = a.obs[labels].astype(str).to_numpy()[idx]
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(np.mean(silhouette_samples(np.asarray(a.obsm[EMBEDDING])[idx], y, metric="euclidean")))


def asw_batch(a, p):
    return _asw(a, BATCH, p)


def asw_celltype(a, p):
    return _asw(a, CELL_TYPE, p)


def asw_focus_celltype(a, p):
    """Cell-type silhouette (sklearn) averaged over the cells of one label, ``focus_label``
    (paper Fig 3f: beta cells, present in one technology only, should stay a separate group
    rather than be over-corrected onto other types). NaN when the label is absent."""
    from sklearn.metrics import silhouette_samples

    idx = _subsample(a.n_obs, p.get("asw_max_cells"), p.get("seed", 0))
    y = a.obs[CELL_TYPE].astype(str).to_numpy()[idx]
    focus = y == str(p.get("focus_label", "beta"))
    if not focus.any() or len(np.unique(y)) < 2:
        return float("nan")
    return float(np.mean(silhouette_samples(np.asarray(a.obsm[EMBEDDING])[idx], y)[focus]))


def _scib_metrics():
    """scib-metrics, imported on first use (JAX is slow to import). JAX runs on the CPU with one
    thread, like the score job it runs in; scib-metrics' per-label INFO lines are switched off."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import scib_metrics

    scib_metrics.settings.verbosity = logging.WARNING
    return scib_metrics


def _mixed_labels(labels: np.ndarray, batches: np.ndarray) -> bool:
    """Whether some label has cells of two batches (else a per-label batch metric is undefined)."""
    return bool((pd.DataFrame({"l": labels, "b": batches}).groupby("l")["b"].nunique() > 1).any())


def kbet_per_label(a: ad.AnnData, p: dict) -> float:
    """scib-metrics ``kbet_per_label``: kBET acceptance within each cell type, averaged over types,
    on the embedding's euclidean k-NN graph (``kbet_label_neighbors``, scib's 50, by scib's
    pynndescent). A type whose cells fall apart into small graph pieces scores 0, so unlike the
    global kBET this does not reward an embedding that scatters the types. NaN when no type has
    cells of two batches."""
    scib = _scib_metrics()
    batches, labels = a.obs[BATCH].astype(str).to_numpy(), a.obs[CELL_TYPE].astype(str).to_numpy()
    if not _mixed_labels(labels, batches):
        return float("nan")
    x = np.asarray(a.obsm[EMBEDDING], dtype=np.float32)
    graph = scib.nearest_neighbors.pynndescent(x, n_neighbors=min(p.get("kbet_label_neighbors", 50), a.n_obs - 1),
                                               random_state=p.get("seed", 0), n_jobs=1)
    return float(scib.kbet_per_label(graph, batches, labels, alpha=p.get("kbet_alpha", 0.05)))


def _scib_asw_inputs(a: ad.AnnData, p: dict):
    idx = _subsample(a.n_obs, p.get("asw_max_cells"), p.get("seed", 0))
    return (np.asarray(a.obsm[EMBEDDING], dtype=np.float32)[idx], a.obs[CELL_TYPE].astype(str).to_numpy()[idx],
            a.obs[BATCH].astype(str).to_numpy()[idx])


def asw_celltype_scaled(a, p):
    """scib-metrics ``silhouette_label``: cell-type silhouette rescaled to [0, 1], (ASW + 1) / 2."""
    x, labels, _ = _scib_asw_inputs(a, p)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(_scib_metrics().silhouette_label(x, labels, rescale=True))


def asw_batch_scaled(a, p):
    """scib-metrics ``silhouette_batch``: within each cell type, 1 - |silhouette of the batches|,
    averaged over types; 1 = batches mixed within every type. Types seen in one batch only are
    left out; NaN when every type is."""
    x, labels, batches = _scib_asw_inputs(a, p)
    if not _mixed_labels(labels, batches):
        return float("nan")
    return float(_scib_metrics().silhouette_batch(x, labels, batches, rescale=True))


def asw_label_pairs(a, p):
    """Per pair of labels of ``obs[pair_key]`` (``metric_params.label_pairs``), the silhouette
    (sklearn) of the two labels among the cells of the pair only, setting 'A vs B' (paper Fig 3c:
    CD4 vs CD8 T cells, better separated by protein; DCs vs monocytes, better by RNA). NaN when
    either label has no cells."""
    key = p.get("pair_key", CELL_TYPE)
    if key not in a.obs:
        raise KeyError(f"metric_params.pair_key {key!r} is not an obs column of this output "
                       f"(columns: {list(a.obs.columns)})")
    labels = a.obs[key].astype(str).to_numpy()
    out = {}
    for x, y in p.get("label_pairs", []):
        cells = np.isin(labels, [x, y])
        both = (labels[cells] == x).any() and (labels[cells] == y).any()
        out[f"{x} vs {y}"] = _asw(a[cells], key, p) if both else float("nan")
    return out


# ----------------------------------------------------------------------------------- labels
def _test(a: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    t = (a.obs[ROLE].astype(str) == TEST).to_numpy()
    return a.obs[CELL_TYPE].astype(str).to_numpy()[t], a.obs[PREDICTED].astype(str).to_numpy()[t]


def accuracy(a, p):
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(*_test(a)))


def accuracy_known_types(a, p):
    """Accuracy on the test cells whose true label occurs among the training cells (paper
    Fig 4c: the query's CD8 T cells, absent from the reference, cannot be labelled right and are
    left out); NaN when no test cell has a known label."""
    known = set(a.obs.loc[(a.obs[ROLE].astype(str) != TEST).to_numpy(), CELL_TYPE].astype(str))
    y, yhat = _test(a)
    keep = np.isin(y, list(known))
    return float(np.mean(y[keep] == yhat[keep])) if keep.any() else float("nan")


def macro_f1(a, p):
    from sklearn.metrics import f1_score

    y, yhat = _test(a)
    return float(f1_score(y, yhat, labels=np.unique(y), average="macro", zero_division=0))


def median_f1(a, p):
    """Median over the test set's cell types of the per-type F1 (paper Fig 2a, 2b)."""
    from sklearn.metrics import f1_score

    y, yhat = _test(a)
    return float(np.median(f1_score(y, yhat, labels=np.unique(y), average=None, zero_division=0)))


def ari_labels(a, p):
    """Adjusted Rand index of predicted vs true labels of the test cells (paper Fig 2g: label
    names need not match, e.g. a target-specific type called by its nearest training type)."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(*_test(a)))


def _valid_test_conf(a):
    role = a.obs[ROLE].astype(str).to_numpy()
    conf = a.obs[CONFIDENCE].to_numpy(dtype=float)
    return conf[role == VALID], conf[role == TEST]


def rejected_at_valid95(a, p):
    """Fraction of test (unseen-type) cells below the confidence threshold that keeps 95% of
    the validation (known-type) cells (paper Fig 2d)."""
    valid, test = _valid_test_conf(a)
    if not len(valid) or not len(test):
        return float("nan")
    return float(np.mean(test < np.quantile(valid, 0.05)))


def auroc_unseen(a, p):
    """AUROC of low confidence as a detector of unseen-type cells (test) among known (valid)."""
    from sklearn.metrics import roc_auc_score

    valid, test = _valid_test_conf(a)
    if not len(valid) or not len(test):
        return float("nan")
    return float(roc_auc_score(np.r_[np.zeros(len(valid)), np.ones(len(test))], -np.r_[valid, test]))


# ----------------------------------------------------------------------------- clusters
def _per_setting(a, score):
    y = a.obs[CELL_TYPE].astype(str).to_numpy()
    cl = np.asarray(a.obsm[CLUSTERS])
    return {s: float(score(y, cl[:, j])) for j, s in enumerate(a.uns[CLUSTER_SETTINGS])}


def ari(a, p):
    from sklearn.metrics import adjusted_rand_score

    return _per_setting(a, adjusted_rand_score)


def silhouette_clusters(a, p):
    """Silhouette of each setting's clusters (sklearn, euclidean) in the embedding the clusters
    came from (``obsm['X_emb']``, each method's own space); NaN without one (controls) or with
    fewer than 2 clusters."""
    from sklearn.metrics import silhouette_score

    if EMBEDDING not in a.obsm:
        return {s: float("nan") for s in a.uns[CLUSTER_SETTINGS]}
    idx = _subsample(a.n_obs, p.get("asw_max_cells"), p.get("seed", 0))
    emb, cl = np.asarray(a.obsm[EMBEDDING])[idx], np.asarray(a.obsm[CLUSTERS])[idx]
    return {s: (float(silhouette_score(emb, cl[:, j])) if 1 < len(np.unique(cl[:, j])) < len(idx) else float("nan"))
            for j, s in enumerate(a.uns[CLUSTER_SETTINGS])}


def nmi(a, p):
    from sklearn.metrics import normalized_mutual_info_score

    return _per_setting(a, normalized_mutual_info_score)


# ------------------------------------------------------------------------------ imputation
def _pearson_per_feature(a) -> dict:
    from scipy.stats import pearsonr

    t = (a.obs[ROLE].astype(str) == TEST).to_numpy()
    pred, meas = np.asarray(a.obsm[IMPUTED])[t], np.asarray(a.obsm[MEASURED])[t]
    out = {}
    for j, f in enumerate(a.uns[FEATURES]):
        ok = np.std(pred[:, j]) > 0 and np.std(meas[:, j]) > 0
        out[str(f)] = float(pearsonr(pred[:, j], meas[:, j])[0]) if ok else float("nan")
    return out


def pearson(a, p):
    return _pearson_per_feature(a)


def pearson_median(a, p):
    return float(np.nanmedian(list(_pearson_per_feature(a).values())))


_LABEL_TASKS = ("map", "annotate")
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("kbet_accept_rate", ("embed", "map"), True, "kBET acceptance rate (batch mixing)", kbet_accept_rate),
    Metric("asw_batch", ("embed", "map"), False, "silhouette of batch labels (lower = mixed)", asw_batch),
    Metric("asw_celltype", ("embed", "map"), True, "silhouette of cell-type labels", asw_celltype),
    Metric("kbet_per_label", ("embed", "map"), True,
           "kBET acceptance within each cell type, averaged over types (scib-metrics)", kbet_per_label),
    Metric("asw_batch_scaled", ("embed", "map"), True,
           "1 - |batch silhouette| within each cell type (scib-metrics; 1 = mixed)", asw_batch_scaled),
    Metric("asw_celltype_scaled", ("embed", "map"), True,
           "cell-type silhouette scaled to [0, 1] (scib-metrics)", asw_celltype_scaled),
    Metric("asw_focus_celltype", ("embed", "map"), True,
           "cell-type silhouette of the cells of metric_params.focus_label (beta cells)", asw_focus_celltype),
    Metric("asw_label_pairs", ("embed", "map"), True,
           "silhouette of each metric_params.label_pairs pair among its own cells", asw_label_pairs),
    Metric("accuracy", _LABEL_TASKS, True, "accuracy on the test cells", accuracy),
    Metric("accuracy_known_types", _LABEL_TASKS, True,
           "accuracy on the test cells of types present in training (unseen types left out)", accuracy_known_types),
    Metric("macro_f1", _LABEL_TASKS, True, "mean F1 over the test set's cell types", macro_f1),
    Metric("median_f1", _LABEL_TASKS, True, "median F1 over the test set's cell types", median_f1),
    Metric("ari_labels", _LABEL_TASKS, True, "adjusted Rand index of predicted vs true labels (test cells)",
           ari_labels),
    Metric("rejected_at_valid95", _LABEL_TASKS, True,
           "unseen-type cells rejected at the threshold keeping 95% of validation cells", rejected_at_valid95),
    Metric("auroc_unseen", _LABEL_TASKS, True, "AUROC of low confidence for unseen types", auroc_unseen),
    Metric("ari", ("cluster",), True, "adjusted Rand index of clusters vs cell types", ari),
    Metric("nmi", ("cluster",), True, "normalised mutual information of clusters vs cell types", nmi),
    Metric("silhouette_clusters", ("cluster",), True,
           "silhouette of the clusters in the embedding they came from", silhouette_clusters),
    Metric("pearson", ("impute",), True, "Pearson r per feature, imputed vs measured (test cells)", pearson),
    Metric("pearson_median", ("impute",), True, "median over features of the Pearson r", pearson_median),
)}
#: reported for every successful method output (runtime_s, peak_memory_mb, and n_cells, the
#: cells the method processed: the x axis of log-log scaling figures) or by benchmarks:
#: metric -> higher is better (None: a size, neither)
RESOURCE_METRICS = {"runtime_s": False, "peak_memory_mb": False, "n_cells": None, "seconds": False,
                    "cells_per_s": True, "peak_rss_gib": False}


def metrics_for(task: str) -> list[str]:
    return [m for m, spec in METRICS.items() if task in spec.tasks]


def higher_is_better(metric: str) -> bool:
    if metric in METRICS:
        return METRICS[metric].higher_is_better
    if metric in RESOURCE_METRICS:
        return RESOURCE_METRICS[metric]
    raise KeyError(f"unknown metric {metric!r}; known: {sorted(METRICS) + sorted(RESOURCE_METRICS)}")


def axis_label(metric: str) -> str:
    better = higher_is_better(metric)
    return metric if better is None else f"{metric} ({'higher' if better else 'lower'} is better)"


def score(a: ad.AnnData, names: list[str], params: dict) -> dict:
    out = {}
    for name in names:
        out[name] = METRICS[name].fn(a, params)
        log.info("%s = %s", name, out[name])
    out["runtime_s"] = float(a.uns["seconds"])
    out["peak_memory_mb"] = float(a.uns["peak_memory_mb"])
    out["n_cells"] = float(a.n_obs)
    return out


def score_outputs(paths: list[str], task: str, names: list[str], params: dict) -> pd.DataFrame:
    """Tidy score rows of every method output of an experiment (one process for all of them:
    scoring takes seconds, starting a job per output took longer than the scoring itself).
    Outputs that did not run give status rows with the metric names and the reason."""
    from . import outputs, tables
    from .methods import REGISTRY

    frames = []
    for path in paths:
        a = outputs.read_output(path, task)
        kind = REGISTRY[a.uns["method"]].kind
        log.info("scoring %s", path)
        if a.uns["status"] == OK:
            frames.append(tables.rows(a.uns, kind, score(a, list(names), dict(params)), log=a.uns["log"]))
        else:
            frames.append(tables.rows(a.uns, kind, {}, status=a.uns["status"], reason=a.uns["reason"],
                                      log=a.uns["log"], metrics=list(names)))
    return pd.concat(frames, ignore_index=True)
