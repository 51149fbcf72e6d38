"""Post-mapping analysis of the paper's COVID-19 experiment (Fig 5): exhausted CD8 T annotation,
HLA-DR-low S100A-high monocytes, per-donor subtype percentages, group tests and differential
expression.

Inputs are the query cells after hierarchical mapping: log-normalised expression in ``X``
(``normalize_total`` + ``log1p``), the mapped Level-1 / Level-2 labels and the donor and
disease-status columns in ``obs``. Every function returns a table; plotting is elsewhere.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

#: the paper's exhaustion gene set (Methods, "Exhausted T annotation in COVID-19 analysis")
EXHAUSTION_GENES = ("PDCD1", "TIGIT", "LAG3", "HAVCR2", "CTLA4")
EXHAUSTED = "CD8 T exhausted"
#: markers of the dysfunctional classical monocytes of Schulte-Schrepping et al. (Fig 5d)
S100A_GENES = ("S100A8", "S100A9", "S100A12")
HLA_DR_GENES = ("HLA-DRA",)
HLA_DR_LOW = "classical monocyte HLA-DR low"
#: significance stars of the paper's boxplots (Fig 5 legend)
STAR_LEVELS = ((1e-4, "****"), (1e-3, "***"), (1e-2, "**"), (5e-2, "*"))
COMPARISON_TESTS = ("mannwhitneyu", "kruskal")


def _expression(adata, genes, what: str) -> np.ndarray:
    """(n_cells, len(genes)) dense float64 of the named genes; KeyError names the missing ones."""
    genes = list(genes)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise KeyError(f"{what}: genes {missing} are not in the data ({adata.n_vars} genes); "
                       f"keep them when selecting genes")
    x = adata[:, genes].X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def minmax_scale(x: np.ndarray) -> np.ndarray:
    """Scale each column of ``x`` (n_cells, n_genes) to [0, 1]; a constant column becomes 0."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (x - lo) / span


def exhaustion_score(adata, genes=EXHAUSTION_GENES) -> np.ndarray:
    """The paper's exhaustion score of each cell of ``adata`` (give it the CD8 T cells).

    Each gene's log-normalised expression is scaled to [0, 1] over the cells given, and the
    scaled values are summed: (n_cells,) in [0, len(genes)].
    """
    if adata.n_obs == 0:
        return np.zeros(0)
    return minmax_scale(_expression(adata, genes, "exhaustion score")).sum(axis=1)


def annotate_exhausted(labels, cd8_mask, score, threshold: float = 0.0, label: str = EXHAUSTED) -> np.ndarray:
    """Labels with CD8 T cells whose exhaustion ``score`` is > ``threshold`` relabelled ``label``.

    labels : (n,) Level-2 labels; cd8_mask : (n,) bool, the cells annotated CD8 T;
    score : (n_cd8,) scores of the cells in ``cd8_mask`` (in order). The paper: "CD8 T cells with
    exhausted score more than 0 are annotated as exhausted T cell" (threshold 0, strict).
    """
    out = np.asarray(labels, dtype=object).copy()
    cd8 = np.flatnonzero(np.asarray(cd8_mask, dtype=bool))
    score = np.asarray(score, dtype=np.float64)
    if score.shape != cd8.shape:
        raise ValueError(f"score has shape {score.shape}, expected ({cd8.size},) (one per CD8 T cell)")
    out[cd8[score > threshold]] = label
    return out


def hla_dr_low_s100a_high(adata, reference_mask, *, quantile: float = 0.1,
                          s100a_genes=S100A_GENES, hla_genes=HLA_DR_GENES) -> pd.DataFrame:
    """Flag HLA-DR-low S100A-high cells among classical monocytes (give it those cells).

    A cell is flagged when its mean HLA-DR expression is below the ``quantile`` of the
    reference cells (``reference_mask``, e.g. healthy donors' classical monocytes) and its mean
    S100A expression is above their ``1 - quantile`` quantile. Returns a frame (index = obs
    names) with columns hla_dr, s100a (means of log-normalised values) and flagged (bool).
    """
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    ref = np.asarray(reference_mask, dtype=bool)
    if ref.shape != (adata.n_obs,):
        raise ValueError(f"reference_mask has shape {ref.shape}, expected ({adata.n_obs},)")
    if not ref.any():
        raise ValueError("no reference cells to set the HLA-DR / S100A thresholds (e.g. no healthy donors)")
    hla = _expression(adata, hla_genes, "HLA-DR-low monocytes").mean(axis=1)
    s100 = _expression(adata, s100a_genes, "S100A-high monocytes").mean(axis=1)
    hla_cut = np.quantile(hla[ref], quantile)
    s100_cut = np.quantile(s100[ref], 1.0 - quantile)
    return pd.DataFrame({"hla_dr": hla, "s100a": s100, "flagged": (hla < hla_cut) & (s100 > s100_cut)},
                        index=adata.obs_names)


def subtype_percentages(obs: pd.DataFrame, subtype_key: str, donor_key: str = "donor",
                        condition_key: str = "condition", subtypes=None) -> pd.DataFrame:
    """Per-donor percentage of each subtype among the cells of ``obs`` (one parent type).

    Give it the cells of one parent type (e.g. the CD8 T cells). Returns long format: donor,
    condition, subtype, n, n_parent, percent; every donor has a row for every subtype (0 where
    absent), and a donor's percentages sum to 100. Donors without parent cells are left out.
    """
    for key in (subtype_key, donor_key, condition_key):
        if key not in obs.columns:
            raise KeyError(f"column {key!r} not in obs; available: {list(obs.columns)}")
    if obs.empty:
        raise ValueError("no cells of the parent type")
    sub = obs[subtype_key].astype(str)
    donor = obs[donor_key].astype(str)
    cond = obs.groupby(donor, observed=True)[condition_key].agg(lambda s: s.astype(str).unique())
    several = cond[cond.map(len) > 1]
    if len(several):
        raise ValueError(f"donors {list(several.index)} have more than one {condition_key!r}")
    subtypes = sorted(sub.unique()) if subtypes is None else [str(s) for s in subtypes]
    counts = pd.crosstab(donor, sub).reindex(columns=subtypes, fill_value=0)
    n_parent = pd.Series(donor).value_counts()
    rows = []
    for d in counts.index:
        for s in subtypes:
            n = int(counts.loc[d, s])
            rows.append({"donor": d, "condition": cond[d][0], "subtype": s, "n": n,
                         "n_parent": int(n_parent[d]), "percent": 100.0 * n / n_parent[d]})
    return pd.DataFrame(rows)


def stars(p: float) -> str:
    """Significance stars as in the paper's boxplots: * < 0.05 ... **** < 1e-4; else 'ns'."""
    if p is None or not np.isfinite(p):
        return "n/a"
    for cut, s in STAR_LEVELS:
        if p < cut:
            return s
    return "ns"


def compare_groups(pct: pd.DataFrame, groups=("healthy", "moderate", "severe"),
                   test: str = "mannwhitneyu", value: str = "percent") -> pd.DataFrame:
    """Compare per-donor percentages between disease statuses, per subtype.

    test : 'mannwhitneyu' -> two-sided Mann-Whitney U for every pair of ``groups`` (exact
        p-value when there are no ties, as scipy chooses); 'kruskal' -> Kruskal-Wallis H across
        all ``groups``. Donors are the samples (not cells).
    Returns subtype, group1, group2 ('' for Kruskal-Wallis), n1, n2, median1, median2,
    statistic, p, p_adj (Benjamini-Hochberg over all rows), stars (from p), test.
    """
    if test not in COMPARISON_TESTS:
        raise ValueError(f"test must be one of {COMPARISON_TESTS}, got {test!r}")
    groups = [str(g) for g in groups]
    rows = []
    for subtype, d in pct.groupby("subtype", sort=True):
        vals = {g: d.loc[d["condition"].astype(str) == g, value].to_numpy(float) for g in groups}
        if test == "kruskal":
            present = [v for v in vals.values() if v.size]
            if len(present) < 2 or np.ptp(np.concatenate(present)) == 0:
                stat, p = np.nan, (1.0 if len(present) >= 2 else np.nan)
            else:
                stat, p = stats.kruskal(*present)
            rows.append({"subtype": subtype, "group1": "+".join(groups), "group2": "", "n1": sum(map(len, present)),
                         "n2": 0, "median1": np.nan, "median2": np.nan, "statistic": stat, "p": p})
            continue
        for g1, g2 in itertools.combinations(groups, 2):
            a, b = vals[g1], vals[g2]
            if a.size == 0 or b.size == 0:
                stat, p = np.nan, np.nan
            elif np.ptp(np.concatenate([a, b])) == 0:
                stat, p = a.size * b.size / 2.0, 1.0   # all values equal: no evidence of a difference
            else:
                r = stats.mannwhitneyu(a, b, alternative="two-sided")
                stat, p = float(r.statistic), float(r.pvalue)
            rows.append({"subtype": subtype, "group1": g1, "group2": g2, "n1": a.size, "n2": b.size,
                         "median1": np.median(a) if a.size else np.nan,
                         "median2": np.median(b) if b.size else np.nan, "statistic": stat, "p": p})
    out = pd.DataFrame(rows)
    out["p_adj"] = benjamini_hochberg(out["p"].to_numpy(float))
    out["stars"] = [stars(p) for p in out["p"]]
    out["test"] = {"mannwhitneyu": "Mann-Whitney U, two-sided, per donor",
                   "kruskal": "Kruskal-Wallis H, per donor"}[test]
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values; NaN stays NaN."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def differential_expression(adata, groupby: str, group: str, reference: str = "rest",
                            genes=None) -> pd.DataFrame:
    """Differential expression of ``group`` vs ``reference`` through scanpy's ``rank_genes_groups``.

    Wilcoxon rank-sum test over all genes of ``adata`` (log-normalised), Benjamini-Hochberg
    adjusted across them; log2 fold change as scanpy computes it (from expm1 of the log data).
    Returns gene, group, reference, log2fc, score, p, p_adj, test (all genes, or ``genes`` in order).
    """
    import scanpy as sc

    if groupby not in adata.obs.columns:
        raise KeyError(f"column {groupby!r} not in obs")
    labels = adata.obs[groupby].astype(str)
    for g in [group] + ([] if reference == "rest" else [reference]):
        if int((labels == g).sum()) < 2:
            raise ValueError(f"differential expression needs >= 2 cells of {g!r} in {groupby!r}, "
                             f"got {int((labels == g).sum())}")
    if reference == "rest" and int((labels != group).sum()) < 2:
        raise ValueError(f"differential expression needs >= 2 cells outside {group!r}")
    b = adata.copy()
    b.obs["_de_group"] = pd.Categorical(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log2(0) of genes absent from one side
        sc.tl.rank_genes_groups(b, "_de_group", groups=[group], reference=reference, method="wilcoxon",
                                corr_method="benjamini-hochberg", key_added="de", use_raw=False)
    df = sc.get.rank_genes_groups_df(b, group=group, key="de")
    df = df.rename(columns={"names": "gene", "logfoldchanges": "log2fc", "scores": "score",
                            "pvals": "p", "pvals_adj": "p_adj"})
    df.insert(1, "group", group)
    df.insert(2, "reference", reference)
    df["test"] = "Wilcoxon rank-sum (scanpy rank_genes_groups), Benjamini-Hochberg"
    if genes is not None:
        missing = [g for g in genes if g not in set(df["gene"])]
        if missing:
            raise KeyError(f"genes {missing} are not in the data")
        df = df.set_index("gene").loc[list(genes)].reset_index()
    return df[["gene", "group", "reference", "log2fc", "score", "p", "p_adj", "test"]]
