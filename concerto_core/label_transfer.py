"""NN-voting label transfer (Concerto Methods, eqs 14-16) and NOTA rejection.

For a query cell y with k nearest reference cells N_y (cosine similarity D):

    p(x*, y) = sum_{i in N_y} 1[x_i = x*] D_i / sum_{j in N_y} D_j      (15)
    y'       = argmax_x* p(x*, y)                                        (16)

Conventions (so probabilities are always valid):

* Negative similarities are clipped to 0 before voting; if all k clipped
  similarities are 0 the k neighbours vote with equal weight (plain majority).
* Ties in (16) (probabilities within 1e-6, the float32 resolution of the
  similarities) go to the label of the most similar neighbour among the tied
  labels (neighbours are ordered by decreasing similarity, then by reference
  index), so results are deterministic.
* ``conf_score`` = p(y', y).  With ``threshold`` set, cells with
  ``conf_score < threshold`` (strictly) are labelled ``"Unknown"`` (NOTA).
* Reference cells whose label is NaN/None are excluded from the reference for
  that level (a warning says how many).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .neighbors import NeighborIndex

__all__ = ["VoteResult", "knn_vote", "hierarchical_knn_vote", "ReferenceIndexes", "transfer_labels",
           "apply_rejection", "confidence_distributions", "UNKNOWN"]

UNKNOWN = "Unknown"
_TIE_ATOL = 1e-6  # similarities are float32: closer probabilities count as tied


@dataclass
class VoteResult:
    """Result of one label level.

    labels : (n_query,) object array of predicted labels (``Unknown`` if rejected)
    conf_score : (n_query,) float, probability of the argmax label
    probs : (n_query, n_categories) float, rows sum to 1 (0 rows for cells with no reference)
    categories : list of reference labels, the columns of ``probs``
    neighbors, similarities : (n_query, k) int64 / float32, kNN in the *full* reference numbering
    """
    labels: np.ndarray
    conf_score: np.ndarray
    probs: np.ndarray
    categories: list
    neighbors: np.ndarray = field(repr=False)
    similarities: np.ndarray = field(repr=False)

    def to_frame(self, index=None) -> pd.DataFrame:
        return pd.DataFrame({"predicted_label": self.labels, "conf_score": self.conf_score}, index=index)

    def probs_frame(self, index=None) -> pd.DataFrame:
        return pd.DataFrame(self.probs, columns=pd.Index(self.categories, dtype=object), index=index)


def _check_threshold(threshold):
    if threshold is None:
        return None
    t = float(threshold)
    if not (0.0 <= t <= 1.0) or np.isnan(t):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return t


def _label_levels(ref_labels, n_ref):
    """Normalise labels to an ordered dict level -> 1-D object array (n_ref,)."""
    if isinstance(ref_labels, pd.DataFrame):
        levels = {str(c) if not isinstance(c, str) else c: ref_labels[c].to_numpy() for c in ref_labels.columns}
        multi = True
    elif isinstance(ref_labels, dict):
        levels = {k: np.asarray(v.to_numpy() if isinstance(v, pd.Series) else v, dtype=object)
                  for k, v in ref_labels.items()}
        multi = True
    else:
        arr = ref_labels.to_numpy() if isinstance(ref_labels, pd.Series) else np.asarray(ref_labels, dtype=object)
        levels = {None: arr}
        multi = False
    if not levels:
        raise ValueError("no label levels given")
    out = {}
    for name, v in levels.items():
        v = np.asarray(v, dtype=object)
        if v.ndim != 1 or v.shape[0] != n_ref:
            raise ValueError(f"labels{'' if name is None else f' for level {name!r}'} have shape {v.shape}, "
                             f"expected ({n_ref},) to match the reference embedding")
        out[name] = v
    return out, multi


def _valid_mask(labels: np.ndarray, name) -> np.ndarray:
    valid = ~pd.isna(labels)
    if not valid.any():
        raise ValueError(f"all reference labels{'' if name is None else f' of level {name!r}'} are NaN")
    if not valid.all():
        warnings.warn(f"{int((~valid).sum())} reference cells with NaN label"
                      f"{'' if name is None else f' (level {name!r})'} are excluded from voting",
                      UserWarning, stacklevel=3)
    return valid


def _vote(nbr_codes, sims, n_cat):
    """Eq 15 plus tie rule. nbr_codes (nq,k) int (-1 = no neighbour), sims (nq,k) sorted desc."""
    nq, k = nbr_codes.shape
    w = np.clip(sims.astype(np.float64), 0.0, None)
    w[nbr_codes < 0] = 0.0
    tot = w.sum(axis=1)
    has = (nbr_codes >= 0).any(axis=1)
    zero = (tot <= 0) & has
    if zero.any():  # all similarities <= 0: equal-weight vote
        w[zero] = (nbr_codes[zero] >= 0).astype(np.float64)
        tot[zero] = w[zero].sum(axis=1)
    flat = (np.arange(nq)[:, None] * n_cat + np.maximum(nbr_codes, 0)).ravel()
    probs = np.bincount(flat, weights=w.ravel(), minlength=nq * n_cat).reshape(nq, n_cat)
    probs[has] /= tot[has, None]
    best = probs.max(axis=1)
    # tie rule: first neighbour (most similar) whose label attains the max
    nb_p = np.where(nbr_codes >= 0, probs[np.arange(nq)[:, None], np.maximum(nbr_codes, 0)], -1.0)
    first = np.argmax(nb_p >= best[:, None] - _TIE_ATOL, axis=1)
    pred = nbr_codes[np.arange(nq), first]
    pred[~has] = -1
    conf = np.where(has, best, 0.0)
    return pred, conf, probs


def _finish(pred, conf, probs, cats, nbrs, sims, threshold, unknown_label):
    cats_arr = np.asarray(cats, dtype=object)
    labels = np.where(pred >= 0, cats_arr[np.maximum(pred, 0)] if len(cats_arr) else unknown_label,
                      unknown_label).astype(object)
    if threshold is not None:
        labels[conf < threshold] = unknown_label
    return VoteResult(labels, conf, probs, list(cats), nbrs, sims)


def _index_for(ref_emb, mask, cache, index_kwargs):
    key = mask.tobytes() if not mask.all() else b"all"
    if key not in cache:
        sub = np.flatnonzero(mask)
        cache[key] = (NeighborIndex(ref_emb[sub] if not mask.all() else ref_emb, **index_kwargs), sub)
    return cache[key]


def knn_vote(ref_emb, ref_labels, query_emb, k: int = 5, threshold: float | None = None, *,
             unknown_label: str = UNKNOWN, index: NeighborIndex | None = None, **index_kwargs):
    """Transfer reference labels to query cells by cosine kNN voting (eqs 14-16).

    ref_emb : (n_ref, d); query_emb : (n_query, d).
    ref_labels : (n_ref,) array/Series -> returns one ``VoteResult``;
        dict {level: (n_ref,)} or DataFrame of label columns -> dict {level: VoteResult}.
    threshold : None or in [0, 1]; ``conf_score < threshold`` -> ``unknown_label``.
    index : optional prebuilt ``NeighborIndex`` on ``ref_emb`` (reused when a level has no NaN labels).
    index_kwargs : passed to ``NeighborIndex`` (method, n_threads, ...).
    """
    threshold = _check_threshold(threshold)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    ref_emb = np.asarray(ref_emb)
    if ref_emb.ndim != 2:
        raise ValueError(f"ref_emb must be 2-D, got shape {ref_emb.shape}")
    levels, multi = _label_levels(ref_labels, ref_emb.shape[0])
    cache = {}
    if index is not None:
        if index.n_ref != ref_emb.shape[0]:
            raise ValueError("prebuilt index does not match ref_emb")
        cache[b"all"] = (index, np.arange(ref_emb.shape[0]))
    results = {}
    for name, lab in levels.items():
        valid = _valid_mask(lab, name)
        idx_obj, sub = _index_for(ref_emb, valid, cache, index_kwargs)
        nbrs, sims = idx_obj.query(query_emb, k)
        cats, codes = np.unique(lab[valid].astype(str) if _mixed(lab[valid]) else lab[valid], return_inverse=True)
        pred, conf, probs = _vote(codes[nbrs], sims, len(cats))
        results[name] = _finish(pred, conf, probs, cats, sub[nbrs], sims, threshold, unknown_label)
    return results if multi else results[None]


def _mixed(values) -> bool:
    return len({type(v) for v in values[:1000]}) > 1


class ReferenceIndexes:
    """Neighbour indexes of one reference embedding, one per subset of its cells, each built once.

    Hierarchical mapping searches the whole reference (Level 1) and, per predicted group, only
    the reference cells of that group (Level 2, ...).  Keep one ``ReferenceIndexes`` per
    reference and pass it as ``index_cache`` to :func:`hierarchical_knn_vote` /
    :func:`transfer_labels`: query batches (or several queries) mapped onto the same reference
    then reuse each group's index instead of rebuilding it on every call.

    ref_emb : (n_ref, d) reference embedding; index_kwargs : passed to ``NeighborIndex``.
    ``n_built`` counts the indexes built so far.
    """

    def __init__(self, ref_emb, **index_kwargs):
        self.ref_emb = np.asarray(ref_emb)
        if self.ref_emb.ndim != 2:
            raise ValueError(f"ref_emb must be 2-D, got shape {self.ref_emb.shape}")
        self.index_kwargs = dict(index_kwargs)
        self._cache: dict = {}
        self.n_built = 0

    @property
    def n_ref(self) -> int:
        return self.ref_emb.shape[0]

    def check(self, ref_emb) -> None:
        """Raise if ``ref_emb`` is not the embedding these indexes were built on."""
        ref_emb = np.asarray(ref_emb)
        if ref_emb is not self.ref_emb and (ref_emb.shape != self.ref_emb.shape
                                            or not np.array_equal(ref_emb, self.ref_emb)):
            raise ValueError(f"index_cache was built on a different reference embedding "
                             f"{self.ref_emb.shape}, got {ref_emb.shape}; build one ReferenceIndexes per reference")

    def get(self, key, rows: np.ndarray | None = None) -> NeighborIndex:
        """Index over reference rows ``rows`` (sorted int array; None = all), cached under ``key``.

        A key seen before must come with the same rows (e.g. unchanged labels), else ValueError.
        """
        rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if key in self._cache:
            idx, cached_rows = self._cache[key]
            same = (cached_rows is None and rows is None) or (
                cached_rows is not None and rows is not None and np.array_equal(cached_rows, rows))
            if not same:
                raise ValueError(f"index_cache entry {key!r} was built on other reference cells "
                                 f"(labels changed?); build a new ReferenceIndexes")
            return idx
        idx = NeighborIndex(self.ref_emb if rows is None else self.ref_emb[rows], **self.index_kwargs)
        self._cache[key] = (idx, rows)
        self.n_built += 1
        return idx


def hierarchical_knn_vote(ref_emb, ref_labels, query_emb, levels=None, k: int = 5,
                          threshold: float | None = None, *, unknown_label: str = UNKNOWN,
                          index_cache: ReferenceIndexes | None = None, **index_kwargs):
    """Coarse-to-fine mapping (paper's COVID analysis).

    Level 1 votes over the whole reference; each next level votes only among
    reference cells whose previous-level label equals the query's predicted
    previous-level label.  Queries rejected (``Unknown``) at a level stay
    ``Unknown`` at all finer levels.  Groups with fewer than k reference cells
    use all of them (with a warning).

    ref_labels : DataFrame or dict of label columns (n_ref,) each.
    levels : ordered coarse->fine level names (default: column/key order).
    index_cache : optional :class:`ReferenceIndexes` on ``ref_emb``; each group's index is
        built on first use and reused by later calls (``index_kwargs`` are then ignored).
    Returns dict {level: VoteResult}; probs columns are the level's global categories.
    """
    threshold = _check_threshold(threshold)
    ref_emb = np.asarray(ref_emb)
    query_emb = np.asarray(query_emb)
    if index_cache is None:
        index_cache = ReferenceIndexes(ref_emb, **index_kwargs)
    else:
        index_cache.check(ref_emb)
    lv, _ = _label_levels(ref_labels, ref_emb.shape[0])
    levels = list(lv) if levels is None else list(levels)
    for name in levels:
        if name not in lv:
            raise KeyError(f"label level {name!r} not found; available: {list(lv)}")
    if len(levels) < 1:
        raise ValueError("need at least one level")
    out = {levels[0]: knn_vote(ref_emb, lv[levels[0]], query_emb, k, threshold,
                               unknown_label=unknown_label, index=index_cache.get(("all",)),
                               **index_cache.index_kwargs)}
    nq = query_emb.shape[0]
    for parent, child in zip(levels[:-1], levels[1:]):
        plab = lv[parent]
        clab = lv[child]
        cvalid = _valid_mask(clab, child)
        cats, codes_all = np.unique(clab[cvalid].astype(str) if _mixed(clab[cvalid]) else clab[cvalid],
                                    return_inverse=True)
        codes = np.full(clab.shape[0], -1, np.int64)
        codes[cvalid] = codes_all
        kk = min(k, ref_emb.shape[0])
        nbrs = np.full((nq, kk), -1, np.int64)
        sims = np.zeros((nq, kk), np.float32)
        ppred = out[parent].labels
        for g in pd.unique(ppred[ppred != unknown_label]):
            qsel = np.flatnonzero(ppred == g)
            rsel = np.flatnonzero((plab == g) & cvalid)
            if rsel.size == 0:
                warnings.warn(f"no labelled {child!r} reference cells in {parent!r} group {g!r}; "
                              f"{qsel.size} queries get {unknown_label!r}", UserWarning, stacklevel=2)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # k clamp warned once below
                group_index = index_cache.get(("group", parent, g, child), rsel)
                i, s = group_index.query(query_emb[qsel], k)
            if rsel.size < k:
                warnings.warn(f"{parent!r} group {g!r} has {rsel.size} < k={k} labelled {child!r} "
                              f"reference cells; using all of them", UserWarning, stacklevel=2)
            nbrs[qsel, :i.shape[1]] = rsel[i]
            sims[qsel, :i.shape[1]] = s
        nb_codes = np.where(nbrs >= 0, codes[np.maximum(nbrs, 0)], -1)
        pred, conf, probs = _vote(nb_codes, sims, len(cats))
        out[child] = _finish(pred, conf, probs, cats, nbrs, sims, threshold, unknown_label)
    return out


def transfer_labels(ref_adata, query_adata, label_keys, use_rep: str = "X_concerto", k: int = 5,
                    threshold: float | None = None, hierarchical=None,
                    key_added: str = "predicted_label", *, unknown_label: str = UNKNOWN, copy: bool = False,
                    index_cache: ReferenceIndexes | None = None, **index_kwargs):
    """AnnData front end of :func:`knn_vote` / :func:`hierarchical_knn_vote` (in place on query).

    label_keys : obs column name or list of them (coarse->fine when hierarchical).
    use_rep : ``obsm`` key holding embeddings (``"X"`` uses ``.X``) in both objects.
    hierarchical : None/False (each level independently over the whole reference),
        True (hierarchical in ``label_keys`` order) or an ordered list of keys.
    index_cache : hierarchical only: a :class:`ReferenceIndexes` on the reference's ``use_rep``,
        reused across calls so each group's neighbour index is built once per reference.
    Writes to ``query_adata``:
      single level: ``obs[key_added]``, ``obs['conf_score']``, ``obsm['concerto_label_probs']``;
      several: ``obs[f'{key_added}_{level}']``, ``obs[f'conf_score_{level}']``,
        ``obsm[f'concerto_label_probs_{level}']``;
      ``uns['concerto']['label_categories']`` (list, or dict level -> list): probs columns;
      ``uns['concerto']['label_transfer']``: k, threshold, levels, use_rep, hierarchical, method;
      the same provenance (plus the categories) in ``uns[key_added]``.
    Returns the AnnData written to when ``copy=True`` (the query is left alone), else the
    dict {level: VoteResult} (as ``Concerto.embed`` and ``ConcertoClassifier.annotate``).
    """
    keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
    if not keys:
        raise ValueError("label_keys is empty")
    for key in keys:
        if key not in ref_adata.obs.columns:
            raise KeyError(f"label column {key!r} not in ref_adata.obs; available: {list(ref_adata.obs.columns)}")
    ref_emb = _get_rep(ref_adata, use_rep, "ref_adata")
    q_emb = _get_rep(query_adata, use_rep, "query_adata")
    labels = {key: ref_adata.obs[key].to_numpy(dtype=object) for key in keys}
    if copy:
        query_adata = query_adata.copy()
    if hierarchical:
        order = keys if hierarchical is True else list(hierarchical)
        for lvl in order:
            if lvl not in labels:
                if lvl not in ref_adata.obs.columns:
                    raise KeyError(f"label level {lvl!r} not in ref_adata.obs")
                labels[lvl] = ref_adata.obs[lvl].to_numpy(dtype=object)
        res = hierarchical_knn_vote(ref_emb, labels, q_emb, order, k, threshold,
                                    unknown_label=unknown_label, index_cache=index_cache, **index_kwargs)
        keys = order
    else:
        if index_cache is not None:
            raise ValueError("index_cache is for hierarchical=True; flat voting takes a prebuilt index via knn_vote")
        res = knn_vote(ref_emb, labels, q_emb, k, threshold, unknown_label=unknown_label, **index_kwargs)
    single = len(keys) == 1
    cats_out = {}
    for key in keys:
        r = res[key]
        sfx = "" if single else f"_{key}"
        cats = list(r.categories) + ([unknown_label] if unknown_label not in r.categories else [])
        query_adata.obs[key_added + sfx] = pd.Categorical(r.labels, categories=cats)
        query_adata.obs["conf_score" + sfx] = r.conf_score
        query_adata.obsm["concerto_label_probs" + sfx] = r.probs.astype(np.float32)
        cats_out[key] = [str(c) for c in r.categories]
    meta = dict(query_adata.uns.get("concerto", {}))
    meta["label_categories"] = cats_out[keys[0]] if single else cats_out
    meta["label_transfer"] = {"k": int(k), "threshold": threshold, "levels": keys, "use_rep": use_rep,
                              "hierarchical": bool(hierarchical), "key_added": key_added,
                              "unknown_label": unknown_label,
                              "method": str(index_kwargs.get("method", "auto"))}
    query_adata.uns["concerto"] = meta
    query_adata.uns[key_added] = {"label_categories": meta["label_categories"], **meta["label_transfer"]}
    return query_adata if copy else res


def _get_rep(adata, use_rep, what):
    if use_rep == "X":
        x = adata.X
        return x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    if use_rep not in adata.obsm:
        raise KeyError(f"{what}.obsm has no {use_rep!r}; available: {list(adata.obsm.keys())}")
    return np.asarray(adata.obsm[use_rep])


def apply_rejection(probs, categories, threshold: float, unknown_label: str = UNKNOWN) -> np.ndarray:
    """NOTA rejection on a probability matrix.

    probs : (n_cells, n_categories); categories : column labels.
    Returns (n_cells,) object array: argmax label (ties -> first column), or
    ``unknown_label`` where the max probability is < ``threshold`` (strict).
    """
    threshold = _check_threshold(threshold)
    if threshold is None:
        raise ValueError("threshold must be given")
    p = np.asarray(probs, dtype=np.float64)
    cats = np.asarray(categories, dtype=object)
    if p.ndim != 2 or p.shape[1] != cats.shape[0]:
        raise ValueError(f"probs shape {p.shape} does not match {cats.shape[0]} categories")
    out = cats[p.argmax(axis=1)].astype(object) if p.shape[1] else np.full(p.shape[0], unknown_label, object)
    conf = p.max(axis=1) if p.shape[1] else np.zeros(p.shape[0])
    out[conf < threshold] = unknown_label
    return out


def confidence_distributions(conf_valid, conf_unseen, bins=20, range=(0.0, 1.0), density: bool = True):
    """Histogram curves of confidence scores for the paper's Fig 2d.

    conf_valid : scores of validation cells whose type is in the reference;
    conf_unseen : scores of cells of a type absent from the reference.
    Returns DataFrame (n_bins rows): bin_left, bin_right, bin_center, valid,
    unseen (densities if ``density`` else counts), plus the fraction of each
    set at/above ``bin_left`` (kept as labelled if the threshold were bin_left).
    """
    a = np.asarray(conf_valid, dtype=float)
    b = np.asarray(conf_unseen, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    edges = np.histogram_bin_edges(np.concatenate([a, b]) if a.size + b.size else [0.0], bins=bins, range=range)
    ha, _ = np.histogram(a, edges, density=density and a.size > 0)
    hb, _ = np.histogram(b, edges, density=density and b.size > 0)
    keep_a = np.array([(a >= e).mean() if a.size else np.nan for e in edges[:-1]])
    keep_b = np.array([(b >= e).mean() if b.size else np.nan for e in edges[:-1]])
    return pd.DataFrame({"bin_left": edges[:-1], "bin_right": edges[1:],
                         "bin_center": 0.5 * (edges[:-1] + edges[1:]),
                         "valid": ha, "unseen": hb,
                         "valid_kept_frac": keep_a, "unseen_kept_frac": keep_b})
