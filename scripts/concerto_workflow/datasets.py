"""Datasets in the workflow's common schema.

Every dataset that enters preprocessing is an AnnData with
  X              raw counts, CSR, float32
  obs['cell_type'], obs['batch'], obs['tech']   categorical
  var_names      unique gene symbols
"""
from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

REQUIRED_OBS = ("cell_type", "batch", "tech")


def make_standin(name: str, params: dict) -> ad.AnnData:
    """Simulated stand-in for dataset ``name`` (``concerto_workflow.simulate.standins``)."""
    from concerto_workflow.simulate import standins  # written alongside this package

    maker = getattr(standins, f"make_{name}", None)
    if maker is None:
        raise ValueError(
            f"datasets.{name}.source = 'standin' but concerto_workflow.simulate.standins "
            f"has no make_{name}(); use a dataset with a stand-in or source: real"
        )
    return to_common_schema(maker(**params))


def convert_real(path: str, batch_col: str, label_col: str, counts_layer: str | None,
                 tech_pattern: str) -> ad.AnnData:
    """Read a downloaded h5ad and map its columns onto the common schema.

    ``tech_pattern`` is a regex whose first group extracts the technology from the
    batch name (for the scIB pancreas: ``inDrop3`` -> ``inDrop``).
    """
    a = ad.read_h5ad(path)
    for col, key in ((batch_col, "batch_col"), (label_col, "label_col")):
        if col not in a.obs:
            raise KeyError(f"datasets.*.real.{key} = {col!r} not in obs columns {list(a.obs.columns)}")
    X = a.layers[counts_layer] if counts_layer else a.X
    batch = a.obs[batch_col].astype(str)
    tech = batch.map(lambda b: (re.match(tech_pattern, b) or re.match("(.*)", b)).group(1))
    out = ad.AnnData(
        X=sp.csr_matrix(X, dtype=np.float32),
        obs=pd.DataFrame({"cell_type": a.obs[label_col].astype(str).values,
                          "batch": batch.values, "tech": tech.values},
                         index=a.obs_names.astype(str)),
        var=pd.DataFrame(index=a.var_names.astype(str)),
    )
    return to_common_schema(out)


def to_common_schema(a: ad.AnnData) -> ad.AnnData:
    """Check the required columns, make X CSR float32 and labels categorical."""
    missing = [c for c in REQUIRED_OBS if c not in a.obs]
    if missing:
        raise KeyError(f"dataset lacks obs columns {missing}; has {list(a.obs.columns)}")
    a = a.copy()
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    for c in REQUIRED_OBS:
        a.obs[c] = pd.Categorical(a.obs[c].astype(str))
    a.var_names_make_unique()
    a.obs_names_make_unique()
    return a
