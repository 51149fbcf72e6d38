"""Attention signatures of a Concerto embed output (paper Fig 3d), as tables for the figure.

The output carries each cell's teacher attention weights per modality (contract in
:mod:`.outputs`: ``obsm['attention_<modality>']`` + ``uns['attention_features']``). From them:

* :func:`marker_table`: the mean attention of chosen marker genes / proteins in each group of
  cells (e.g. ``celltype.l1``), raw and min-max scaled per marker across the groups, computed by
  ``concerto_core.group_mean_attention``; no clustering is involved, the groups are the labels.
* :func:`de_overlap_table`: per group, the ``n_top`` features with the highest mean attention
  against the ``n_top`` top differentially expressed genes of the group (scanpy
  ``rank_genes_groups``, Wilcoxon, group vs the rest, on the *training* cells only), with the
  overlap expected for two random sets of that size.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .columns import ATTENTION, ATTENTION_FEATURES, ROLE, TRAIN

MARKER_COLUMNS = ["modality", "group", "marker", "in_model", "mean_attention", "scaled", "n_cells"]
OVERLAP_COLUMNS = ["modality", "group", "n_cells", "n_features", "n_top", "overlap", "expected_by_chance",
                   "attention_top", "de_top"]


def modalities(a: ad.AnnData) -> list[str]:
    """Modalities whose attention the output holds (raises when it holds none)."""
    mods = [k[len(ATTENTION):] for k in a.obsm if k.startswith(ATTENTION)]
    if not mods:
        raise ValueError(f"method {a.uns.get('method', '?')!r}'s output has no attention weights "
                         f"(obsm keys {list(a.obsm)}); run Concerto's embed with params attention: true")
    return mods


def _groups(a: ad.AnnData, group_by: str) -> np.ndarray:
    if group_by not in a.obs:
        raise KeyError(f"group_by {group_by!r} is not an obs column (columns: {list(a.obs.columns)})")
    return a.obs[group_by].astype(str).to_numpy()


def group_means(a: ad.AnnData, group_by: str, modality: str, features=None, normalize=None) -> pd.DataFrame:
    """groups x features mean attention of ``modality`` (default: every feature of the model)."""
    from concerto_core import group_mean_attention

    names = list(a.uns[ATTENTION_FEATURES][modality])
    return group_mean_attention(a.obsm[ATTENTION + modality], names, _groups(a, group_by),
                                names if features is None else features, normalize=normalize)


def marker_table(a: ad.AnnData, group_by: str, markers: dict[str, list[str]]) -> pd.DataFrame:
    """Tidy rows (:data:`MARKER_COLUMNS`) per modality, group and marker; markers the model does
    not have (e.g. not among the fold's genes) are rows with ``in_model`` False and NaN values."""
    mods = modalities(a)
    unknown = sorted(set(markers) - set(mods))
    if unknown:
        raise ValueError(f"markers given for modalities {unknown}; the output has attention for {mods}")
    sizes = pd.Series(_groups(a, group_by)).value_counts()
    rows = []
    for m, wanted in markers.items():
        known = set(a.uns[ATTENTION_FEATURES][m])
        found = [g for g in wanted if g in known]
        raw = group_means(a, group_by, m, found, None) if found else None
        scaled = group_means(a, group_by, m, found, "minmax") if found else None
        for group in sorted(sizes.index):
            for g in wanted:
                ok = g in known
                rows.append({"modality": m, "group": group, "marker": g, "in_model": ok,
                             "mean_attention": float(raw.loc[group, g]) if ok else np.nan,
                             "scaled": float(scaled.loc[group, g]) if ok else np.nan,
                             "n_cells": int(sizes[group])})
    return pd.DataFrame(rows, columns=MARKER_COLUMNS)


def top_attention(a: ad.AnnData, group_by: str, modality: str, n_top: int) -> dict[str, list[str]]:
    """group -> its ``n_top`` features by mean attention (ties: model feature order)."""
    means = group_means(a, group_by, modality)
    return {g: list(means.columns[np.argsort(-means.loc[g].to_numpy(), kind="stable")[:n_top]])
            for g in means.index}


def top_de(cells: ad.AnnData, group_by: str, n_top: int, min_cells: int = 3) -> dict[str, list[str]]:
    """group -> its ``n_top`` up-regulated genes (scanpy Wilcoxon, group vs rest) on the training
    cells of ``cells`` (log-normalised X); groups with fewer than ``min_cells`` training cells
    are left out."""
    import scanpy as sc

    train = cells[(cells.obs[ROLE].astype(str) == TRAIN).to_numpy()].copy()
    train.obs["_group"] = pd.Categorical(_groups(train, group_by))
    sizes = train.obs["_group"].value_counts()
    groups = sorted(str(g) for g in sizes.index[sizes >= min_cells])
    if len(groups) < 2:
        raise ValueError(f"DE needs >= 2 groups of {group_by!r} with >= {min_cells} training cells; "
                         f"sizes: {sizes.to_dict()}")
    sc.tl.rank_genes_groups(train, "_group", groups=groups, reference="rest", method="wilcoxon",
                            n_genes=n_top, use_raw=False)
    names = train.uns["rank_genes_groups"]["names"]
    return {g: [str(x) for x in names[g]] for g in groups}


def de_overlap_table(a: ad.AnnData, cells: ad.AnnData, group_by: str, n_top: int,
                     modality: str = "rna") -> pd.DataFrame:
    """Per group (rows, :data:`OVERLAP_COLUMNS`): how many of its ``n_top`` top-attention features
    of ``modality`` are among its ``n_top`` top DE genes, and how many two random sets would share
    (n_top^2 / features). Both rankings use the model's features (the fold's genes)."""
    if modality not in modalities(a):
        raise ValueError(f"no attention for modality {modality!r}; the output has {modalities(a)}")
    features = list(a.uns[ATTENTION_FEATURES][modality])
    missing = sorted(set(features) - set(cells.var_names))
    if missing:
        raise ValueError(f"{len(missing)} attention features are not genes of the cells (e.g. {missing[:3]}); "
                         "the output and the cells must come from the same fold")
    att = top_attention(a, group_by, modality, n_top)
    de = top_de(cells[:, features], group_by, n_top)
    sizes = pd.Series(_groups(a, group_by)).value_counts()
    rows = [{"modality": modality, "group": g, "n_cells": int(sizes.get(g, 0)), "n_features": len(features),
             "n_top": n_top, "overlap": len(set(att[g]) & set(de[g])),
             "expected_by_chance": n_top * n_top / len(features),
             "attention_top": ",".join(att[g]), "de_top": ",".join(de[g])}
            for g in sorted(set(att) & set(de))]
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)
