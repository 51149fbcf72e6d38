"""Python baselines and controls (cheap, deterministic given ``seed``)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _n_comps(n_comps: int, X) -> int:
    return int(max(2, min(n_comps, X.shape[0] - 1, X.shape[1] - 1)))


def _dense(X) -> np.ndarray:
    return (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(np.float32, copy=False)


def _pca(X, n_comps: int, seed: int):
    from sklearn.decomposition import PCA

    return PCA(n_components=_n_comps(n_comps, X), svd_solver="randomized", random_state=seed).fit(X)


def pca_integrate(adata, batch_key, n_comps, seed, **_):
    X = _dense(adata.X)
    return _pca(X, n_comps, seed).transform(X)


def pca_map(ref, query, batch_key, n_comps, seed, **_):
    Xr = _dense(ref.X)
    Xq = _dense(query.X)
    pca = _pca(Xr, n_comps, seed)
    return pca.transform(Xr), pca.transform(Xq)


def harmony_integrate(adata, batch_key, n_comps, seed, max_iter_harmony=10, **_):
    import harmonypy

    pcs = pca_integrate(adata, batch_key, n_comps, seed)
    ho = harmonypy.run_harmony(pcs, adata.obs[[batch_key]], [batch_key],
                               max_iter_harmony=max_iter_harmony, random_state=seed)
    Z = np.asarray(ho.Z_corr)
    # harmonypy returns (d, n) in older releases and (n, d) in newer ones
    return Z.T if Z.shape[0] == pcs.shape[1] and Z.shape[1] == pcs.shape[0] else Z


def random_integrate(adata, batch_key, n_comps, seed, **_):
    return np.random.default_rng(seed).normal(size=(adata.n_obs, n_comps)).astype(np.float32)


def random_map(ref, query, batch_key, n_comps, seed, **_):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(ref.n_obs, n_comps)), rng.normal(size=(query.n_obs, n_comps))
