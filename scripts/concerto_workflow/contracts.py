"""Column contracts of the datasets passed between workflow steps.

Stand-ins (``simulate.standins``) and the converters of the real datasets both produce these
names, so every later step can rely on them. Every dataset has raw counts in a CSR ``X``,
gene symbols as ``var_names``, and categorical ``obs['cell_type']`` (main label) and
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
import pandas as pd
import scipy.sparse as sp

_BASE = ("cell_type", "batch", "tech")

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


def validate_dataset(adata: ad.AnnData, name: str) -> None:
    """Raise ``ValueError`` naming every missing or malformed slot of dataset ``name``."""
    if name not in DATASET_CONTRACTS:
        raise ValueError(f"no contract for dataset {name!r}; known: {sorted(DATASET_CONTRACTS)}")
    c = DATASET_CONTRACTS[name]
    problems = []
    for col in c["obs"]:
        if col not in adata.obs:
            problems.append(f"obs[{col!r}] missing")
        elif not isinstance(adata.obs[col].dtype, pd.CategoricalDtype):
            problems.append(f"obs[{col!r}] is {adata.obs[col].dtype}, not categorical")
    for key in c["obsm"]:
        if key not in adata.obsm:
            problems.append(f"obsm[{key!r}] missing")
        elif adata.obsm[key].shape[0] != adata.n_obs:
            problems.append(f"obsm[{key!r}] has {adata.obsm[key].shape[0]} rows, not n_obs={adata.n_obs}")
    for key in c["uns"]:
        if key not in adata.uns:
            problems.append(f"uns[{key!r}] missing")
    if "protein" in c["obsm"] and "protein" in adata.obsm and "protein_names" in adata.uns:
        if len(adata.uns["protein_names"]) != adata.obsm["protein"].shape[1]:
            problems.append("uns['protein_names'] length != obsm['protein'] columns")
    if not sp.issparse(adata.X) or adata.X.format != "csr":
        problems.append("X is not a CSR sparse matrix of raw counts")
    if not adata.var_names.is_unique:
        problems.append("var_names (gene symbols) are not unique")
    if problems:
        raise ValueError(f"dataset {name!r} breaks its contract: " + "; ".join(problems))
