"""Clustering-free molecular signatures from Concerto attention weights.

Inputs are the model's ``attention()`` output: a CSR matrix (cells x genes or
cells x proteins), rows summing to <= 1.  Multi-modal models give one matrix
per modality; pass dicts ``{modality: matrix}`` (and matching dicts of names /
markers) to get one result per modality (Fig 3d: left RNA, right protein).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["top_genes_per_cell", "group_mean_attention"]


def _csr(attn):
    if sp.issparse(attn):
        return attn.tocsr()
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"attention matrix must be 2-D, got shape {a.shape}")
    return sp.csr_matrix(a)


def _per_modality(fn, attn, gene_names, *args, **kw):
    if isinstance(attn, dict):
        if not isinstance(gene_names, dict):
            raise TypeError("with a dict of attention matrices, gene_names must be a dict too")
        missing = set(attn) - set(gene_names)
        if missing:
            raise KeyError(f"no gene_names for modalities {sorted(missing)}")
        return {m: fn(attn[m], gene_names[m], *[a[m] if isinstance(a, dict) else a for a in args], **kw)
                for m in attn}
    return fn(attn, gene_names, *args, **kw)


def top_genes_per_cell(attn, gene_names, n: int = 10, *, cell_names=None, return_weights: bool = False,
                       block_rows: int = 20_000):
    """Per-cell signature: the ``n`` genes with the highest attention weight.

    attn : (n_cells, n_genes) CSR/dense (or dict modality -> matrix).
    gene_names : (n_genes,) names (or dict modality -> names).
    Returns DataFrame (n_cells, n) of gene names, columns ``top1..topn``, ordered
    by decreasing weight (ties: lower gene index first); cells with fewer than
    n non-zero weights are padded with None.  ``return_weights=True`` returns
    ``(names_df, weights_df)``.  Dict input -> dict of results.
    """
    return _per_modality(_top_genes, attn, gene_names, n=n, cell_names=cell_names,
                         return_weights=return_weights, block_rows=block_rows)


def _top_genes(attn, gene_names, n, cell_names, return_weights, block_rows):
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    A = _csr(attn)
    genes = np.asarray(gene_names, dtype=object)
    if genes.shape[0] != A.shape[1]:
        raise ValueError(f"{genes.shape[0]} gene names for {A.shape[1]} columns")
    n_cells = A.shape[0]
    names = np.full((n_cells, n), None, dtype=object)
    weights = np.full((n_cells, n), np.nan)
    for r0 in range(0, n_cells, block_rows):
        B = A[r0:r0 + block_rows]
        B.eliminate_zeros()
        rows = np.repeat(np.arange(B.shape[0]), np.diff(B.indptr))
        order = np.lexsort((B.indices, -B.data, rows))  # row, then weight desc, then gene index
        ptr = B.indptr
        rank = np.arange(order.size) - ptr[rows[order]]
        keep = rank < n
        sel = order[keep]
        rr, kk = rows[sel], rank[keep]
        names[r0 + rr, kk] = genes[B.indices[sel]]
        weights[r0 + rr, kk] = B.data[sel]
    cols = [f"top{i + 1}" for i in range(n)]
    idx = None if cell_names is None else pd.Index(cell_names)
    names_df = pd.DataFrame(names, columns=cols, index=idx)
    if return_weights:
        return names_df, pd.DataFrame(weights, columns=cols, index=idx)
    return names_df


def group_mean_attention(attn, gene_names, groups, markers, normalize: str | None = "minmax"):
    """Mean attention weight of marker genes per cell group (Fig 3d heatmap input).

    attn : (n_cells, n_genes) CSR/dense (or dict modality -> matrix).
    gene_names : (n_genes,) (or dict). groups : (n_cells,) labels (NaN cells ignored),
        shared across modalities. markers : list of names (or dict modality -> list);
        names absent from gene_names are dropped with a warning.
    normalize : "minmax" (each marker column scaled to [0, 1] across groups, as
        in the figure; constant columns -> 0) or None (raw means).
    Returns DataFrame groups x markers (or dict modality -> DataFrame).
    """
    if normalize not in (None, "minmax"):
        raise ValueError(f"normalize must be None or 'minmax', got {normalize!r}")
    return _per_modality(_group_mean, attn, gene_names, groups, markers, normalize=normalize)


def _group_mean(attn, gene_names, groups, markers, normalize):
    A = _csr(attn)
    genes = pd.Index(np.asarray(gene_names, dtype=object).astype(str))
    if len(genes) != A.shape[1]:
        raise ValueError(f"{len(genes)} gene names for {A.shape[1]} columns")
    g = pd.Series(np.asarray(groups, dtype=object))
    if len(g) != A.shape[0]:
        raise ValueError(f"groups has {len(g)} entries for {A.shape[0]} cells")
    markers = [str(m) for m in ([markers] if isinstance(markers, str) else markers)]
    found = [m for m in markers if m in genes]
    lost = [m for m in markers if m not in genes]
    if lost:
        warnings.warn(f"markers not in gene_names, dropped: {lost}", UserWarning, stacklevel=3)
    if not found:
        raise KeyError("none of the markers are in gene_names")
    valid = ~g.isna().to_numpy()
    if not valid.any():
        raise ValueError("all group labels are NaN")
    cats, codes = np.unique(g[valid].astype(str), return_inverse=True)
    rows = np.flatnonzero(valid)
    col = genes.get_indexer(found)
    G = sp.csr_matrix((np.ones(rows.size), (codes, rows)), shape=(len(cats), A.shape[0]))
    counts = np.bincount(codes, minlength=len(cats)).astype(np.float64)
    S = G @ A[:, col]
    M = (S.toarray() if sp.issparse(S) else np.asarray(S)) / counts[:, None]
    if normalize == "minmax":
        lo, hi = M.min(axis=0), M.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        M = (M - lo) / span
    return pd.DataFrame(M, index=pd.Index(cats, name="group"), columns=pd.Index(found, name="marker"))
