"""Reading modalities out of AnnData and cutting mini-batches for the network."""

from __future__ import annotations

import math
import queue
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .encoding import as_csr, flat_batch


def normalise_modalities(modalities, layer=None) -> dict:
    """Turn the user's ``modalities`` argument into an ordered dict name -> spec."""
    if modalities is None:
        return {"rna": f"layer:{layer}" if layer else "X"}
    if isinstance(modalities, (list, tuple)):
        raise TypeError("modalities must be a dict name -> 'X' | 'layer:<name>' | 'obsm:<key>' | AnnData")
    if not modalities:
        raise ValueError("modalities is empty; give at least one, e.g. {'rna': 'X'}")
    out = {}
    for name, spec in modalities.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"modality name {name!r} must be a valid identifier (e.g. 'rna', 'protein')")
        if spec is None:
            spec = "X"
        out[name] = spec
    return out


def spec_to_json(spec):
    return spec if isinstance(spec, str) else "adata"


def read_modality(adata, name: str, spec):
    """Return (CSR float32 matrix, feature names) of one modality, validated."""
    if not isinstance(spec, str):  # a second AnnData with the same cells
        other = spec
        if not hasattr(other, "obs_names"):
            raise TypeError(f"modality {name!r}: expected 'X', 'layer:..', 'obsm:..' or an AnnData, got {type(spec)}")
        if other.n_obs != adata.n_obs or not np.array_equal(np.asarray(other.obs_names), np.asarray(adata.obs_names)):
            raise ValueError(f"modality {name!r}: the second AnnData must have the same cells (obs_names, order) as the first")
        return as_csr(other.X, f"modality {name!r} X"), np.asarray(other.var_names).astype(str)
    if spec == "X":
        return as_csr(adata.X, "adata.X"), np.asarray(adata.var_names).astype(str)
    kind, _, rest = spec.partition(":")
    if kind == "layer":
        if rest not in adata.layers:
            raise KeyError(f"modality {name!r}: layer {rest!r} not in adata.layers (have {list(adata.layers)})")
        return as_csr(adata.layers[rest], f"adata.layers[{rest!r}]"), np.asarray(adata.var_names).astype(str)
    if kind == "obsm":
        key, _, names_key = rest.partition(":")
        if key not in adata.obsm:
            raise KeyError(f"modality {name!r}: obsm key {key!r} not in adata.obsm (have {list(adata.obsm)})")
        mat = adata.obsm[key]
        if isinstance(mat, pd.DataFrame):
            names = np.asarray(mat.columns).astype(str)
            mat = mat.to_numpy()
        else:
            names_key = names_key or f"{key}_names"
            if names_key not in adata.uns:
                raise KeyError(
                    f"modality {name!r}: feature names of obsm[{key!r}] not found; store a DataFrame in obsm, "
                    f"or the names in adata.uns[{names_key!r}], or give the spec 'obsm:{key}:<uns key>'"
                )
            names = np.asarray(adata.uns[names_key]).astype(str)
        X = as_csr(mat, f"adata.obsm[{key!r}]")
        if len(names) != X.shape[1]:
            raise ValueError(f"modality {name!r}: {len(names)} feature names for {X.shape[1]} columns")
        return X, names
    raise ValueError(f"modality {name!r}: unknown spec {spec!r}; use 'X', 'layer:<name>', 'obsm:<key>' or an AnnData")


@dataclass
class CellInputs:
    """Aligned inputs of a set of cells: one CSR matrix per modality plus source slots."""

    matrices: dict  # name -> CSR (n_cells, vocab size), columns in vocabulary order
    source: np.ndarray  # (n_cells,) int32 source slot
    reports: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return len(self.source)

    def batch(self, rows: np.ndarray, modalities=None) -> dict:
        """Numpy mini-batch dict for the network (see :mod:`concerto_core.network`)."""
        out = {"source": self.source[rows]}
        for m in modalities or self.matrices:
            idx, val, row, length = flat_batch(self.matrices[m], rows)
            out[f"{m}_idx"], out[f"{m}_val"], out[f"{m}_row"], out[f"{m}_len"] = idx, val, row, length
        return out

    def iter_epoch(self, epoch: int, seed: int, batch_size: int, modalities=None, by_source: bool = False):
        """Shuffled mini-batches of one epoch; every cell exactly once, none dropped.

        ``by_source=False``: ``ceil(n / batch_size)`` near-equal batches of mixed sources.
        ``by_source=True``: each batch holds cells of one source only (each source split into
        near-equal batches, batch order shuffled), so BatchNorm statistics and contrastive
        negatives come from a single source.
        """
        rng = np.random.default_rng([seed, epoch])
        groups = [np.arange(self.n_cells)]
        if by_source:
            groups = [np.flatnonzero(self.source == s) for s in np.unique(self.source)]
        batches = []
        for cells in groups:
            n = len(cells)
            steps = max(1, math.ceil(n / batch_size))
            if n < 2 * steps:  # keep >= 2 cells per batch for the contrastive loss
                steps = max(1, n // 2)
            batches.extend(np.array_split(cells[rng.permutation(n)], steps))
        order = rng.permutation(len(batches)) if by_source else np.arange(len(batches))
        for i in order:
            yield self.batch(batches[i], modalities)

    def iter_ordered(self, batch_size: int, modalities=None, rows=None):
        """(row indices, batch) in order, for embedding and statistics."""
        rows = np.arange(self.n_cells) if rows is None else np.asarray(rows)
        for i in range(0, len(rows), batch_size):
            part = rows[i : i + batch_size]
            yield part, self.batch(part, modalities)


#: Source-aware BatchNorm needs each source's mean and variance; one cell has no variance,
#: and BatchNorm would then map every cell of that source to the same constant.
MIN_CELLS_PER_SOURCE = 2


def check_training_cells(matrices: dict, source: np.ndarray, sources: list, batch_key) -> None:
    """Refuse training data on which Concerto can only learn constant embeddings.

    ``matrices``: modality -> CSR (cells x features); ``source``: (n_cells,) slot codes into
    ``sources``. Raises ValueError naming the problem: a modality without any non-zero
    value, cells that are all identical, sources with all-zero cells only, or sources with
    fewer than :data:`MIN_CELLS_PER_SOURCE` cells (e.g. a cell barcode passed as batch_key).
    """
    n_cells = len(source)
    counts = np.bincount(source, minlength=len(sources))
    small = [s for s, c in zip(sources, counts) if 0 < c < MIN_CELLS_PER_SOURCE]
    if small:
        raise ValueError(
            f"batch_key {batch_key!r}: {len(small)} of {len(sources)} sources have fewer than {MIN_CELLS_PER_SOURCE} "
            f"cells (e.g. {[str(s) for s in small[:5]]}). Source-aware BatchNorm needs each source's mean and variance; "
            f"a one-cell source would embed as a constant. Is {batch_key!r} really the batch column (not a cell "
            "barcode)? Merge or drop the small sources")
    for m, X in matrices.items():
        if X.nnz == 0:
            raise ValueError(f"modality {m!r}: every value is zero in all {n_cells} training cells; nothing to learn from "
                             "(wrong layer, or an empty/filtered matrix?)")
        if _all_rows_identical(X):
            raise ValueError(f"modality {m!r}: all {n_cells} training cells have identical values (zero variance in "
                             "every feature); nothing to learn from")
        nnz_per_source = np.bincount(source, weights=np.diff(X.indptr), minlength=len(sources))
        empty = [s for s, c, n in zip(sources, nnz_per_source, counts) if c == 0 and n > 0]
        if empty:
            raise ValueError(f"modality {m!r}: every cell of source(s) {[str(s) for s in empty[:5]]} is all zero; "
                             "their BatchNorm statistics would be degenerate. Drop those cells")


def _all_rows_identical(X) -> bool:
    """True when every row of a CSR matrix (sorted indices, no explicit zeros) equals the
    first; O(nnz) comparisons, and only when all rows have the same number of entries."""
    lengths = np.diff(X.indptr)
    if (lengths != lengths[0]).any():
        return False
    n, k = X.shape[0], int(lengths[0])
    if k == 0:
        return True
    return bool((X.indices.reshape(n, k) == X.indices[:k]).all() and (X.data.reshape(n, k) == X.data[:k]).all())


def check_embeddings(z: np.ndarray, what: str = "embedding") -> None:
    """Refuse NaN/infinite or all-zero embeddings; warn about individual all-zero cells.

    An L2-normalised embedding row is zero only when the network's output for that cell was
    all zero (dead ReLUs), which nearest-neighbour search cannot place.
    """
    finite = np.isfinite(z).all(axis=1)
    if not finite.all():
        raise FloatingPointError(f"the {what} has NaN/infinite values for {int((~finite).sum())} of {len(z)} cells; "
                                 "the model is broken (diverged training or corrupt weights)")
    zero = ~z.any(axis=1)
    if len(z) and zero.all():
        raise ValueError(f"the {what} is exactly zero for every one of the {len(z)} cells: the model maps these cells "
                         "to a constant (degenerate training data, or query values unlike the training values)")
    if zero.any():
        warnings.warn(f"the {what} is exactly zero for {int(zero.sum())} of {len(z)} cells (the network's output "
                      "for them is all zero); their neighbours are meaningless", UserWarning, stacklevel=3)


def slice_cells(batch: dict, start: int, stop: int) -> dict:
    """Cells [start, stop) of a flat batch (per-cell arrays sliced, per-entry arrays re-indexed)."""
    out = {"source": batch["source"][start:stop]}
    for key in batch:
        if key.endswith("_len"):
            m = key[: -len("_len")]
            row = batch[f"{m}_row"]
            lo, hi = np.searchsorted(row, [start, stop])  # rows are sorted
            out[f"{m}_idx"] = batch[f"{m}_idx"][lo:hi]
            out[f"{m}_val"] = batch[f"{m}_val"][lo:hi]
            out[f"{m}_row"] = (row[lo:hi] - start).astype(np.int32)
            out[key] = batch[key][start:stop]
    return out


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(iterator, depth: int = 2, convert=None):
    """Yield the items of ``iterator`` computed ``depth`` ahead in a background thread.

    Reading shards and cutting batches (numpy, h5py: mostly outside the GIL) then overlaps
    the network's work. On 2 cores this streams ~1.5x faster than ``tf.data``'s
    ``from_generator``. ``convert`` is applied in the thread too. An exception in the
    thread is raised in the consumer; a consumer that stops early stops the thread.
    """
    items = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put(convert(item) if convert else item):
                    return
            put(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put(_Failure(error))

    thread = threading.Thread(target=work, name="concerto-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
