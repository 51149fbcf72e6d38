"""Post-mapping analysis of the paper's COVID-19 experiment (Fig 5): exhausted CD8 T annotation,
HLA-DR-low S100A-high monocytes, per-donor subtype percentages, group tests and differential
expression.

Inputs are the query cells after hierarchical mapping: log-normalised expression in ``X``
(``normalize_total`` + ``log1p``), the mapped Level-1 / Level-2 labels and the donor and
disease-status columns in ``obs``. Every function returns a table; plotting is elsewhere.
Gene sets, compartment labels and state names come from the config's ``covid`` section (its
defaults, the paper's choices, live in rules/config.schema.yaml: :func:`settings`).
"""
from __future__ import annotations

import itertools
import os
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

#: significance stars of the paper's boxplots (Fig 5 legend)
STAR_LEVELS = ((1e-4, "****"), (1e-3, "***"), (1e-2, "**"), (5e-2, "*"))
COMPARISON_TESTS = ("mannwhitneyu", "kruskal")
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "rules", "config.schema.yaml")


def settings(cfg: dict | None = None) -> dict:
    """The config's ``covid`` section with the schema's defaults filled in (the paper's gene
    sets, compartments and DE calls are those defaults); validated, so a misspelt key fails."""
    import copy

    from snakemake.utils import validate

    config = {"datasets": {}, "experiments": {}, "covid": copy.deepcopy(cfg or {})}
    validate(config, SCHEMA)
    return config["covid"]


def check_query(query, cfg: dict, dataset: str = "the query") -> None:
    """Fail before the mapping when the query cannot give the Fig 5 analysis what it needs.

    Checks (messages name the config key): ``donor_key`` and ``condition_key`` are obs columns;
    the control status ``conditions[0]`` and at least one other status occur; every donor has
    one status; the exhaustion, HLA-DR and S100A genes are measured.
    """
    for key in ("donor_key", "condition_key"):
        if cfg[key] not in query.obs.columns:
            raise KeyError(f"covid.{key} = {cfg[key]!r} is not an obs column of {dataset} "
                           f"({list(query.obs.columns)}); keep it with datasets.<query>.local.keep_obs")
    found = set(query.obs[cfg["condition_key"]].astype(str))
    conditions = [str(c) for c in cfg["conditions"]]
    if conditions[0] not in found or not found & set(conditions[1:]):
        raise ValueError(f"covid.conditions = {conditions}: {dataset} has {cfg['condition_key']!r} values "
                         f"{sorted(found)}; the first (control) and at least one other must occur")
    per_donor = query.obs.groupby(query.obs[cfg["donor_key"]].astype(str), observed=True)[cfg["condition_key"]]
    several = per_donor.nunique()
    if (several > 1).any():
        raise ValueError(f"donors {list(several.index[several > 1])} of {dataset} have more than one "
                         f"{cfg['condition_key']!r} (covid.donor_key must name donors, not samples of mixed status)")
    for key in ("exhaustion_genes", "hla_dr_genes", "s100a_genes"):
        missing = [g for g in cfg[key] if g not in query.var_names]
        if missing:
            raise KeyError(f"covid.{key}: genes {missing} are not measured in {dataset}")


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


def exhaustion_score(adata, genes) -> np.ndarray:
    """The paper's exhaustion score of each cell of ``adata`` (give it the CD8 T cells).

    Each gene's log-normalised expression is scaled to [0, 1] over the cells given, and the
    scaled values are summed: (n_cells,) in [0, len(genes)].
    """
    if adata.n_obs == 0:
        return np.zeros(0)
    return minmax_scale(_expression(adata, genes, "exhaustion score")).sum(axis=1)


def annotate_exhausted(labels, cd8_mask, score, label: str, threshold: float = 0.0) -> np.ndarray:
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


def hla_dr_low_s100a_high(adata, reference_mask, *, s100a_genes, hla_genes, quantile: float = 0.05) -> pd.DataFrame:
    """Flag HLA-DR-low S100A-high cells among classical monocytes (give it those cells).

    Score = S100A - HLA-DR, each the mean log-normalised expression of its genes scaled to
    [0, 1] over the cells given. A cell is flagged when its score is above the ``1 - quantile``
    quantile of the reference cells (``reference_mask``, e.g. healthy donors' classical
    monocytes), so about ``quantile`` of the reference cells are flagged by construction (one
    combined score, because single low markers are mostly zero counts). Returns a frame
    (index = obs names): hla_dr, s100a (means of log-normalised values), score, flagged.
    """
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    ref = np.asarray(reference_mask, dtype=bool)
    if ref.shape != (adata.n_obs,):
        raise ValueError(f"reference_mask has shape {ref.shape}, expected ({adata.n_obs},)")
    if not ref.any():
        raise ValueError("no reference cells to set the HLA-DR / S100A threshold (e.g. no healthy donors)")
    hla = _expression(adata, hla_genes, "HLA-DR-low monocytes").mean(axis=1)
    s100 = _expression(adata, s100a_genes, "S100A-high monocytes").mean(axis=1)
    score = minmax_scale(np.c_[s100, hla]) @ np.array([1.0, -1.0])
    cut = np.quantile(score[ref], 1.0 - quantile)
    return pd.DataFrame({"hla_dr": hla, "s100a": s100, "score": score, "flagged": score > cut},
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
    cond = obs[condition_key].astype(str).groupby(donor.to_numpy()).agg(lambda s: tuple(sorted(set(s))))
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


# ----------------------------------------------------------------------------------------------
# the experiment: reference model -> query fine-tuning -> hierarchical mapping -> analysis
REFERENCE, QUERY = "reference", "query"


def log_normalise(adata, target_sum: float = 1e4):
    """Copy of ``adata`` (raw counts) with X = log1p(counts per ``target_sum``); counts kept in layers."""
    import scanpy as sc

    a = adata.copy()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=target_sum)
    sc.pp.log1p(a)
    return a


def model_genes(ref, query, n_top_genes="all") -> list[str]:
    """Genes the model sees: the reference's genes also measured in the query (reference order),
    optionally the ``n_top_genes`` most variable of them in the reference (log data)."""
    import scanpy as sc

    shared = [g for g in ref.var_names if g in set(query.var_names)]
    if len(shared) < 0.5 * ref.n_vars:
        raise ValueError(f"reference and query share {len(shared)} of the reference's {ref.n_vars} genes; "
                         "check that both use the same gene symbols")
    if n_top_genes == "all" or int(n_top_genes) >= len(shared):
        return shared
    r = ref[:, shared].copy()
    sc.pp.highly_variable_genes(r, n_top_genes=int(n_top_genes))
    return list(r.var_names[r.var["highly_variable"]])


def hierarchical_mapping(ref, query, model_dir: str, *, level_keys=("celltype.l1", "celltype.l2"),
                         batch_key: str = "batch", n_top_genes="all", k: int = 5, seed: int = 0,
                         threads: int | None = None, train: dict | None = None, finetune: dict | None = None):
    """The paper's COVID mapping: reference model, unsupervised query fine-tuning, Level-1 then Level-2.

    ref, query : log-normalised AnnData (:func:`log_normalise`); ``ref.obs`` has ``level_keys``
    (coarse -> fine). Trains Concerto on the reference (``train``: epochs, batch_size), saves it
    to ``model_dir/reference``, fine-tunes a copy on the query without labels
    (:meth:`concerto_core.Concerto.finetune_query`; ``finetune``: epochs, lr, batch_size) to
    ``model_dir/finetuned``, embeds both with the fine-tuned model and votes each level among the
    reference cells of the query's predicted coarser label (one neighbour index per group).
    Returns the joint AnnData (reference then query cells; obs 'dataset', 'cell' (the input
    cell name), 'level1', 'level2',
    ... = reference labels / query predictions with 'conf_score_<level>'; obsm X_concerto; X
    the log data on the model genes) and the fitted :class:`ReferenceIndexes`.
    """
    import os

    import anndata as ad
    from concerto_core import Concerto, ReferenceIndexes, set_cpu_threads, transfer_labels

    set_cpu_threads(threads)
    level_keys = list(level_keys)
    for key in level_keys + [batch_key]:
        if key not in ref.obs.columns:
            raise KeyError(f"reference obs has no {key!r}; available: {list(ref.obs.columns)}")
    if batch_key not in query.obs.columns:
        raise KeyError(f"query obs has no {batch_key!r}")
    genes = model_genes(ref, query, n_top_genes)
    r, q = ref[:, genes].copy(), query[:, genes].copy()
    ref_dir, ft_dir = os.path.join(model_dir, "reference"), os.path.join(model_dir, "finetuned")
    model = Concerto(r, batch_key=batch_key, seed=seed)
    model.train(checkpoint_dir=None, **(train or {}))
    model.save(ref_dir, overwrite=True)
    ft = Concerto.finetune_query(ref_dir, q, ft_dir, batch_key=batch_key, seed=seed, overwrite=True,
                                 **(finetune or {}))
    r.obsm["X_concerto"] = np.asarray(ft.get_latent_representation(r, batch_key=batch_key), np.float32)
    q.obsm["X_concerto"] = np.asarray(ft.get_latent_representation(q, batch_key=batch_key), np.float32)
    cache = ReferenceIndexes(r.obsm["X_concerto"])
    transfer_labels(r, q, level_keys, k=k, hierarchical=True, key_added="predicted", index_cache=cache)
    # reference and query may share cell names: joint names get a '-reference' / '-query' suffix,
    # obs 'cell' keeps the input names
    joint = ad.concat({REFERENCE: r, QUERY: q}, label="dataset", join="inner", index_unique="-")
    joint.obs["cell"] = np.concatenate([r.obs_names.to_numpy(), q.obs_names.to_numpy()]).astype(str)
    for i, key in enumerate(level_keys, start=1):
        vals = np.concatenate([r.obs[key].astype(str).to_numpy(), q.obs[f"predicted_{key}"].astype(str).to_numpy()])
        joint.obs[f"level{i}"] = pd.Categorical(vals)
        joint.obs[f"conf_score_level{i}"] = np.concatenate([np.ones(r.n_obs), q.obs[f"conf_score_{key}"].to_numpy()])
    joint.uns["covid_mapping"] = {"level_keys": level_keys, "k": int(k), "n_model_genes": len(genes),
                                  "seed": int(seed), "reference_model": ref_dir, "finetuned_model": ft_dir,
                                  "n_group_indexes": int(cache.n_built)}
    return joint, cache


def annotate_query_states(query, cfg: dict, *, level1: str = "level1", level2: str = "level2") -> pd.DataFrame:
    """Query cell states beyond the reference's labels (log data on all query genes in X).

    cfg : the ``covid`` settings (:func:`settings`). Returns a frame (query obs names) with
    'state' (Level-2 label; CD8 T cells with exhaustion score > ``exhaustion_threshold`` ->
    ``exhausted_label``; classical monocytes HLA-DR-low S100A-high relative to the first
    condition's (healthy) donors -> ``hla_dr_low_label``), 'exhaustion_score' (CD8 T cells;
    NaN else), 'hla_dr' and 's100a' (classical monocytes; NaN else).
    """
    obs = query.obs
    comps = cfg["compartments"]
    state = obs[level2].astype(str).to_numpy(dtype=object)
    out = pd.DataFrame(index=query.obs_names)
    is_cd8 = (obs[level1].astype(str) == comps["cd8"]["level1"]).to_numpy()
    out["exhaustion_score"] = np.nan
    if is_cd8.any():
        score = exhaustion_score(query[is_cd8], cfg["exhaustion_genes"])
        out.loc[is_cd8, "exhaustion_score"] = score
        state = annotate_exhausted(state, is_cd8, score, cfg["exhausted_label"], cfg["exhaustion_threshold"])
    is_cm = ((obs[level1].astype(str) == comps["mono"]["level1"])
             & (obs[level2].astype(str) == cfg["classical_monocyte"])).to_numpy()
    out["hla_dr"] = np.nan
    out["s100a"] = np.nan
    if is_cm.any():
        ref_mask = (obs.loc[is_cm, cfg["condition_key"]].astype(str) == str(cfg["conditions"][0])).to_numpy()
        f = hla_dr_low_s100a_high(query[is_cm], ref_mask, s100a_genes=cfg["s100a_genes"],
                                  hla_genes=cfg["hla_dr_genes"], quantile=cfg["hla_dr_quantile"])
        out.loc[is_cm, ["hla_dr", "s100a"]] = f[["hla_dr", "s100a"]].to_numpy()
        cm_idx = np.flatnonzero(is_cm)
        state[cm_idx[f["flagged"].to_numpy()]] = cfg["hla_dr_low_label"]
    out.insert(0, "state", state)
    return out


def status_de(adata, states, genes, conditions, *, min_cells: int = 2) -> pd.DataFrame:
    """Per-status differential expression within each state of one compartment (Fig 5c/5d).

    adata : the compartment's cells (log data); states : (n_cells,) state of each cell;
    ``adata.obs['condition']`` the disease status. Within every state, each status after the
    first in ``conditions`` is compared with the first (healthy) by
    :func:`differential_expression` (Wilcoxon rank-sum over cells, BH over all genes). A
    comparison with fewer than ``min_cells`` cells on a side is a row per gene whose note says
    why. Returns state, gene, group (status), reference (healthy), n_group, n_reference,
    log2fc, score, p, p_adj, test, note.
    """
    states = np.asarray(states, dtype=str)
    if states.shape != (adata.n_obs,):
        raise ValueError(f"states has shape {states.shape}, expected ({adata.n_obs},)")
    cond = adata.obs["condition"].astype(str).to_numpy()
    healthy = str(conditions[0])
    rows = []
    for s in sorted(set(states)):
        m = states == s
        sub = adata[m].copy()
        for c in map(str, conditions[1:]):
            n_g, n_r = int((cond[m] == c).sum()), int((cond[m] == healthy).sum())
            head = {"state": s, "group": c, "reference": healthy, "n_group": n_g, "n_reference": n_r}
            if min(n_g, n_r) < min_cells:
                rows.append(pd.DataFrame({"gene": list(genes), **head,
                                          "note": f"not computed: {n_g} {c} and {n_r} {healthy} cells "
                                                  f"(need >= {min_cells} each)"}))
                continue
            de = differential_expression(sub, "condition", c, healthy, genes=genes)
            rows.append(de.drop(columns=["group", "reference"]).assign(**head, note=""))
    cols = ["state", "gene", "group", "reference", "n_group", "n_reference", "log2fc", "score", "p", "p_adj",
            "test", "note"]
    return pd.concat(rows, ignore_index=True).reindex(columns=cols)


#: figure file -> (paper panel, compartment or None, title, kind); drawn by rules/covid.smk. kind:
#: 'mapping' (5a), 'compartment' (UMAPs, heatmap, boxplots), 'status_de' (per-status DE dot plot)
FIGURES = {
    "fig5a_hierarchical_mapping": ("5a", None, "COVID-19 query mapped onto the healthy reference: Level-1 labels",
                                   "mapping"),
    "fig5b_cd8_t": ("5b", "cd8", "CD8 T cells: Level-2 subtypes and exhausted CD8 T by disease status",
                    "compartment"),
    "fig5c_nk": ("5c", "nk", "NK cells: CD56bright, CD56dim CD16bright, proliferating by disease status",
                 "compartment"),
    "fig5c_nk_status_de": ("5c", "nk", "NK cells: marker DE per subtype, each patient status vs control",
                           "status_de"),
    "fig5d_monocytes": ("5d", "mono", "Monocytes: classical vs non-classical and HLA-DR-low S100A-high by status",
                        "compartment"),
    "fig5d_monocytes_status_de": ("5d", "mono", "Monocytes: marker DE per subtype, each patient status vs control",
                                  "status_de"),
}
#: tables of :func:`analyse` (results/covid/<name>.tsv)
TABLES = ("states", "percentages", "tests", "markers", "de", "status_de")


def analyse(query, cfg: dict) -> dict[str, pd.DataFrame]:
    """Fig 5 tables from the mapped query (log data on all query genes; obs level1, level2).

    cfg : the ``covid`` settings (:func:`settings`): donor_key, condition_key, conditions, test,
    the gene sets and compartments. Returns {'states': per cell, 'percentages': per donor x
    subtype within each compartment, 'tests': group comparisons (``test`` and Kruskal-Wallis),
    'markers': mean expression per compartment x state, 'de': the configured DE calls,
    'status_de': per-status DE of the ``status_de`` compartments} (DE rows of a group the
    mapping did not produce say why in 'note').
    """
    donor_key, condition_key, conditions = cfg["donor_key"], cfg["condition_key"], list(cfg["conditions"])
    for key in ("level1", "level2"):
        if key not in query.obs.columns:
            raise KeyError(f"query obs has no {key!r} (the mapped labels)")
    check_query(query, cfg)
    st = annotate_query_states(query, cfg)
    obs = query.obs
    states = pd.concat([obs[[donor_key, condition_key, "level1", "level2"]].astype(str)
                        .rename(columns={donor_key: "donor", condition_key: "condition"}), st], axis=1)
    if "cell_type" in obs:
        states["true_label"] = obs["cell_type"].astype(str)
    pcts, tests, markers, des, sdes = [], [], [], [], []
    for name, comp in cfg["compartments"].items():
        m = (states["level1"] == comp["level1"]).to_numpy()
        if not m.any():
            warnings.warn(f"no query cells mapped to {comp['level1']!r}; compartment {name} is empty")
            continue
        pct = subtype_percentages(states[m], "state").assign(compartment=name)
        pcts.append(pct)
        for t in dict.fromkeys([cfg["test"], "kruskal"]):
            tests.append(compare_groups(pct, conditions, test=t).assign(compartment=name))
        genes = [g for g in comp["markers"] if g in query.var_names]
        x = _expression(query[m], genes, "markers")
        mk = pd.DataFrame(x, columns=genes).groupby(states.loc[m, "state"].to_numpy()).mean()
        mk = mk.reset_index(names="state").melt(id_vars="state", var_name="gene", value_name="mean_expression")
        markers.append(mk.assign(compartment=name))
        if name in cfg["status_de"]:
            sub = query[m].copy()
            sub.obs["condition"] = states.loc[m, "condition"].to_numpy()
            sdes.append(status_de(sub, states.loc[m, "state"].to_numpy(), genes, conditions).assign(compartment=name))
    for c in cfg["de"]:
        comp = cfg["compartments"][c["compartment"]]
        m = (states["level1"] == comp["level1"]).to_numpy()
        sub = query[m].copy()
        sub.obs["state"] = states.loc[m, "state"].to_numpy()
        try:
            de = differential_expression(sub, "state", c["group"], c["reference"], genes=c["genes"])
            des.append(de.assign(compartment=c["compartment"], note=""))
        except (ValueError, KeyError) as e:   # a group the mapping did not produce: say so
            des.append(pd.DataFrame({"gene": c["genes"], "group": c["group"], "reference": c["reference"],
                                     "compartment": c["compartment"], "note": f"not computed: {e}"}))
    de_cols = ["gene", "group", "reference", "log2fc", "score", "p", "p_adj", "test", "compartment", "note"]
    sde_cols = ["state", "gene", "group", "reference", "n_group", "n_reference", "log2fc", "score", "p", "p_adj",
                "test", "note", "compartment"]
    return {"states": states.reset_index(names="cell"),
            "percentages": pd.concat(pcts, ignore_index=True),
            "tests": pd.concat(tests, ignore_index=True),
            "markers": pd.concat(markers, ignore_index=True),
            "de": pd.concat(des, ignore_index=True).reindex(columns=de_cols) if des else pd.DataFrame(columns=de_cols),
            "status_de": pd.concat(sdes, ignore_index=True) if sdes else pd.DataFrame(columns=sde_cols)}


def mapping_accuracy(obs: pd.DataFrame, truth_keys, levels=("level1", "level2")) -> pd.DataFrame:
    """Accuracy of each mapped level against known query labels (stand-in), on the query cells
    whose true label exists at that level in the reference (``reference_labels_<level>`` in
    ``obs.attrs``, else all cells). Returns level, truth, n_cells, accuracy, n_unseen."""
    rows = []
    for level, truth in zip(levels, truth_keys):
        pred, true = obs[level].astype(str), obs[truth].astype(str)
        known = obs.attrs.get(f"reference_labels_{level}")
        seen = true.isin(known) if known is not None else pd.Series(True, index=obs.index)
        rows.append({"level": level, "truth": truth, "n_cells": int(seen.sum()),
                     "accuracy": float((pred[seen] == true[seen]).mean()) if seen.any() else np.nan,
                     "n_unseen": int((~seen).sum())})
    return pd.DataFrame(rows)


def caption(cfg: dict, datasets: dict, figure: str) -> str:
    """Caption of a Fig 5 figure: panel, the data used (stand-in or real), the tests and rules."""
    panel, comp, _, kind = FIGURES[figure]

    def data(role):
        d = datasets[cfg[role]]
        if d["source"] == "standin":
            return f"{role} {cfg[role]} = simulated stand-in (make_{d.get('standin', {}).get('maker', cfg[role])})"
        return f"{role} {cfg[role]} = real data ({d['source']})"

    healthy = cfg["conditions"][0]
    text = (f"Paper panel {panel}. Data: {data('reference')}; {data('query')}. Concerto trained on the reference, "
            f"fine-tuned on the query without labels, Level-1 then Level-2 labels by {cfg['k']}-NN vote within "
            "the predicted Level-1 group.")
    if kind == "compartment":
        text += (f" Percentages are per donor within the compartment ({cfg['compartments'][comp]['level1']}); "
                 f"stars: two-sided Mann-Whitney U of each patient group vs {healthy} (* p<0.05, ** <0.01, "
                 "*** <0.001, **** <1e-4; Kruskal-Wallis and BH-adjusted p in tests.tsv).")
    if kind == "status_de":
        text += (f" DE within each {cfg['compartments'][comp]['level1']} state, each patient status vs {healthy}: "
                 "scanpy rank_genes_groups, Wilcoxon rank-sum over cells (cells of a donor are not independent: "
                 "read with the per-donor percentage tests), Benjamini-Hochberg over all genes; colour log2 fold "
                 "change (clipped at +-3), size -log10 adjusted p, black edge adj. p < 0.05; 'n/a' where a side has < 2 cells "
                 "(status_de.tsv).")
    if kind == "compartment" and comp == "cd8":
        text += (f" Exhausted CD8 T: {', '.join(cfg['exhaustion_genes'])} each min-max scaled over CD8 T cells, "
                 f"summed, > {cfg['exhaustion_threshold']} (paper Methods). DE: scanpy rank_genes_groups, "
                 "Wilcoxon rank-sum, Benjamini-Hochberg.")
    if kind == "compartment" and comp == "mono":
        text += (f" HLA-DR-low S100A-high: scaled mean {'/'.join(cfg['s100a_genes'])} minus scaled mean "
                 f"{'/'.join(cfg['hla_dr_genes'])} above the {1 - cfg['hla_dr_quantile']:.2f} quantile of "
                 f"{healthy} donors' classical monocytes ({cfg['classical_monocyte']}; this study's rule, the "
                 "paper circles the region on the UMAP).")
    return text
