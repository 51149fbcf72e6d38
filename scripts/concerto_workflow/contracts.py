"""Column contracts of the datasets passed between workflow steps.

Stand-ins (``simulate.standins``) and the converters of the real datasets
(:mod:`concerto_workflow.converters`) both produce these names and pass
:func:`validate_standard`, so every later step can rely on them. Every dataset has raw counts
in a CSR matrix (``X`` in stand-ins, ``layers['counts']`` in converted files), gene symbols as ``var_names``, and categorical ``obs['cell_type']`` (main label) and
``obs['batch']``; ``obs['tech']`` is always present too (the workflow's common schema).

=================  =========================================================  ==========  ==============
dataset            obs (categorical)                                          obsm        uns
=================  =========================================================  ==========  ==============
pancreas           cell_type, batch, tech
pancreas_mouse     cell_type, batch, tech, species
pbmc45k            cell_type, batch, tech, protocol, sample
thymus             cell_type, batch, tech, source (thymus / pbmc)
tabula_muris_senis cell_type, batch, tech, tissue
pbmc160k_citeseq   cell_type (= l2), batch, tech, celltype.l1/.l2/.l3, donor  protein     protein_names
covid_pbmc         cell_type, batch, tech, donor, condition, celltype_l1/_l2
=================  =========================================================  ==========  ==============
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .columns import COUNTS_LAYER, DATASET_COLUMNS, PROTEIN, PROTEIN_NAMES, STANDARD_OBS

_BASE = DATASET_COLUMNS

#: per dataset: required categorical obs columns, obsm keys and uns keys.
DATASET_CONTRACTS: dict[str, dict[str, tuple[str, ...]]] = {
    "pancreas": {"obs": _BASE, "obsm": (), "uns": ()},
    "pancreas_mouse": {"obs": _BASE + ("species",), "obsm": (), "uns": ()},
    "pbmc45k": {"obs": _BASE + ("protocol", "sample"), "obsm": (), "uns": ()},
    "thymus": {"obs": _BASE + ("source",), "obsm": (), "uns": ()},
    "tabula_muris_senis": {"obs": _BASE + ("tissue",), "obsm": (), "uns": ()},
    "pbmc160k_citeseq": {
        "obs": _BASE + ("celltype.l1", "celltype.l2", "celltype.l3", "donor"),
        "obsm": ("protein",), "uns": ("protein_names",),
    },
    "covid_pbmc": {
        "obs": _BASE + ("donor", "condition", "celltype_l1", "celltype_l2"),
        "obsm": (), "uns": (),
    },
}
# aliases used by stand-in function names
DATASET_CONTRACTS["pancreas_mouse_query"] = DATASET_CONTRACTS["pancreas_mouse"]


def counts_matrix(adata: ad.AnnData):
    """The raw counts of a dataset in the standard schema: ``layers['counts']`` (converted real
    data) or ``X`` (stand-ins, and datasets after ``prepare_dataset``)."""
    return adata.layers[COUNTS_LAYER] if COUNTS_LAYER in adata.layers else adata.X


def _standard_problems(adata: ad.AnnData, required_obs=DATASET_COLUMNS) -> list[str]:
    problems = []
    for col in dict.fromkeys((*required_obs, *(c for c in STANDARD_OBS if c in adata.obs))):
        if col not in adata.obs:
            problems.append(f"obs[{col!r}] missing")
        elif not isinstance(adata.obs[col].dtype, pd.CategoricalDtype):
            problems.append(f"obs[{col!r}] is {adata.obs[col].dtype}, not categorical")
    X = counts_matrix(adata)
    where = f"layers[{COUNTS_LAYER!r}]" if COUNTS_LAYER in adata.layers else "X"
    if X is None or not sp.issparse(X) or X.format != "csr":
        problems.append(f"{where} is not a CSR sparse matrix of raw counts")
    elif X.nnz and (not np.isfinite(X.data).all() or X.data.min() < 0):
        problems.append(f"{where} holds negative or non-finite values, not raw counts")
    if PROTEIN in adata.obsm:
        if adata.obsm[PROTEIN].shape[0] != adata.n_obs:
            problems.append(f"obsm[{PROTEIN!r}] has {adata.obsm[PROTEIN].shape[0]} rows, not n_obs={adata.n_obs}")
        if PROTEIN_NAMES in adata.uns and len(adata.uns[PROTEIN_NAMES]) != adata.obsm[PROTEIN].shape[1]:
            problems.append(f"uns[{PROTEIN_NAMES!r}] length != obsm[{PROTEIN!r}] columns")
    if not adata.var_names.is_unique:
        problems.append("var_names (gene symbols) are not unique")
    return problems


def validate_standard(adata: ad.AnnData, where: str) -> None:
    """The schema every dataset shares, stand-in or converted real data (``where`` names it in
    the error): raw counts (CSR, >= 0) in ``layers['counts']`` or ``X``; categorical
    ``obs`` cell_type, batch, tech, and any further standard column
    (:data:`~concerto_workflow.columns.STANDARD_OBS`) categorical too; ``obsm['protein']``
    matching ``uns['protein_names']``; unique gene symbols."""
    problems = _standard_problems(adata)
    if problems:
        raise ValueError(f"{where} breaks the standard dataset schema: " + "; ".join(problems))


def validate_dataset(adata: ad.AnnData, name: str) -> None:
    """Raise ``ValueError`` naming every missing or malformed slot of dataset ``name``."""
    if name not in DATASET_CONTRACTS:
        raise ValueError(f"no contract for dataset {name!r}; known: {sorted(DATASET_CONTRACTS)}")
    c = DATASET_CONTRACTS[name]
    problems = _standard_problems(adata, c["obs"])
    for key in c["obsm"]:
        if key not in adata.obsm:
            problems.append(f"obsm[{key!r}] missing")
    for key in c["uns"]:
        if key not in adata.uns:
            problems.append(f"uns[{key!r}] missing")
    if problems:
        raise ValueError(f"dataset {name!r} breaks its contract: " + "; ".join(problems))
