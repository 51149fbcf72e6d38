"""Synthetic single-cell data shared by the concerto_core tests."""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def simulate_groups(n_cells=600, n_genes=300, n_groups=5, n_batches=2, seed=0, batch_strength=0.5, lognorm=True):
    """Cells from n_groups expression programmes, with a multiplicative per-batch gene effect."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    base = rng.gamma(0.4, 2.0, n_genes)
    programme = base * np.exp(rng.normal(0, 1.2, (n_groups, n_genes)) * (rng.random((n_groups, n_genes)) < 0.2))
    batch_factor = np.exp(rng.normal(0, batch_strength, (n_batches, n_genes)))
    lam = programme[groups] * batch_factor[batches] * rng.lognormal(0, 0.2, (n_cells, 1))
    counts = rng.poisson(lam).astype(np.float32)
    X = counts
    if lognorm:
        size = np.maximum(counts.sum(1, keepdims=True), 1)
        X = np.log1p(counts / size * 1e4).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(X))
    adata.var_names = [f"gene{i}" for i in range(n_genes)]
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.obs["group"] = pd.Categorical([f"type{g}" for g in groups])
    adata.obs["batch"] = pd.Categorical([f"batch{b}" for b in batches])
    return adata


def shared_data_dir():
    """Folder of the small real datasets: $CONCERTO_SHARED_DATA, else <repo>/../shared/data."""
    import os
    from pathlib import Path

    env = os.environ.get("CONCERTO_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
