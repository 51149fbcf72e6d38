"""Large-scale Splat/scsim generator for the scalability study, written to disk in shards.

Paper (Methods, "Scalability analysis"): scsim with ``ngenes=25000``, ``ncells`` 50k ... 10M,
``ngroups=5``, ``diffexpprob=0.025``. The remaining values are scsim's defaults, which its
authors fitted to a real 10x dataset: ``libloc=7.64, libscale=0.78, mean_rate=7.68,
mean_shape=0.34, expoutprob=0.00286, expoutloc=6.15, expoutscale=0.49, diffexpdownprob=0,
diffexploc=1.0, diffexpscale=1.0, bcv_dispersion=0.448, bcv_dof=22.087``.
Sparsity: Splat's default library size (e^11 ~ 60k UMIs) expresses ~9,000 of 25,000 genes per
cell; scsim's fitted library size (median e^7.64 ~ 2,100 UMIs) gives ~1,040, the low end of
the realistic 1,000-2,000, so we raise ``libloc`` to 7.9 (median ~2,700 UMIs, ~1,250 genes per
cell); no dropout is needed. Counts are exact Gamma-Poisson (:mod:`.sampling`).

On-disk format (read by the model's streaming reader; do not change): a directory with
``shards.json`` = ``{"format": "concerto-shards", "version": 1, "n_cells": N, "var_names": [...],
"obs_columns": ["cell_type", "batch"], "values": "counts", "shards": [{"file":
"part-00000.h5ad", "n_cells": n}, ...]}`` and one ordinary ``.h5ad`` per shard (X CSR float32
counts, obs with the listed columns). Each shard is appended to disk in blocks and renamed into
place when complete; ``shards.json`` is written last, atomically, so a killed run never leaves a
valid-looking dataset. Peak memory depends on the block size, not on ``ncells``. Shard k uses
the random stream ``(seed, k)``, so ``max_shards`` runs reproduce the first shards of a full run.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import sparse_dataset, write_elem

from .sampling import iter_count_chunks
from .splat import lognormal_factors

FORMAT = "concerto-shards"
VERSION = 1


@dataclass(frozen=True)
class ScsimParams:
    """scsim parameter names; defaults = paper values + scsim's fitted defaults."""

    ngenes: int = 25000
    ncells: int = 50000
    ngroups: int = 5
    libloc: float = 7.9  # scsim default 7.64; see module docstring
    libscale: float = 0.78
    mean_rate: float = 7.68
    mean_shape: float = 0.34
    expoutprob: float = 0.00286
    expoutloc: float = 6.15
    expoutscale: float = 0.49
    diffexpprob: float = 0.025
    diffexpdownprob: float = 0.0
    diffexploc: float = 1.0
    diffexpscale: float = 1.0
    bcv_dispersion: float = 0.448
    bcv_dof: float = 22.087
    seed: int = 0

    def __post_init__(self):
        for k in ("ngenes", "ncells", "ngroups"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"ScsimParams.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("expoutprob", "diffexpprob", "diffexpdownprob"):
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"ScsimParams.{k} must lie in [0, 1], got {getattr(self, k)}")
        for k in ("libscale", "mean_rate", "mean_shape", "bcv_dof"):
            if not getattr(self, k) > 0:
                raise ValueError(f"ScsimParams.{k} must be > 0, got {getattr(self, k)}")


def _gene_program(p: ScsimParams):
    """Group expression proportions (ngroups, ngenes) and per-gene BCV factors (ngenes,)."""
    rng = np.random.default_rng([p.seed, 0])
    base = rng.gamma(p.mean_shape, 1.0 / p.mean_rate, size=p.ngenes)
    out = lognormal_factors(p.ngenes, p.expoutprob, 0.0, p.expoutloc, p.expoutscale, rng)
    gene_mean = np.where(out != 1, np.median(base) * out, base)
    de = np.vstack([lognormal_factors(p.ngenes, p.diffexpprob, p.diffexpdownprob, p.diffexploc,
                                      p.diffexpscale, rng) for _ in range(p.ngroups)])
    means = gene_mean[None, :] * de
    gfac = np.sqrt(p.bcv_dof / rng.chisquare(p.bcv_dof, size=p.ngenes))
    return means / means.sum(axis=1, keepdims=True), gfac


def _write_shard(path: Path, p: ScsimParams, props, gfac, k: int, start: int, n: int,
                 var_names, block_cells: int) -> int:
    """Write cells [start, start+n) as one h5ad, appending X block by block; returns nnz."""
    rng = np.random.default_rng([p.seed, 1, k])
    group = rng.integers(0, p.ngroups, size=n)
    lib = rng.lognormal(p.libloc, p.libscale, size=n)
    tmp = path.with_name(path.name + ".tmp")
    nnz = 0
    with h5py.File(tmp, "w") as f:
        first = True
        for b0 in range(0, n, block_cells):
            b1 = min(n, b0 + block_cells)
            parts = [c for _, _, c in iter_count_chunks(
                props, group[b0:b1], lib[b0:b1], bcv_common=p.bcv_dispersion,
                bcv_gene_factor=gfac, rng=rng)]
            block = sp.vstack(parts, format="csr", dtype=np.float32)
            block.indices = block.indices.astype(np.int32)
            nnz += block.nnz
            if first:
                write_elem(f, "X", block)  # anndata makes sparse datasets resizable
                first = False
            else:
                sparse_dataset(f["X"]).append(block)
            del parts, block
        names = np.array([f"Group{g + 1}" for g in range(p.ngroups)])
        obs = pd.DataFrame({"cell_type": pd.Categorical(names[group], categories=names),
                            "batch": pd.Categorical(["Batch1"] * n)},
                           index=[f"cell{start + i}" for i in range(n)])
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame(index=var_names))
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
    os.replace(tmp, path)
    return nnz


def write_scsim_shards(out_dir, params: ScsimParams | None = None, *, shard_size: int = 100_000,
                       max_shards: int | None = None, block_cells: int = 10_000,
                       log=None, **overrides) -> dict:
    """Simulate ``params.ncells`` cells into ``out_dir`` (sharded format above).

    ``max_shards`` writes only the first shards (the manifest then lists only those, with
    ``n_cells`` = cells written, and ``requested_n_cells`` = the full request), to show that
    a 10M request runs. Returns the manifest plus ``stats`` (seconds, nnz, cells/s).
    """
    p = params or ScsimParams()
    if overrides:
        p = ScsimParams(**{**asdict(p), **overrides})
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if max_shards is not None and max_shards < 1:
        raise ValueError(f"max_shards must be >= 1 or None, got {max_shards}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "shards.json"
    if manifest_path.exists():  # an old manifest must not describe half-rewritten shards
        manifest_path.unlink()
    props, gfac = _gene_program(p)
    var_names = [f"Gene{i + 1}" for i in range(p.ngenes)]
    n_shards = -(-p.ncells // shard_size)
    todo = n_shards if max_shards is None else min(n_shards, max_shards)
    shards, nnz, t0 = [], 0, time.perf_counter()
    for k in range(todo):
        start = k * shard_size
        n = min(shard_size, p.ncells - start)
        fname = f"part-{k:05d}.h5ad"
        nnz += _write_shard(out / fname, p, props, gfac, k, start, n, var_names, block_cells)
        shards.append({"file": fname, "n_cells": int(n)})
        if log:
            log(f"shard {k + 1}/{todo}: {start + n} cells, {time.perf_counter() - t0:.1f}s")
    seconds = time.perf_counter() - t0
    written = sum(s["n_cells"] for s in shards)
    manifest = {"format": FORMAT, "version": VERSION, "n_cells": int(written),
                "var_names": var_names, "obs_columns": ["cell_type", "batch"], "values": "counts",
                "shards": shards, "requested_n_cells": int(p.ncells),
                "params": asdict(p)}
    tmp = out / "shards.json.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_path)
    manifest["stats"] = {"seconds": seconds, "nnz": int(nnz), "cells_per_s": written / max(seconds, 1e-9),
                         "mean_genes_per_cell": nnz / max(written, 1)}
    return manifest


def read_shards(path) -> ad.AnnData:
    """Read a whole sharded dataset into memory (small data / tests only)."""
    path = Path(path)
    m = json.loads((path / "shards.json").read_text())
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}/shards.json is not a {FORMAT} manifest")
    return ad.concat([ad.read_h5ad(path / s["file"]) for s in m["shards"]], merge="same")
