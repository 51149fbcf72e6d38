"""Ways of splitting cells into training / validation / test sets, one function per kind.

Every kind returns the same long table, one row per (fold, cell) that takes part in the fold:

    fold   name of the fold (a path component: letters, digits, ``_``, ``-``, ``.``)
    dataset  configured dataset the cell comes from
    cell   obs name in that dataset
    role   ``train`` / ``valid`` / ``test`` (:mod:`concerto_workflow.columns`)

Nothing is fitted here; preprocessing later fits genes, scaling and models on the ``train``
rows of each fold only. The kinds (config ``splits.<name>.kind``):

``all``            every cell is a training cell (integration, clustering)
``holdout``        cells with ``obs[key]`` in ``values`` are the test set (query), the rest train
``cross_dataset``  the experiment's dataset trains, ``query_dataset`` is the test set
``kfold``          stratified k-fold by label, separately within each value of ``group`` (or
                   the listed ``values`` of it); ``max_folds`` runs only the first folds
``leave_one_out``  each value of ``key`` is the test set once; training cells are bootstrap-resampled
``label_mask``     cells of ``remove``d labels are the test set (unseen types); a stratified
                   ``valid_fraction`` of the other cells is held out as validation

Any kind takes an optional ``cells`` filter applied before splitting (:func:`select_cells`):
``keep: {key, values}`` (only those cells take part, e.g. the 10x subset of PBMC 45k) and
``drop: {label, values, except_key, except_values}`` (cells of those labels leave the study
except where ``except_key`` is in ``except_values``: the paper's over-correction test keeps
beta cells in CEL-seq2 only). Dropped cells are absent from every fold's table.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .columns import CELL_TYPE, ROLE, TEST, TRAIN, VALID

SPLIT_COLUMNS = ["fold", "dataset", "cell", ROLE]
KINDS = ("all", "holdout", "cross_dataset", "kfold", "leave_one_out", "label_mask")


class SplitError(ValueError):
    """A split that cannot be built from this data (message names the key and the values)."""


def safe_name(value) -> str:
    """A label usable in a file path: ``'10x Chromium (v2) A'`` -> ``'10x_Chromium_v2_A'``."""
    s = re.sub(r"[^A-Za-z0-9.-]+", "_", str(value)).strip("_")
    return s or "x"


def fold_names(split: dict) -> list[str] | None:
    """Fold names known from the config alone, or None when they depend on the data
    (k-fold within groups, leave-one-out without listed values)."""
    kind = split["kind"]
    if kind in ("all", "holdout", "cross_dataset", "label_mask"):
        return [{"all": "all", "holdout": "holdout", "cross_dataset": "cross", "label_mask": "mask"}[kind]]
    if kind == "kfold":
        return None if split.get("group") else [f"f{i}" for i in range(n_kfolds(split))]
    if kind == "leave_one_out":
        values = split.get("values") or []
        if not values:
            return None
        return [_loo_fold(v, b, split.get("bootstraps", 0)) for v in values
                for b in range(max(1, split.get("bootstraps", 0)))]
    raise SplitError(f"unknown split kind {kind!r}; allowed: {KINDS}")


def n_kfolds(split: dict) -> int:
    """Folds a kfold split runs: ``k``, or the first ``max_folds`` of them (each still tests 1/k
    of the cells, e.g. one 80/20 reference/query split from k 5, max_folds 1)."""
    k, most = int(split["k"]), int(split.get("max_folds") or 0)
    if most < 0 or most > k:
        raise SplitError(f"kfold split: max_folds must be in 0..k ({k}), got {most}")
    return most or k


def _loo_fold(value, b: int, bootstraps: int) -> str:
    return safe_name(value) + (f"_b{b}" if bootstraps else "")


def fold_group(fold: str) -> str:
    """What a fold holds out, without its repeat: ``'Drop-seq_b2'`` (leave-one-out bootstrap)
    -> ``'Drop-seq'``, ``'inDrops_f3'`` (k-fold within a group) -> ``'inDrops'``; other names
    unchanged. Figures group repeats by it (config ``x: fold_group``)."""
    return re.sub(r"_[bf]\d+$", "", str(fold))


def _rows(fold: str, dataset: str, cells, role) -> pd.DataFrame:
    cells = np.asarray(cells).astype(str)
    return pd.DataFrame({"fold": fold, "dataset": dataset, "cell": cells,
                         ROLE: np.broadcast_to(np.asarray(role, dtype=object), cells.shape)})


def _column(obs: pd.DataFrame, key: str, what: str) -> pd.Series:
    if key not in obs:
        raise SplitError(f"{what}: obs column {key!r} not in the data; columns: {list(obs.columns)}")
    return obs[key].astype(str)


def _check_values(col: pd.Series, values, what: str) -> None:
    present = set(col)
    missing = [v for v in values if str(v) not in present]
    if missing:
        raise SplitError(f"{what}: values {missing} not in the data; present: {sorted(present)}")


def select_cells(obs: pd.DataFrame, cells: dict | None) -> pd.DataFrame:
    """The rows of ``obs`` that take part in the split (see the module docstring)."""
    if not cells:
        return obs
    keep = np.ones(len(obs), dtype=bool)
    if cells.get("keep"):
        k = cells["keep"]
        col = _column(obs, k["key"], "split cells.keep")
        _check_values(col, k["values"], f"split cells.keep on {k['key']!r}")
        keep &= col.isin([str(v) for v in k["values"]]).to_numpy()
    if cells.get("drop"):
        d = cells["drop"]
        labels = _column(obs, d.get("label", CELL_TYPE), "split cells.drop")
        _check_values(labels, d["values"], f"split cells.drop on {d.get('label', CELL_TYPE)!r}")
        gone = labels.isin([str(v) for v in d["values"]]).to_numpy()
        if d.get("except_key"):
            col = _column(obs, d["except_key"], "split cells.drop.except_key")
            _check_values(col, d.get("except_values", []), f"split cells.drop on {d['except_key']!r}")
            gone &= ~col.isin([str(v) for v in d.get("except_values", [])]).to_numpy()
        keep &= ~gone
    if not keep.any():
        raise SplitError(f"split cells filter {cells} leaves no cells")
    return obs[keep]


def split_all(obs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    return _rows("all", dataset, obs.index, TRAIN)


def split_holdout(obs: pd.DataFrame, dataset: str, *, key: str, values) -> pd.DataFrame:
    values = [str(v) for v in np.atleast_1d(values)]
    col = _column(obs, key, "holdout split")
    _check_values(col, values, f"holdout split on {key!r}")
    is_test = col.isin(values).to_numpy()
    if is_test.all():
        raise SplitError(f"holdout split on {key!r} = {values}: no training cells left")
    return _rows("holdout", dataset, obs.index, np.where(is_test, TEST, TRAIN))


def split_cross_dataset(obs: pd.DataFrame, dataset: str, query_obs: pd.DataFrame,
                        query_dataset: str) -> pd.DataFrame:
    return pd.concat([_rows("cross", dataset, obs.index, TRAIN),
                      _rows("cross", query_dataset, query_obs.index, TEST)], ignore_index=True)


def _stratified_folds(labels: np.ndarray, k: int, seed: int, what: str) -> np.ndarray:
    """Fold index (0..k-1) per cell, stratified by label (labels rarer than k spread round-robin)."""
    from sklearn.model_selection import StratifiedKFold

    if len(labels) < k:
        raise SplitError(f"{what}: {len(labels)} cells cannot make {k} folds")
    fold = np.empty(len(labels), dtype=int)
    counts = pd.Series(labels).value_counts()
    rare = np.isin(labels, counts.index[counts < k])
    rng = np.random.default_rng(seed)
    if rare.any():  # StratifiedKFold refuses classes with fewer than k members
        idx = rng.permutation(np.flatnonzero(rare))
        fold[idx] = np.arange(len(idx)) % k
    common = np.flatnonzero(~rare)
    if len(common):
        if len(common) < k:
            fold[common] = rng.permutation(len(common)) % k
        else:
            skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            for i, (_, test) in enumerate(skf.split(np.zeros(len(common)), labels[common])):
                fold[common[test]] = i
    return fold


def split_kfold(obs: pd.DataFrame, dataset: str, *, k: int, seed: int, label: str = CELL_TYPE,
                group: str | None = None, values=None, max_folds: int = 0) -> pd.DataFrame:
    """k folds per group: fold i tests the i-th stratified part of the group and trains on the
    rest of the same group (the paper's 5-fold CV within each batch). ``values``: the groups
    to run (default every value of ``group``); ``max_folds``: run only folds 0..max_folds-1."""
    if k < 2:
        raise SplitError(f"kfold split: k must be >= 2, got {k}")
    labels = _column(obs, label, "kfold split").to_numpy()
    groups = _column(obs, group, "kfold split").to_numpy() if group else np.full(len(obs), "")
    run = sorted(set(groups))
    if values:
        if not group:
            raise SplitError("kfold split: values select groups, so they need a group column")
        _check_values(pd.Series(groups), values, f"kfold split on group {group!r}")
        run = [str(v) for v in values]
    out = []
    for g in run:
        members = np.flatnonzero(groups == g)
        fold = _stratified_folds(labels[members], k, seed, f"kfold split, group {g!r}")
        for i in range(n_kfolds({"k": k, "max_folds": max_folds})):
            name = f"{safe_name(g)}_f{i}" if group else f"f{i}"
            out.append(_rows(name, dataset, obs.index[members],
                             np.where(fold == i, TEST, TRAIN)))
    return pd.concat(out, ignore_index=True)


def split_leave_one_out(obs: pd.DataFrame, dataset: str, *, key: str, seed: int, bootstraps: int = 0,
                        values=None) -> pd.DataFrame:
    """Each value of ``key`` is the test set once. With ``bootstraps`` > 0, each repeat draws
    the training cells with replacement (as many draws as training cells) and keeps every
    distinct drawn cell once (about 63% of them): a resample that never duplicates obs names."""
    col = _column(obs, key, "leave_one_out split").to_numpy()
    present = sorted(set(col))
    values = [str(v) for v in values] if values else present
    _check_values(pd.Series(col), values, f"leave_one_out split on {key!r}")
    if len(present) < 2:
        raise SplitError(f"leave_one_out split on {key!r}: needs >= 2 values, found {present}")
    out = []
    for vi, v in enumerate(values):
        test = np.flatnonzero(col == v)
        train = np.flatnonzero(col != v)
        for b in range(max(1, bootstraps)):
            keep = train
            if bootstraps:
                rng = np.random.default_rng([seed, vi, b])
                keep = np.unique(rng.choice(train, size=len(train), replace=True))
            fold = _loo_fold(v, b, bootstraps)
            out.append(_rows(fold, dataset, obs.index[keep], TRAIN))
            out.append(_rows(fold, dataset, obs.index[test], TEST))
    return pd.concat(out, ignore_index=True)


def split_label_mask(obs: pd.DataFrame, dataset: str, *, remove, seed: int, label: str = CELL_TYPE,
                     valid_fraction: float = 0.2) -> pd.DataFrame:
    """Unseen-type rejection (paper Fig 2d): ``remove``d labels never reach training."""
    remove = [str(v) for v in np.atleast_1d(remove)]
    labels = _column(obs, label, "label_mask split")
    _check_values(labels, remove, f"label_mask split on {label!r}")
    if not 0 < valid_fraction < 1:
        raise SplitError(f"label_mask split: valid_fraction must be in (0, 1), got {valid_fraction}")
    masked = labels.isin(remove).to_numpy()
    if masked.all():
        raise SplitError(f"label_mask split: removing {remove} leaves no training cells")
    known = np.flatnonzero(~masked)
    role = np.full(len(obs), TEST, dtype=object)
    role[known] = TRAIN
    k = max(2, int(round(1 / valid_fraction)))
    fold = _stratified_folds(labels.to_numpy()[known], k, seed, "label_mask split")
    # fold 0 of a 1/valid_fraction-fold stratified partition is the validation set
    n_valid = int(round(valid_fraction * len(known)))
    order = np.argsort(fold, kind="stable")
    role[known[order[:n_valid]]] = VALID
    return _rows("mask", dataset, obs.index, role)


def make_split(split: dict, obs: pd.DataFrame, dataset: str, *, seed: int,
               query_obs: pd.DataFrame | None = None, query_dataset: str | None = None) -> pd.DataFrame:
    """Build the split table for a config ``splits.<name>`` entry."""
    kind = split["kind"]
    obs = select_cells(obs, split.get("cells"))
    if kind == "all":
        out = split_all(obs, dataset)
    elif kind == "holdout":
        out = split_holdout(obs, dataset, key=split["key"], values=split["values"])
    elif kind == "cross_dataset":
        if query_obs is None:
            raise SplitError("cross_dataset split needs the query dataset's cells")
        out = split_cross_dataset(obs, dataset, query_obs, query_dataset or split["query_dataset"])
    elif kind == "kfold":
        out = split_kfold(obs, dataset, k=split["k"], seed=seed, label=split.get("label", CELL_TYPE),
                          group=split.get("group") or None, values=split.get("values") or None,
                          max_folds=split.get("max_folds", 0))
    elif kind == "leave_one_out":
        out = split_leave_one_out(obs, dataset, key=split["key"], seed=seed,
                                  bootstraps=split.get("bootstraps", 0), values=split.get("values"))
    elif kind == "label_mask":
        out = split_label_mask(obs, dataset, remove=split["remove"], seed=seed,
                               label=split.get("label", CELL_TYPE),
                               valid_fraction=split.get("valid_fraction", 0.2))
    else:
        raise SplitError(f"unknown split kind {kind!r}; allowed: {KINDS}")
    expected = fold_names(split)
    if expected is not None and sorted(set(out["fold"])) != sorted(expected):
        raise SplitError(f"split produced folds {sorted(set(out['fold']))}, config implies {expected}")
    return out[SPLIT_COLUMNS]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Cells per fold and role (for logs and the split figure)."""
    return table.groupby(["fold", ROLE]).size().unstack(fill_value=0)
