"""Concerto's own steps, through the ``concerto_core`` Python API.

Unlike competitors these run in-process and let exceptions propagate: a Concerto
failure must fail the workflow.
"""
from __future__ import annotations

import logging
import time

import anndata as ad
import numpy as np

from .embedding_io import OBS_COLUMNS, write_embedding
from .methods import CONCERTO
from .methods.runner import mapping_obs

log = logging.getLogger(__name__)


def set_threads(threads: int | None) -> None:
    """Keep TensorFlow and numba within the job's Snakemake ``threads`` (call before any TF op)."""
    from concerto_core import set_cpu_threads

    set_cpu_threads(threads)


def train(train_h5ad: str, model_dir: str, *, batch_key: str | None, epochs: int,
          batch_size: int, seed: int, threads: int | None = None) -> None:
    """Pretrain Concerto (source-aware BatchNorm on ``batch_key``) and save it to ``model_dir``."""
    set_threads(threads)
    from concerto_core import Concerto

    a = ad.read_h5ad(train_h5ad)
    t0 = time.time()
    model = Concerto(a, batch_key=batch_key, seed=seed)
    model.train(epochs=epochs, batch_size=batch_size, checkpoint_dir=None)
    model.save(model_dir)
    print(f"[concerto] trained on {a.n_obs} cells x {a.n_vars} genes in {time.time() - t0:.1f}s",
          flush=True)


def _embed(model, a: ad.AnnData) -> np.ndarray:
    model.embed(a, key_added="X_concerto")
    emb = np.asarray(a.obsm["X_concerto"], dtype=np.float32)
    if emb.shape[0] != a.n_obs:
        raise ValueError(f"Concerto.embed returned {emb.shape[0]} rows for {a.n_obs} cells")
    return emb


def embed_integration(model_dir: str, h5ad: str, output: str, *, log_path: str,
                      threads: int | None = None) -> None:
    set_threads(threads)
    from concerto_core import Concerto

    model = Concerto.load(model_dir)
    a = ad.read_h5ad(h5ad)
    write_embedding(output, a.obs[list(OBS_COLUMNS)], _embed(model, a), method=CONCERTO,
                    status="ok", log=log_path)


def embed_mapping(model_dir: str, ref_h5ad: str, query_h5ad: str, output: str, *,
                  log_path: str, threads: int | None = None) -> None:
    """Reference and query through the reference-trained teacher (direct inference mode);
    query batches unseen in training use concerto_core's documented fallback."""
    set_threads(threads)
    from concerto_core import Concerto

    model = Concerto.load(model_dir)
    ref, query = ad.read_h5ad(ref_h5ad), ad.read_h5ad(query_h5ad)
    emb = np.vstack([_embed(model, ref), _embed(model, query)])
    write_embedding(output, mapping_obs(ref, query), emb, method=CONCERTO, status="ok", log=log_path)
