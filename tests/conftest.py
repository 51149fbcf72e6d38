"""Shared test setup: make the workflow library (<repo>/scripts) importable and provide
small simulated AnnData objects (independent of the stand-in simulator)."""
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def simulate_counts(n_cells=400, n_genes=150, n_types=4, batches=("b1", "b2", "b3", "b4"),
                    techs=("tA", "tA", "tB", "inD"), seed=0):
    """Poisson counts with cell-type programmes and a per-batch gene scaling."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    ctype = rng.integers(0, n_types, n_cells)
    bidx = rng.integers(0, len(batches), n_cells)
    base = rng.gamma(0.6, 1.0, n_genes)
    prog = np.exp(rng.normal(0, 1.2, (n_types, n_genes)) * (rng.random((n_types, n_genes)) < 0.15))
    bfac = np.exp(rng.normal(0, 0.3, (len(batches), n_genes)))
    mu = base * prog[ctype] * bfac[bidx] * rng.lognormal(0, 0.2, (n_cells, 1)) * 3
    X = sp.csr_matrix(rng.poisson(mu).astype(np.float32))
    obs = pd.DataFrame({"cell_type": [f"type{t}" for t in ctype],
                        "batch": np.array(batches)[bidx], "tech": np.array(techs)[bidx]},
                       index=[f"cell{i}" for i in range(n_cells)])
    a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))
    for c in ("cell_type", "batch", "tech"):
        a.obs[c] = a.obs[c].astype("category")
    return a


@pytest.fixture
def raw_adata():
    return simulate_counts()


@pytest.fixture
def repo():
    return REPO
