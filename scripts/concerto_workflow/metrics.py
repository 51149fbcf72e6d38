"""Metrics, each computed in a method's own embedding space (``obsm['X_emb']``).

Integration (paper Fig 3g): kBET acceptance rate (pegasus ``calc_kBET``, K=15; higher =
batches better mixed), ASW on batch labels (lower = better mixed) and on cell-type labels
(higher = biology kept), both sklearn ``silhouette_samples`` averaged over cells.
Mapping (Fig 4a/4b): k-NN vote accuracy of query cells and the confusion matrix.

Adding a metric: write ``fn(adata, **params) -> float`` and register it in
``INTEGRATION_METRICS``; it is then selectable in ``config.yaml: metrics.integration``.
"""
from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import silhouette_samples

from .embedding_io import EMB_KEY

log = logging.getLogger(__name__)


def _subsample(n: int, max_cells: int | None, seed: int) -> np.ndarray:
    if max_cells is None or n <= max_cells:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))


def kbet_accept_rate(a: ad.AnnData, *, batch_key: str = "batch", k: int = 15, alpha: float = 0.05,
                     n_jobs: int = 1, seed: int = 0, **_) -> float:
    """pegasus kBET acceptance rate on obsm['X_emb'] (pegasus wants a MultimodalData)."""
    import pegasus as pg
    import pegasusio as io

    b = ad.AnnData(np.zeros((a.n_obs, 1), dtype=np.float32),
                   obs=pd.DataFrame({batch_key: a.obs[batch_key].astype(str).values},
                                    index=a.obs_names))
    b.obsm[EMB_KEY] = np.asarray(a.obsm[EMB_KEY], dtype=np.float32)
    data = io.MultimodalData(io.UnimodalData(b))
    _, _, accept = pg.calc_kBET(data, attr=batch_key, rep=EMB_KEY[2:], K=k, alpha=alpha,
                                n_jobs=n_jobs, random_state=seed, use_cache=False)
    return float(accept)


def _asw(a: ad.AnnData, labels: str, max_cells: int | None, seed: int) -> float:
    idx = _subsample(a.n_obs, max_cells, seed)
    y = a.obs[labels].astype(str).to_numpy()[idx]
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(np.mean(silhouette_samples(a.obsm[EMB_KEY][idx], y, metric="euclidean")))


def asw_batch(a: ad.AnnData, *, batch_key: str = "batch", max_cells: int | None = None,
              seed: int = 0, **_) -> float:
    return _asw(a, batch_key, max_cells, seed)


def asw_celltype(a: ad.AnnData, *, label_key: str = "cell_type", max_cells: int | None = None,
                 seed: int = 0, **_) -> float:
    return _asw(a, label_key, max_cells, seed)


INTEGRATION_METRICS = {
    "kbet_accept_rate": kbet_accept_rate,
    "asw_batch": asw_batch,
    "asw_celltype": asw_celltype,
}


def integration_metrics(a: ad.AnnData, names: list[str], params: dict) -> dict[str, float]:
    out = {}
    for name in names:
        out[name] = INTEGRATION_METRICS[name](a, **params)
        log.info("%s = %.4f", name, out[name])
    return out


# --------------------------------------------------------------------------- mapping
def _knn_vote_cosine(ref_emb, ref_labels, query_emb, k=5):
    """Paper eq. 14-16: cosine-similarity-weighted vote of the k nearest reference cells.
    Returns (labels (n_query,), probability of the winning label (n_query,))."""
    from sklearn.neighbors import NearestNeighbors

    ref_labels = np.asarray(ref_labels).astype(str)
    nn = NearestNeighbors(n_neighbors=k, metric="cosine").fit(ref_emb)
    dist, idx = nn.kneighbors(query_emb)
    sim = np.clip(1.0 - dist, 1e-12, None)
    classes, codes = np.unique(ref_labels, return_inverse=True)
    votes = np.zeros((len(query_emb), len(classes)))
    for j in range(k):
        votes[np.arange(len(query_emb)), codes[idx[:, j]]] += sim[:, j]
    prob = votes / votes.sum(axis=1, keepdims=True)
    best = prob.argmax(axis=1)
    return classes[best], prob[np.arange(len(best)), best]


def knn_vote(ref_emb, ref_labels, query_emb, k=5):
    """``concerto_core.label_transfer.knn_vote`` (no rejection threshold) when available,
    else the same rule (paper eq. 14-16) here. Returns (predicted labels, confidence)."""
    try:
        from concerto_core.label_transfer import knn_vote as core_vote
    except ImportError:
        log.warning("concerto_core.label_transfer.knn_vote not available: using the workflow's own")
        return _knn_vote_cosine(ref_emb, ref_labels, query_emb, k=k)
    res = core_vote(ref_emb, np.asarray(ref_labels).astype(str), query_emb, k=k)  # -> VoteResult
    return np.asarray(res.labels).astype(str), np.asarray(res.conf_score, dtype=float)


def transfer_labels(a: ad.AnnData, *, label_key: str = "cell_type", k: int = 5) -> pd.DataFrame:
    """Predictions for the query cells of a mapping embedding file."""
    role = a.obs["role"].astype(str).to_numpy()
    ref, qry = role == "reference", role == "query"
    emb = np.asarray(a.obsm[EMB_KEY])
    pred, conf = knn_vote(emb[ref], a.obs[label_key].to_numpy()[ref], emb[qry], k=k)
    return pd.DataFrame({"cell": a.obs_names[qry], "true": a.obs[label_key].astype(str).to_numpy()[qry],
                         "predicted": pred, "confidence": conf})


def mapping_metrics(pred: pd.DataFrame) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(pred["true"], pred["predicted"])),
            "macro_f1": float(f1_score(pred["true"], pred["predicted"], average="macro"))}


def confusion(pred: pd.DataFrame) -> pd.DataFrame:
    """Row-normalised confusion matrix (true x predicted) in tidy form:
    columns true, predicted, fraction, n."""
    ct = pd.crosstab(pred["true"], pred["predicted"])
    frac = ct.div(ct.sum(axis=1), axis=0)
    out = frac.stack().rename("fraction").reset_index()
    out["n"] = ct.stack().to_numpy()
    out.columns = ["true", "predicted", "fraction", "n"]
    return out
