"""Preprocessing as in the paper's Methods, with HVGs fitted on training cells only.

Steps: drop mitochondrial/ERCC genes, drop cells with < ``min_genes`` detected genes,
drop genes detected in < ``min_cells`` training cells, normalise each cell to
``target_sum`` counts, log1p, select ``n_top_genes`` HVGs (scanpy) on the training
cells. Query cells are then aligned to the training gene list (missing genes = 0).
"""
from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

log = logging.getLogger(__name__)

MITO_PREFIXES = ("MT-", "mt-", "ERCC")


def parse_hvg(level: str | int) -> int | None:
    """'all' -> None (keep every gene); '2000' / 2000 -> 2000."""
    if str(level) == "all":
        return None
    n = int(level)
    if n <= 0:
        raise ValueError(f"HVG level must be a positive integer or 'all', got {level!r}")
    return n


def normalise(a: ad.AnnData, target_sum: float) -> ad.AnnData:
    """Counts -> log1p(counts / total * target_sum), CSR float32."""
    a = a.copy()
    sc.pp.normalize_total(a, target_sum=target_sum)
    sc.pp.log1p(a)
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    return a


def filter_cells(a: ad.AnnData, min_genes: int) -> ad.AnnData:
    keep_genes = ~a.var_names.str.startswith(MITO_PREFIXES)
    a = a[:, keep_genes].copy()
    n_genes = np.asarray((a.X > 0).sum(axis=1)).ravel()
    kept = a[n_genes >= min_genes].copy()
    log.info("cells: %d -> %d (min_genes=%d)", a.n_obs, kept.n_obs, min_genes)
    return kept


def fit_genes(train_counts: ad.AnnData, train_norm: ad.AnnData, min_cells: int,
              n_top_genes: int | None, flavor: str) -> pd.Index:
    """Genes to model, decided on training cells only: detected in >= ``min_cells``
    cells, then the ``n_top_genes`` most variable (scanpy) of those, in original order."""
    detected = np.asarray((train_counts.X > 0).sum(axis=0)).ravel()
    genes = train_counts.var_names[detected >= min_cells]
    if n_top_genes is None or n_top_genes >= len(genes):
        if n_top_genes is not None:
            log.warning("n_top_genes=%d >= %d available genes: using all genes", n_top_genes, len(genes))
        return genes
    sub = train_norm[:, genes].copy()
    hv = sc.pp.highly_variable_genes(sub, n_top_genes=n_top_genes, flavor=flavor, inplace=False)
    return genes[np.asarray(hv["highly_variable"], dtype=bool)]


def align_genes(a: ad.AnnData, genes: pd.Index) -> ad.AnnData:
    """Restrict/reorder ``a`` to ``genes``; genes absent from ``a`` become all-zero columns."""
    present = genes.isin(a.var_names)
    if present.all():
        return a[:, genes].copy()
    log.warning("%d of %d training genes absent from this data: filled with zeros",
                int((~present).sum()), len(genes))
    src = sp.csr_matrix(a[:, genes[present]].X)
    cols = np.flatnonzero(present)
    # column scatter as a sparse product: (n, k) @ (k, G) with one 1 per row
    P = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (np.arange(len(cols)), cols)),
                      shape=(len(cols), len(genes)))
    X = sp.csr_matrix(src @ P, dtype=np.float32)
    return ad.AnnData(X, obs=a.obs.copy(), var=pd.DataFrame(index=genes))


def _info(n_top_genes, n_genes, **kw) -> dict:
    return dict(n_top_genes=-1 if n_top_genes is None else n_top_genes, n_genes=int(n_genes), **kw)


def preprocess_integration(raw: ad.AnnData, *, min_genes: int, min_cells: int,
                           target_sum: float, n_top_genes: int | None, flavor: str) -> ad.AnnData:
    """Integration: every cell is a training cell. Returns log-normalised X (CSR) on the
    selected genes; normalisation uses each cell's full profile, as in the paper."""
    cells = filter_cells(raw, min_genes)
    norm = normalise(cells, target_sum)
    genes = fit_genes(cells, norm, min_cells, n_top_genes, flavor)
    out = norm[:, genes].copy()
    out.uns["preprocessing"] = _info(n_top_genes, out.n_vars, min_genes=min_genes, min_cells=min_cells,
                                     target_sum=target_sum, fitted_on="all cells")
    return out


def preprocess_mapping(raw: ad.AnnData, *, query_key: str, query_value: str, min_genes: int,
                       min_cells: int, target_sum: float, n_top_genes: int | None,
                       flavor: str) -> tuple[ad.AnnData, ad.AnnData]:
    """Mapping: genes (min_cells filter + HVG) fitted on reference cells only; the query
    is normalised on its own full profile and then aligned to the reference genes."""
    values = sorted(raw.obs[query_key].astype(str).unique())
    if query_value not in values:
        raise ValueError(f"mapping query {query_key}={query_value!r} not in the data; "
                         f"allowed values: {values}")
    cells = filter_cells(raw, min_genes)
    is_query = (cells.obs[query_key].astype(str) == query_value).to_numpy()
    ref_raw, query_raw = cells[~is_query].copy(), cells[is_query].copy()
    ref_norm = normalise(ref_raw, target_sum)
    genes = fit_genes(ref_raw, ref_norm, min_cells, n_top_genes, flavor)
    ref = ref_norm[:, genes].copy()
    query = align_genes(normalise(query_raw, target_sum), genes)
    info = _info(n_top_genes, ref.n_vars, min_genes=min_genes, min_cells=min_cells,
                 target_sum=target_sum, fitted_on="reference cells", query=f"{query_key}={query_value}")
    ref.uns["preprocessing"] = info
    query.uns["preprocessing"] = dict(info)
    return ref, query
