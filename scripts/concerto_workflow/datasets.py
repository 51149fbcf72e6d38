"""Datasets in the workflow's common schema.

Every dataset that enters preprocessing is an AnnData with
  X              raw counts, CSR, float32
  obs['cell_type'], obs['batch'], obs['tech']   categorical
  var_names      unique gene symbols
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .converters import tech_from_batch

REQUIRED_OBS = ("cell_type", "batch", "tech")
#: what a real file's X (or counts_layer) holds (config ``values``)
VALUE_KINDS = ("counts", "lognorm")


def make_standin(name: str, params: dict) -> ad.AnnData:
    """Simulated stand-in for dataset ``name``: ``make_<params['maker'] or name>(**rest)`` of
    :mod:`concerto_workflow.simulate.standins`."""
    from .workflow_config import standin_kwargs, standin_maker

    cfg = {"standin": params}
    return to_common_schema(standin_maker(name, cfg)(**standin_kwargs(cfg)))


def convert_real(path: str, *, batch_col: str, label_col: str, tech_col: str = "", counts_layer: str = "",
                 tech_pattern: str = r"^(.*?)\d*$", keep_obs=(), drop_labels=(), keep_obsm=(),
                 values: str = "counts", protein_obsm: str = "") -> ad.AnnData:
    """Read a real h5ad and map its columns onto the common schema.

    ``tech_col`` names the technology column; without it, ``tech_pattern`` is a regex whose
    first group extracts the technology from the batch name (scIB pancreas: ``inDrop3`` ->
    ``inDrop``). An empty ``batch_col`` means one batch (``'batch1'``) for a file without one.
    Cells whose label is in ``drop_labels`` (spike-ins, 'Unknown') are removed. ``keep_obs``
    columns are carried along (donor, finer labels, ...); an ``obsm['protein']`` with
    ``uns['protein_names']`` is kept, and so are the ``keep_obsm`` keys (e.g. a user's own
    embedding for method ``precomputed``).

    ``values``: ``counts`` (raw counts, the schema's X) or ``lognorm`` (a file holding only
    log1p-normalised values): these are turned back into per-cell normalised values with
    ``expm1``, so the engine's own normalisation (to ``target_sum``, log1p) gives the file's
    values up to one factor per cell (genes absent from the file are not in its totals).
    ``protein_obsm``: an obsm key holding a second modality (e.g. CITE-seq ADTs), carried as
    ``obsm['protein']``; names from ``uns['<key>_names']`` or ``uns['protein_names']``, else
    numbered (``<key>_0``, ...).
    """
    if values not in VALUE_KINDS:
        raise ValueError(f"datasets.*.values = {values!r}; allowed: {VALUE_KINDS}")
    a = ad.read_h5ad(path)
    if drop_labels:
        if label_col not in a.obs:
            raise KeyError(f"datasets.*.label_col = {label_col!r} not in obs columns of {path}: {list(a.obs.columns)}")
        labels = a.obs[label_col].astype(str)
        absent = sorted(set(map(str, drop_labels)) - set(labels))
        if absent:
            raise KeyError(f"datasets.*.drop_labels {absent} are not labels of {path}; labels: {sorted(set(labels))}")
        a = a[~labels.isin([str(v) for v in drop_labels]).to_numpy()].copy()
    for col, key in ((batch_col, "batch_col"), (label_col, "label_col"), (tech_col, "tech_col"),
                     *((c, "keep_obs") for c in keep_obs)):
        if col and col not in a.obs:
            raise KeyError(f"datasets.*.{key} = {col!r} not in obs columns of {path}: {list(a.obs.columns)}")
    if counts_layer and counts_layer not in a.layers:
        raise KeyError(f"datasets.*.counts_layer = {counts_layer!r} not in the layers of {path}: "
                       f"{list(a.layers)}")
    if protein_obsm and protein_obsm not in a.obsm:
        raise KeyError(f"datasets.*.protein_obsm = {protein_obsm!r} not in the obsm of {path}: {list(a.obsm)}")
    X = a.layers[counts_layer] if counts_layer else a.X
    if values == "lognorm":
        X = sp.csr_matrix(X, dtype=np.float32)
        X.data = np.expm1(X.data)
    batch = a.obs[batch_col].astype(str) if batch_col else pd.Series("batch1", index=a.obs_names)
    tech = a.obs[tech_col].astype(str) if tech_col else tech_from_batch(batch, tech_pattern)
    obs = pd.DataFrame({"cell_type": a.obs[label_col].astype(str).values, "batch": batch.values,
                        "tech": tech.values}, index=a.obs_names.astype(str))
    for c in keep_obs:
        obs[c] = pd.Categorical(a.obs[c].astype(str).values)
    out = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=a.var_names.astype(str)))
    for key in keep_obsm:
        if key not in a.obsm:
            raise KeyError(f"datasets.*.keep_obsm: {key!r} not in the obsm of {path}: {list(a.obsm)}")
        out.obsm[key] = np.asarray(a.obsm[key], dtype=np.float32)
    key = protein_obsm or ("protein" if "protein" in a.obsm else "")
    if key:
        out.obsm["protein"] = np.asarray(a.obsm[key], dtype=np.float32)
        names = a.uns.get(f"{key}_names", a.uns.get("protein_names"))
        n = out.obsm["protein"].shape[1]
        out.uns["protein_names"] = [str(x) for x in names] if names is not None and len(names) == n else \
            [f"{key}_{i}" for i in range(n)]
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
