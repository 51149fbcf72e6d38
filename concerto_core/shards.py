"""Streaming input for references larger than memory: cells read from sharded ``.h5ad`` files.

On-disk format (``concerto-shards`` version 1, written by :func:`write_shards` or by the
workflow's scsim-scale generator)::

    <dir>/shards.json     {"format": "concerto-shards", "version": 1, "n_cells": N,
                           "var_names": [...], "obs_columns": [...], "values": "counts"|"lognorm",
                           "shards": [{"file": "part-00000.h5ad", "n_cells": n}, ...]}
    <dir>/part-00000.h5ad ordinary AnnData files, CSR ``X``

Training reads blocks of ``block_cells`` consecutive cells (a row slice of the CSR arrays,
read with h5py) from randomly chosen shards, pools ``window_blocks`` blocks, shuffles the
pooled cells and cuts mini-batches. Memory therefore depends on the window, never on the
number of cells, while every cell is still seen exactly once per epoch and batches mix cells
of different shards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .encoding import GeneVocabulary, as_csr, encode_sources, flat_batch

FORMAT = "concerto-shards"
VERSION = 1
TRANSFORMS = ("auto", "none", "log1p_cp10k")


def log1p_cp10k(X: sp.csr_matrix) -> sp.csr_matrix:
    """Normalise each cell to 10,000 counts and take log(1 + x) (Methods), row by row."""
    X = X.astype(np.float32, copy=True)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    X.data *= np.repeat(scale, np.diff(X.indptr)).astype(np.float32)
    np.log1p(X.data, out=X.data)
    return X


def read_manifest(path) -> dict:
    path = Path(path)
    manifest_file = path / "shards.json"
    if not manifest_file.exists():
        raise FileNotFoundError(f"{path} is not a sharded dataset: shards.json is missing (incomplete write?)")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_file}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if manifest.get("version", 0) > VERSION:
        raise ValueError(f"{manifest_file}: version {manifest['version']} is newer than supported ({VERSION})")
    for shard in manifest["shards"]:
        if not (path / shard["file"]).exists():
            raise FileNotFoundError(f"shard {shard['file']} listed in {manifest_file} is missing")
    return manifest


def _read_obs_column(fh: h5py.File, column: str) -> np.ndarray:
    from anndata.io import read_elem

    if column not in fh["obs"]:
        raise KeyError(f"obs column {column!r} not found in shard {fh.filename} (have {list(fh['obs'].keys())})")
    return np.asarray(read_elem(fh["obs"][column])).astype(str)


def write_shards(adata, path, shard_size: int = 100_000, obs_columns=(), values: str = "lognorm") -> Path:
    """Write an AnnData as a sharded dataset (CSR ``X``); ``shards.json`` is written last, atomically."""
    import anndata as ad

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if values not in ("counts", "lognorm"):
        raise ValueError(f"values must be 'counts' or 'lognorm', got {values!r}")
    missing = [c for c in obs_columns if c not in adata.obs]
    if missing:
        raise KeyError(f"obs columns {missing} not in adata.obs")
    shards = []
    for k, start in enumerate(range(0, adata.n_obs, shard_size)):
        part = adata[start : start + shard_size]
        shard = ad.AnnData(as_csr(part.X, "adata.X"), obs=part.obs[list(obs_columns)].copy())
        shard.var_names = adata.var_names
        name = f"part-{k:05d}.h5ad"
        tmp = path / f".{name}.tmp"
        shard.write_h5ad(tmp)
        os.replace(tmp, path / name)
        shards.append({"file": name, "n_cells": shard.n_obs})
    manifest = {"format": FORMAT, "version": VERSION, "n_cells": int(adata.n_obs),
                "var_names": [str(v) for v in adata.var_names], "obs_columns": list(obs_columns),
                "values": values, "shards": shards}
    tmp = path / ".shards.json.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path / "shards.json")
    return path


class ShardedCells:
    """Cells of a sharded dataset, aligned to a vocabulary, streamed in blocks.

    Parameters
    ----------
    path
        Directory with ``shards.json``.
    vocabulary
        :class:`GeneVocabulary` to align to; default: the dataset's own ``var_names``.
    batch_key, sources
        obs column with the source of each cell, and the model's source names
        (default: fitted from the data). Unseen labels get -1.
    transform
        ``'auto'`` (log1p_cp10k when the manifest says ``values: counts``), ``'none'`` or
        ``'log1p_cp10k'``.
    block_cells, window_blocks
        Read unit and number of blocks pooled for shuffling (memory ~ their product).
    """

    modality = "rna"

    def __init__(self, path, vocabulary: GeneVocabulary | None = None, batch_key=None, sources=None,
                 transform: str = "auto", block_cells: int = 8192, window_blocks: int = 8, min_gene_overlap: float = 0.5):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if transform not in TRANSFORMS:
            raise ValueError(f"transform={transform!r}; allowed: {TRANSFORMS}")
        if transform == "auto":
            transform = "log1p_cp10k" if self.manifest.get("values") == "counts" else "none"
        self.transform = transform
        self.block_cells, self.window_blocks = int(block_cells), int(window_blocks)
        self.var_names = np.asarray(self.manifest["var_names"]).astype(str)
        self.vocabulary = vocabulary or GeneVocabulary(self.var_names)
        # Column selection shared by every block (sparse product, as in GeneVocabulary.align).
        probe = sp.csr_matrix((1, len(self.var_names)), dtype=np.float32)
        _, self.report = self.vocabulary.align(probe, self.var_names, min_overlap=min_gene_overlap)
        pos = self.vocabulary.positions(self.var_names)
        found = pos >= 0
        self._select = None
        if not np.array_equal(pos, np.arange(len(self.vocabulary))) or len(self.var_names) != len(self.vocabulary):
            self._select = sp.csr_matrix((np.ones(found.sum(), np.float32), (pos[found], np.flatnonzero(found))),
                                         shape=(len(self.var_names), len(self.vocabulary)))
        self.shard_sizes = np.array([s["n_cells"] for s in self.manifest["shards"]], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.shard_sizes)])
        self.batch_key = batch_key
        if batch_key is not None:
            labels = []
            for shard in self.manifest["shards"]:
                with h5py.File(self.path / shard["file"], "r") as fh:
                    labels.append(_read_obs_column(fh, batch_key))
            labels = pd.Categorical(np.concatenate(labels))
            # Per-cell label codes are kept compactly so unseen sources can be grouped later.
            self.label_codes = labels.codes.astype(np.int32)
            self.label_categories = [str(c) for c in labels.categories]
            category_codes, self.sources = encode_sources(self.label_categories, sources)
            self.source = category_codes[self.label_codes].astype(np.int32)
        else:
            self.sources = list(sources) if sources else ["all"]
            self.source = np.zeros(self.n_cells, np.int32)
            self.label_codes, self.label_categories = None, None

    @property
    def n_cells(self) -> int:
        return int(self.offsets[-1])

    def blocks(self):
        """(shard index, start, stop) of every read block, in file order."""
        out = []
        for k, n in enumerate(self.shard_sizes):
            out.extend((k, s, min(s + self.block_cells, int(n))) for s in range(0, int(n), self.block_cells))
        return out

    def read_block(self, shard: int, start: int, stop: int) -> sp.csr_matrix:
        """Rows [start, stop) of one shard as aligned, transformed float32 CSR."""
        with h5py.File(self.path / self.manifest["shards"][shard]["file"], "r") as fh:
            group = fh["X"]
            if not isinstance(group, h5py.Group) or group.attrs.get("encoding-type") != "csr_matrix":
                raise ValueError(f"shard {fh.filename}: X must be stored as a CSR matrix")
            indptr = group["indptr"][start : stop + 1]
            lo, hi = int(indptr[0]), int(indptr[-1])
            data = group["data"][lo:hi].astype(np.float32)
            indices = group["indices"][lo:hi]
        X = sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, len(self.var_names)))
        if self._select is not None:
            X = (X @ self._select).tocsr()
        X = as_csr(X, f"shard {shard} rows {start}:{stop}")
        return log1p_cp10k(X) if self.transform == "log1p_cp10k" else X

    def _batch(self, X, rows, source):
        idx, val, row, length = flat_batch(X, rows)
        m = self.modality
        return {"source": source[rows], f"{m}_idx": idx, f"{m}_val": val, f"{m}_row": row, f"{m}_len": length}

    def iter_epoch(self, epoch: int, seed: int, batch_size: int, modalities=None, by_source: bool = False):
        """Shuffled mini-batches covering every cell once: random blocks pooled per window.

        ``by_source=False``: full batches of mixed sources; the last batch takes the remainder
        (a single leftover cell is merged into the batch before it).
        ``by_source=True``: every batch holds cells of one source. Within a window each
        source's cells are cut into full batches, the batches are shuffled, and each source's
        leftover cells are carried into the next window (while they stay under half a window;
        beyond, the largest leftovers become smaller batches); at the end, each source's
        remainder is one smaller batch (a source with a single leftover cell gives a one-cell
        batch, as in-memory training does for one-cell sources).
        """
        rng = np.random.default_rng([seed, epoch, 7])
        blocks = self.blocks()
        order = rng.permutation(len(blocks))
        carry_X, carry_src = None, None
        carry_limit = max(batch_size, self.block_cells * self.window_blocks // 2)
        pending = None  # hold one batch back so a tiny remainder can be merged into it (mixed batches)
        for w in range(0, len(order), self.window_blocks):
            parts = [blocks[i] for i in order[w : w + self.window_blocks]]
            Xs = [self.read_block(*b) for b in parts]
            srcs = [self.source[self.offsets[k] + s : self.offsets[k] + e] for k, s, e in parts]
            if carry_X is not None:
                Xs.insert(0, carry_X)
                srcs.insert(0, carry_src)
            X = sp.vstack(Xs, format="csr")
            src = np.concatenate(srcs)
            perm = rng.permutation(X.shape[0])
            groups = [perm[src[perm] == s] for s in np.unique(src)] if by_source else [perm]
            full, rest = [], []
            for cells in groups:
                n_full = len(cells) // batch_size
                full.extend(cells[b * batch_size : (b + 1) * batch_size] for b in range(n_full))
                rest.append(cells[n_full * batch_size :])
            if by_source:
                # Many small sources would pile up leftovers; past half a window, the largest
                # leftovers (>= 2 cells) become smaller batches now, so memory stays bounded.
                rest.sort(key=len, reverse=True)
                while sum(map(len, rest)) > carry_limit and len(rest[0]) >= 2:
                    full.append(rest.pop(0))
            for i in rng.permutation(len(full)) if by_source else range(len(full)):
                if pending is not None:
                    yield pending
                pending = self._batch(X, full[i], src)
            rest = np.concatenate(rest)
            carry_X, carry_src = X[rest], src[rest]
        if pending is not None and not by_source and carry_X is not None and carry_X.shape[0] == 1:
            # Mixed batches: a one-cell remainder (no negatives of its own) joins the held-back batch.
            tail = self._batch(carry_X, np.arange(1), carry_src)
            m = self.modality
            tail[f"{m}_row"] = tail[f"{m}_row"] + len(pending["source"])
            yield {key: np.concatenate([value, tail[key]]) for key, value in pending.items()}
            return
        if pending is not None:
            yield pending
        if carry_X is None or not carry_X.shape[0]:
            return
        remainders = [np.flatnonzero(carry_src == s) for s in np.unique(carry_src)] if by_source else [np.arange(carry_X.shape[0])]
        for i in rng.permutation(len(remainders)):
            yield self._batch(carry_X, remainders[i], carry_src)

    def iter_ordered(self, batch_size: int, modalities=None, rows=None):
        """(global row indices, batch) in file order, for embedding and statistics."""
        wanted = None if rows is None else np.zeros(self.n_cells, bool)
        if wanted is not None:
            wanted[rows] = True
        for k, s, e in self.blocks():
            base = int(self.offsets[k])
            local = np.arange(e - s)
            if wanted is not None:
                local = local[wanted[base + s : base + e]]
                if not len(local):
                    continue
            X = self.read_block(k, s, e)
            src = self.source[base + s : base + e]
            for i in range(0, len(local), batch_size):
                part = local[i : i + batch_size]
                yield base + s + part, self._batch(X, part, src)
