"""The embedding file every method writes (integration and mapping alike).

Contract of ``<method>.h5ad``:
  obs                 the evaluated cells with 'cell_type', 'batch', 'tech'
                      (+ 'role' in {'reference', 'query'} for mapping)
  obsm['X_emb']       float32 (n_obs, d) -- present iff status == 'ok'
  uns['method'], uns['status'] ('ok' | 'failed' | 'not_installed'), uns['reason'], uns['log']

A method that cannot run still writes this file, without ``X_emb`` and with the reason,
so downstream rules turn it into explicit ``status`` rows instead of silently missing data.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

EMB_KEY = "X_emb"
STATUSES = ("ok", "failed", "not_installed")
OBS_COLUMNS = ("cell_type", "batch", "tech")


def write_embedding(path: str, obs: pd.DataFrame, emb: np.ndarray | None, *, method: str,
                    status: str, reason: str = "", log: str = "") -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if (emb is None) != (status != "ok"):
        raise ValueError("an embedding must be given iff status == 'ok'")
    a = ad.AnnData(obs=obs.copy())
    if emb is not None:
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape[0] != obs.shape[0]:
            raise ValueError(f"embedding has {emb.shape[0]} rows for {obs.shape[0]} cells")
        if not np.isfinite(emb).all():
            raise ValueError(f"{method}: embedding contains NaN/inf")
        a.obsm[EMB_KEY] = emb
    a.uns.update(method=method, status=status, reason=str(reason)[-2000:], log=log)
    a.write_h5ad(path)


def read_embedding(path: str) -> ad.AnnData:
    a = ad.read_h5ad(path)
    check_embedding(a)
    return a


def check_embedding(a: ad.AnnData) -> None:
    """Raise AssertionError when ``a`` breaks the contract above."""
    for k in ("method", "status", "reason", "log"):
        assert k in a.uns, f"uns['{k}'] missing"
    assert a.uns["status"] in STATUSES, f"bad status {a.uns['status']!r}"
    for c in OBS_COLUMNS:
        assert c in a.obs, f"obs['{c}'] missing"
    if a.uns["status"] == "ok":
        assert EMB_KEY in a.obsm, f"status ok but obsm['{EMB_KEY}'] missing"
        assert a.obsm[EMB_KEY].shape[0] == a.n_obs
    else:
        assert EMB_KEY not in a.obsm, "failed method must not carry an embedding"
