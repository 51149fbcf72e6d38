"""Simulated stand-ins of the paper's datasets, built on the Splat engine.

Why: the workflow must run end to end offline; each stand-in mirrors the structure of the real
dataset (labels, batches, technologies, hierarchy, modalities) and plants the biology the paper
reads off it, so the figures have something real to find. Not a substitute for the real data.

Model of every stand-in: ``mean[cell, gene] = gene_mean x prod_k factor_k[level_k(cell), gene]``
(cell type, lineage, technology, batch, condition ... factors, drawn with Splat's log-normal
DE/batch factors), named marker genes are planted as strong up-factors, library sizes are
log-normal per technology, and counts come from Splat's BCV Gamma-Poisson
(:mod:`.sampling`). Biology ("program") is drawn from ``program_seed`` and cells from ``seed``,
so e.g. a reference and a query made with different seeds share the same cell types.
All return AnnData: X CSR float32 counts, gene symbols as var_names, categorical obs columns
following :mod:`concerto_workflow.contracts`.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .sampling import draw_bcv_gene_factor, sample_counts
from .splat import lognormal_factors

_ORTHOLOG_CSV = Path(__file__).resolve().parents[3].parent / "shared/data/orthologs_human_mouse_ensembl105.csv"


# ----------------------------------------------------------------------------------------------
# building blocks
class _Program:
    """Genes (named markers first, then fillers) and their Splat base means, shape (G,)."""

    def __init__(self, named: list[str], n_genes: int, rng: np.random.Generator, filler: str = "SIM"):
        named = list(dict.fromkeys(named))
        if n_genes < len(named) + 50:
            raise ValueError(f"n_genes={n_genes} is too small: the stand-in names {len(named)} "
                             f"marker genes and needs >= {len(named) + 50}")
        self.genes = named + [f"{filler}{i:05d}" for i in range(n_genes - len(named))]
        self.index = {g: i for i, g in enumerate(self.genes)}
        self.G = n_genes
        self.rng = rng
        base = rng.gamma(0.6, 1 / 0.3, size=n_genes)
        out = lognormal_factors(n_genes, 0.05, 0.0, 4.0, 0.5, rng)
        self.gene_mean = np.where(out != 1, np.median(base) * out, base)
        # named genes: moderate baseline so markers are visible but not dominant
        q = np.quantile(self.gene_mean, [0.55, 0.85])
        self.gene_mean[: len(named)] = rng.uniform(q[0], q[1], size=len(named))

    def factors(self, n: int, de_prob=0.1, scale=0.4, loc=0.1, down=0.5) -> np.ndarray:
        """(n, G) Splat DE factors (one row per level)."""
        return np.vstack([lognormal_factors(self.G, de_prob, down, loc, scale, self.rng)
                          for _ in range(n)]) if n else np.ones((0, self.G))

    def plant(self, fac_row: np.ndarray, genes, fold: float) -> None:
        """Multiply the named genes of one factor row by ``fold`` (marker planting)."""
        for g in genes:
            fac_row[self.index[g]] *= fold


def _sample(prog: _Program, levels: list[tuple[np.ndarray, np.ndarray]], lib: np.ndarray,
            rng: np.random.Generator, bcv_common: float = 0.2, dropout_mid: float | None = None
            ) -> sp.csr_matrix:
    """Counts (N, G) for cells whose means are gene_mean x prod factors[codes].

    levels: list of (codes (N,) int, factors (L, G)); only occurring combinations are built.
    """
    codes = np.stack([c for c, _ in levels], axis=1)
    uniq, cell_state = np.unique(codes, axis=0, return_inverse=True)
    means = np.tile(prog.gene_mean, (uniq.shape[0], 1))
    for j, (_, fac) in enumerate(levels):
        means *= fac[uniq[:, j]]
    gfac = draw_bcv_gene_factor(prog.G, 60.0, rng)
    return sample_counts(means, cell_state.ravel(), lib, bcv_common=bcv_common,
                         bcv_gene_factor=gfac, rng=rng, dropout_mid=dropout_mid)


def _composition(n: int, probs: dict[str, float], rng, conc: float = 60.0) -> np.ndarray:
    """n labels drawn from a Dirichlet-perturbed composition (donor/batch variability)."""
    names = list(probs)
    p = np.array([probs[k] for k in names], float)
    p = rng.dirichlet(conc * p / p.sum() + 1e-3)
    return np.array(names, dtype=object)[rng.choice(len(names), size=n, p=p)]


def _split(n: int, weights) -> np.ndarray:
    """Batch sizes proportional to ``weights`` summing exactly to n."""
    w = np.asarray(weights, float)
    sizes = np.floor(n * w / w.sum()).astype(int)
    sizes[np.argmax(w)] += n - sizes.sum()
    return sizes


def _adata(X, obs: dict, genes, cats: dict | None = None) -> ad.AnnData:
    n = X.shape[0]
    df = pd.DataFrame({k: np.asarray(v) for k, v in obs.items()},
                      index=[f"cell{i}" for i in range(n)])
    for k in obs:
        if df[k].dtype == object or k in (cats or {}):
            df[k] = pd.Categorical(df[k].astype(str),
                                   categories=(cats or {}).get(k) or sorted(df[k].astype(str).unique()))
    return ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=df, var=pd.DataFrame(index=list(genes)))


def _codes(labels, names) -> np.ndarray:
    idx = {k: i for i, k in enumerate(names)}
    return np.array([idx[x] for x in labels])


# ----------------------------------------------------------------------------------------------
# human pancreas (scIB / Seurat panc8: 5 technologies, 8 batches, 13 cell types)
PANCREAS_MARKERS = {
    "alpha": ["GCG", "TTR", "IRX2", "ARX"],
    "beta": ["INS", "IAPP", "MAFA", "NPTX2"],
    "delta": ["SST", "HHEX", "LEPR"],
    "gamma": ["PPY", "CARTPT", "THSD7A"],
    "epsilon": ["GHRL", "ACSL1"],
    "acinar": ["PRSS1", "CPA1", "CELA3A", "CTRB1", "PNLIP", "REG1A"],
    "ductal": ["KRT19", "SOX9", "CFTR", "KRT7", "SPP1"],
    "activated_stellate": ["PDGFRA", "COL1A1", "COL1A2", "TIMP1"],
    "quiescent_stellate": ["RGS5", "PDGFRB", "NOTCH3"],
    "endothelial": ["PECAM1", "PLVAP", "VWF", "ESAM"],
    "macrophage": ["CD68", "C1QB", "AIF1", "LAPTM5"],
    "mast": ["TPSAB1", "KIT", "CPA3"],
    "schwann": ["SOX10", "CDH19", "PLP1", "S100B"],
}
PANCREAS_LINEAGE = {
    "alpha": "endocrine", "beta": "endocrine", "delta": "endocrine", "gamma": "endocrine",
    "epsilon": "endocrine", "acinar": "exocrine", "ductal": "exocrine",
    "activated_stellate": "stromal", "quiescent_stellate": "stromal", "endothelial": "stromal",
    "macrophage": "immune", "mast": "immune", "schwann": "stromal",
}
_LINEAGE_MARKERS = {"endocrine": ["CHGA", "PCSK1N", "SCG5"], "exocrine": ["SPINK1", "CLPS"],
                    "stromal": ["SPARC", "VIM"], "immune": ["PTPRC", "TYROBP"]}
PANCREAS_PROPORTIONS = {
    "alpha": 0.30, "beta": 0.27, "ductal": 0.12, "acinar": 0.12, "delta": 0.06, "gamma": 0.035,
    "activated_stellate": 0.03, "endothelial": 0.02, "quiescent_stellate": 0.012,
    "macrophage": 0.01, "mast": 0.006, "epsilon": 0.004, "schwann": 0.003,
}
#: batch -> (technology, relative size as in the real data (14,890 cells), log library size)
PANCREAS_BATCHES = {
    "inDrop1": ("inDrop", 1937, 7.6), "inDrop2": ("inDrop", 1724, 7.6),
    "inDrop3": ("inDrop", 3605, 7.6), "inDrop4": ("inDrop", 1303, 7.6),
    "CEL-seq": ("CEL-seq", 1004, 8.6), "CEL-seq2": ("CEL-seq2", 2285, 8.9),
    "Fluidigm C1": ("Fluidigm C1", 638, 10.5), "Smart-seq2": ("Smart-seq2", 2394, 10.8),
}
PANCREAS_TECHS = ["inDrop", "CEL-seq", "CEL-seq2", "Fluidigm C1", "Smart-seq2"]


def _pancreas_program(n_genes: int, program_seed: int):
    rng = np.random.default_rng([program_seed, 101])
    types = list(PANCREAS_MARKERS)
    named = [g for t in types for g in PANCREAS_MARKERS[t]] + [g for v in _LINEAGE_MARKERS.values() for g in v]
    named += ["ACTB", "GAPDH", "MALAT1", "B2M", "FTL"]
    prog = _Program(named, n_genes, rng)
    lineages = list(_LINEAGE_MARKERS)
    lin = prog.factors(len(lineages), de_prob=0.08, scale=0.6)
    for i, l in enumerate(lineages):
        prog.plant(lin[i], _LINEAGE_MARKERS[l], 10.0)
    typ = prog.factors(len(types), de_prob=0.05, scale=0.5)
    for i, t in enumerate(types):
        typ[i] *= lin[lineages.index(PANCREAS_LINEAGE[t])]
        prog.plant(typ[i], PANCREAS_MARKERS[t], 25.0)
    # technology effect (strong) and batch-within-technology effect (weak), on every gene
    tech = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.1, s, rng)
                      for s in (0.35, 0.45, 0.4, 0.55, 0.5)])
    batch = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.05, 0.08, rng) for _ in PANCREAS_BATCHES])
    return prog, types, typ, tech, batch


def make_pancreas(n_cells: int = 3000, n_genes: int = 2000, seed: int = 0, *,
                  program_seed: int = 0, drop_types: dict | None = None) -> ad.AnnData:
    """Human pancreas stand-in: 13 cell types, 5 technologies / 8 batches.

    obs: cell_type (13 types, imbalanced), batch (inDrop1-4, CEL-seq, CEL-seq2, Fluidigm C1,
    Smart-seq2), tech (inDrop, CEL-seq, CEL-seq2, Fluidigm C1, Smart-seq2). Technology batch
    effects (log-normal sd 0.35-0.55 on every gene) are much stronger than the within-technology
    ones (sd 0.08); plate-based technologies have deeper libraries. ``drop_types`` maps a
    cell type to the batches to remove it from (e.g. the paper's beta-removal experiment:
    ``{"beta": [all batches but CEL-seq2]}``). X: (n_cells, n_genes) CSR float32 counts.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    prog, types, typ, tech, bfac = _pancreas_program(n_genes, program_seed)
    rng = np.random.default_rng([seed, 102])
    batches = list(PANCREAS_BATCHES)
    sizes = _split(n_cells, [v[1] for v in PANCREAS_BATCHES.values()])
    batch = np.repeat(batches, sizes)
    ctype = np.concatenate([_composition(s, PANCREAS_PROPORTIONS, rng) for s in sizes])
    if drop_types:
        keep = np.ones(n_cells, bool)
        for t, bs in drop_types.items():
            keep &= ~((ctype == t) & np.isin(batch, list(bs)))
        batch, ctype = batch[keep], ctype[keep]
    techs = np.array([PANCREAS_BATCHES[b][0] for b in batch])
    lib = rng.lognormal(np.array([PANCREAS_BATCHES[b][2] for b in batch]), 0.35)
    X = _sample(prog, [(_codes(ctype, types), typ), (_codes(techs, PANCREAS_TECHS), tech),
                       (_codes(batch, batches), bfac)], lib, rng)
    return _adata(X, {"cell_type": ctype, "batch": batch, "tech": techs}, prog.genes,
                  cats={"cell_type": types, "batch": batches, "tech": PANCREAS_TECHS})


def synthetic_ortholog_table(human_genes, seed: int = 0, missing_frac: float = 0.08) -> pd.DataFrame:
    """In-code human -> mouse symbol table (columns human, mouse) for the stand-ins.

    Mouse symbols follow MGI capitalisation (``GCG`` -> ``Gcg``); ``missing_frac`` of the
    filler genes have no ortholog, as in real one-to-one tables. Named genes always map.
    """
    rng = np.random.default_rng([seed, 103])
    human = [g for g in human_genes if not (g.startswith("SIM") and rng.random() < missing_frac)]
    return pd.DataFrame({"human": human, "mouse": [g[:1] + g[1:].lower() for g in human]})


def _ortholog_table(human_genes, use_real: bool) -> pd.DataFrame:
    table = synthetic_ortholog_table(human_genes)
    if use_real and _ORTHOLOG_CSV.exists():  # real Ensembl 105 pairs, one-to-one only
        real = pd.read_csv(_ORTHOLOG_CSV, header=None, names=["human", "mouse"]).dropna()
        real = real[~real.human.duplicated(keep=False) & ~real.mouse.duplicated(keep=False)]
        m = dict(zip(real.human, real.mouse))
        table["mouse"] = [m.get(h, mo) for h, mo in zip(table.human, table.mouse)]
        table = table[~table.mouse.duplicated()]
    return table.reset_index(drop=True)


MOUSE_PANCREAS_TYPES = ["alpha", "beta", "delta", "gamma", "ductal", "endothelial",
                        "activated_stellate", "quiescent_stellate", "macrophage", "schwann"]


def make_pancreas_mouse_query(n_cells: int = 1000, n_genes: int = 2000, seed: int = 1, *,
                              program_seed: int = 0, species_shift: float = 0.5,
                              use_real_orthologs: bool = False) -> ad.AnnData:
    """Mouse pancreas query (Baron 2016 mouse-like) for cross-species mapping.

    Same cell-type program as :func:`make_pancreas` (same ``program_seed``) on 10 shared
    types, plus a species factor (30% of genes, log-normal sd ``species_shift``) and inDrop
    technology. var_names are mouse symbols from the ortholog table (genes without ortholog
    dropped; ``var['human_symbol']`` keeps the mapping). obs adds species = 'mouse'.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    prog, types, typ, tech, _ = _pancreas_program(n_genes, program_seed)
    rng = np.random.default_rng([seed, 104])
    species = lognormal_factors(n_genes, 0.3, 0.5, 0.0, species_shift, np.random.default_rng([program_seed, 105]))
    probs = {t: PANCREAS_PROPORTIONS[t] for t in MOUSE_PANCREAS_TYPES}
    batches = ["mouse1", "mouse2"]
    sizes = _split(n_cells, [1, 1])
    batch = np.repeat(batches, sizes)
    ctype = np.concatenate([_composition(s, probs, rng) for s in sizes])
    bfac = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.05, 0.08, rng) for _ in batches])
    lib = rng.lognormal(7.6, 0.35, size=n_cells)
    X = _sample(prog, [(_codes(ctype, types), typ), (np.zeros(n_cells, int), tech[:1] * species[None]),
                       (_codes(batch, batches), bfac)], lib, rng)
    table = _ortholog_table(prog.genes, use_real_orthologs)
    keep = [prog.index[h] for h in table.human]
    a = _adata(X[:, keep], {"cell_type": ctype, "batch": batch, "tech": np.full(n_cells, "inDrop"),
                            "species": np.full(n_cells, "mouse")}, table.mouse.tolist(),
               cats={"cell_type": MOUSE_PANCREAS_TYPES, "batch": batches})
    a.var["human_symbol"] = table.human.values
    return a


# ----------------------------------------------------------------------------------------------
# immune building blocks shared by the PBMC / thymus / COVID stand-ins
IMMUNE_MARKERS = {
    "B cell": ["MS4A1", "CD79A", "CD19"],
    "CD14+ monocyte": ["CD14", "LYZ", "S100A8", "S100A9"],
    "CD16+ monocyte": ["FCGR3A", "MS4A7"],
    "CD4+ T cell": ["CD4", "IL7R", "CCR7"],
    "Cytotoxic T cell": ["CD8A", "CD8B", "GZMK"],
    "Dendritic cell": ["FCER1A", "CST3", "CD1C"],
    "Megakaryocyte": ["PPBP", "PF4"],
    "Natural killer cell": ["NKG7", "GNLY", "KLRD1", "FCGR3A"],
    "Plasmacytoid dendritic cell": ["LILRA4", "IL3RA", "CLEC4C"],
}
IMMUNE_LINEAGE = {
    "B cell": "B", "CD14+ monocyte": "myeloid", "CD16+ monocyte": "myeloid",
    "CD4+ T cell": "T", "Cytotoxic T cell": "T", "Dendritic cell": "myeloid",
    "Megakaryocyte": "Mk", "Natural killer cell": "NK", "Plasmacytoid dendritic cell": "pDC",
}
_IMMUNE_LINEAGE_MARKERS = {"B": ["CD74", "HLA-DRA"], "myeloid": ["TYROBP", "FCER1G"],
                           "T": ["CD3D", "CD3E"], "NK": ["GZMA", "PRF1"], "Mk": ["GP9"],
                           "pDC": ["IRF7"]}
PBMC_PROPORTIONS = {"CD4+ T cell": 0.30, "Cytotoxic T cell": 0.17, "B cell": 0.12,
                    "CD14+ monocyte": 0.18, "Natural killer cell": 0.10, "CD16+ monocyte": 0.05,
                    "Dendritic cell": 0.03, "Megakaryocyte": 0.02,
                    "Plasmacytoid dendritic cell": 0.01}


def _immune_types(prog: _Program, extra_markers=None):
    """(T, G) factors for the 9 PBMC types (lineage x type, markers planted)."""
    types = list(IMMUNE_MARKERS)
    lineages = list(_IMMUNE_LINEAGE_MARKERS)
    lin = prog.factors(len(lineages), de_prob=0.08, scale=0.6)
    for i, l in enumerate(lineages):
        prog.plant(lin[i], _IMMUNE_LINEAGE_MARKERS[l], 10.0)
    lin[lineages.index("NK")] *= np.where(lin[lineages.index("T")] > 1, lin[lineages.index("T")] ** 0.5, 1)
    typ = prog.factors(len(types), de_prob=0.05, scale=0.45)
    for i, t in enumerate(types):
        typ[i] *= lin[lineages.index(IMMUNE_LINEAGE[t])]
        prog.plant(typ[i], IMMUNE_MARKERS[t], 20.0)
    if IMMUNE_LINEAGE["Cytotoxic T cell"] == "T":  # cytotoxic T shares NK's cytotoxic program
        prog.plant(typ[types.index("Cytotoxic T cell")], _IMMUNE_LINEAGE_MARKERS["NK"] + ["NKG7"], 6.0)
    return types, typ


def _immune_named():
    return ([g for v in IMMUNE_MARKERS.values() for g in v]
            + [g for v in _IMMUNE_LINEAGE_MARKERS.values() for g in v] + ["ACTB", "GAPDH", "MALAT1", "B2M"])


# ----------------------------------------------------------------------------------------------
# PBMC 45k (Ding et al. 2020): 7 protocols, 2 samples (pbmc1, pbmc2), 9 "method" batches
#: batch -> (protocol, samples, relative size, log library size, protocol effect sd)
PBMC45K_BATCHES = {
    "10x Chromium (v2) A": ("10x Chromium (v2)", ("pbmc1",), 3222, 8.0),
    "10x Chromium (v2) B": ("10x Chromium (v2)", ("pbmc1",), 3222, 8.0),
    "10x Chromium (v2)": ("10x Chromium (v2)", ("pbmc2",), 3362, 8.0),
    "10x Chromium (v3)": ("10x Chromium (v3)", ("pbmc1",), 3222, 8.6),
    "CEL-Seq2": ("CEL-Seq2", ("pbmc1", "pbmc2"), 526, 8.3),
    "Drop-seq": ("Drop-seq", ("pbmc1", "pbmc2"), 6584, 7.4),
    "Seq-Well": ("Seq-Well", ("pbmc1", "pbmc2"), 3176, 7.2),
    "inDrops": ("inDrops", ("pbmc1", "pbmc2"), 6584, 7.4),
    "Smart-seq2": ("Smart-seq2", ("pbmc1", "pbmc2"), 527, 10.5),
}
#: protocol -> batch-effect sd; Seq-Well (microwell, not droplet) is the most distant
PBMC45K_PROTOCOLS = {"10x Chromium (v2)": 0.15, "10x Chromium (v3)": 0.2, "CEL-Seq2": 0.3,
                     "Drop-seq": 0.25, "inDrops": 0.3, "Smart-seq2": 0.35, "Seq-Well": 0.7}


def make_pbmc45k(n_cells: int = 3000, n_genes: int = 2000, seed: int = 0, *, program_seed: int = 0) -> ad.AnnData:
    """PBMC 45k stand-in: 9 PBMC types; obs batch (9 methods), protocol (7), sample, tech (= protocol).

    Protocol effects differ in strength (sd 0.15 for 10x v2 ... 0.7 for Seq-Well, the most
    distant); samples add a weak donor effect. X: (n_cells, n_genes) CSR float32 counts.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    prog = _Program(_immune_named(), n_genes, np.random.default_rng([program_seed, 201]))
    types, typ = _immune_types(prog)
    protocols = list(PBMC45K_PROTOCOLS)
    pfac = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.1, s, prog.rng) for s in PBMC45K_PROTOCOLS.values()])
    sfac = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.0, 0.08, prog.rng) for _ in range(2)])
    rng = np.random.default_rng([seed, 202])
    batches = list(PBMC45K_BATCHES)
    sizes = _split(n_cells, [v[2] for v in PBMC45K_BATCHES.values()])
    batch = np.repeat(batches, sizes)
    protocol = np.array([PBMC45K_BATCHES[b][0] for b in batch])
    sample = np.array([rng.choice(PBMC45K_BATCHES[b][1]) for b in batch])
    ctype = np.concatenate([_composition(s, PBMC_PROPORTIONS, rng) for s in sizes])
    lib = rng.lognormal(np.array([PBMC45K_BATCHES[b][3] for b in batch]), 0.35)
    X = _sample(prog, [(_codes(ctype, types), typ), (_codes(protocol, protocols), pfac),
                       (_codes(sample, ["pbmc1", "pbmc2"]), sfac)], lib, rng)
    return _adata(X, {"cell_type": ctype, "batch": batch, "tech": protocol, "protocol": protocol,
                      "sample": sample}, prog.genes,
                  cats={"cell_type": types, "batch": batches, "protocol": protocols, "tech": protocols})


# ----------------------------------------------------------------------------------------------
# thymus (Park et al. 2020) mixed with PBMC 45k: T-cell development DN -> DP -> CD4 SP / CD8 SP
THYMUS_STAGES = {  # stage -> (parent stage, markers planted at the stage's end)
    "DN": (None, ["CD34", "PTCRA", "IGLL1"]),
    "DP": ("DN", ["RAG1", "RAG2", "DNTT", "CD4", "CD8A", "CD8B"]),
    "CD4+T(SP)": ("DP", ["CD4", "CD40LG", "CCR7"]),
    "CD8+T(SP)": ("DP", ["CD8A", "CD8B", "CCR7"]),
}


def make_thymus(n_cells: int = 3000, n_genes: int = 2000, seed: int = 0, *, program_seed: int = 0,
                pbmc_fraction: float = 0.35, n_steps: int = 20) -> ad.AnnData:
    """Thymus + PBMC stand-in. Thymocytes lie on Splat-style paths DN -> DP -> CD4/CD8 SP.

    A thymocyte's log mean moves linearly along its stage's segment (start = parent's end);
    ``obs['pseudotime']`` is its position (0 at DN start). SP-stage markers that are also DP
    markers (CD4 or CD8A/B) are switched off in the other SP lineage, so CD4 SP loses CD8.
    obs: cell_type (4 stages + 9 PBMC types), batch (donor), source (thymus/pbmc), tech.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    if not 0 <= pbmc_fraction <= 1:
        raise ValueError(f"pbmc_fraction must lie in [0, 1], got {pbmc_fraction}")
    named = _immune_named() + [g for _, m in THYMUS_STAGES.values() for g in m]
    prog = _Program(named, n_genes, np.random.default_rng([program_seed, 301]))
    types, typ = _immune_types(prog)
    stages = list(THYMUS_STAGES)
    t_line = typ[types.index("CD4+T(SP)" if False else "CD4+ T cell")] ** 0.5  # T-lineage tone
    end = {}
    for s in stages:
        parent, markers = THYMUS_STAGES[s]
        start = t_line if parent is None else end[parent]
        f = start * prog.factors(1, de_prob=0.05, scale=0.4)[0]
        prog.plant(f, markers, 8.0)
        if s == "CD4+T(SP)":
            prog.plant(f, ["CD8A", "CD8B", "RAG1", "RAG2", "DNTT"], 1 / 8.0)
        if s == "CD8+T(SP)":
            prog.plant(f, ["CD4", "RAG1", "RAG2", "DNTT"], 1 / 8.0)
        end[s] = f
    rows, keys = [], {}
    for s in stages:
        parent = THYMUS_STAGES[s][0]
        a, b = np.log(t_line if parent is None else end[parent]), np.log(end[s])
        for j, t in enumerate(np.linspace(0, 1, n_steps)):
            keys[(s, j)] = len(rows)
            rows.append(np.exp(a + t * (b - a)))
    n_pbmc_types = len(types)
    state_fac = np.vstack([typ] + rows)
    rng = np.random.default_rng([seed, 302])
    n_p = int(round(n_cells * pbmc_fraction))
    n_t = n_cells - n_p
    st = rng.choice(stages, size=n_t, p=[0.1, 0.6, 0.18, 0.12])
    step = rng.integers(0, n_steps, size=n_t)
    ptype = _composition(n_p, PBMC_PROPORTIONS, rng)
    code = np.concatenate([_codes(ptype, types), [n_pbmc_types + keys[(s, j)] for s, j in zip(st, step)]]).astype(int)
    donors = ["T06", "T07", "T08", "pbmc1", "pbmc2"]
    batch = np.concatenate([rng.choice(donors[3:], size=n_p), rng.choice(donors[:3], size=n_t)])
    bfac = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.05, s, prog.rng) for s in (0.1, 0.1, 0.1, 0.25, 0.25)])
    lib = rng.lognormal(8.0, 0.3, size=n_cells)
    X = _sample(prog, [(code, state_fac), (_codes(batch, donors), bfac)], lib, rng)
    order = {s: i for i, s in enumerate(stages)}
    pt = np.concatenate([np.full(n_p, np.nan), [(min(order[s], 2) + j / (n_steps - 1)) / 3 for s, j in zip(st, step)]])
    return _adata(X, {"cell_type": np.concatenate([ptype, st]), "batch": batch,
                      "source": np.array(["pbmc"] * n_p + ["thymus"] * n_t),
                      "tech": np.full(n_cells, "10x"), "pseudotime": pt}, prog.genes,
                  cats={"cell_type": types + stages, "batch": donors, "source": ["thymus", "pbmc"]})


# ----------------------------------------------------------------------------------------------
# Tabula Muris Senis (FACS): 23 tissues, shared immune/endothelial types + tissue-specific ones
TMS_SHARED = {"B cell": ["Cd79a", "Cd19"], "T cell": ["Cd3e", "Cd3g"],
              "macrophage": ["Adgre1", "C1qa"], "endothelial cell": ["Pecam1", "Cdh5"]}
TMS_TISSUES = {  # tissue -> tissue-specific cell types (with markers)
    "Aorta": {"fibroblast": ["Dcn"]}, "BAT": {"mesenchymal stem cell": ["Pdgfra", "Ly6a"]},
    "Bladder": {"bladder urothelial cell": ["Upk3a"]}, "Brain_Myeloid": {"microglial cell": ["P2ry12"]},
    "Brain_Non-Myeloid": {"oligodendrocyte": ["Mbp"], "astrocyte": ["Gfap"]},
    "Diaphragm": {"skeletal muscle satellite cell": ["Pax7", "Myf5"]},
    "GAT": {"mesenchymal stem cell": ["Pdgfra", "Ly6a"]}, "Heart": {"cardiomyocyte": ["Myh6"]},
    "Kidney": {"kidney proximal tubule cell": ["Lrp2"]}, "Large_Intestine": {"enterocyte": ["Car1"]},
    "Limb_Muscle": {"skeletal muscle satellite cell": ["Pax7", "Myf5"],
                    "mesenchymal stem cell": ["Pdgfra", "Ly6a"]},
    "Liver": {"hepatocyte": ["Alb"]}, "Lung": {"type II pneumocyte": ["Sftpc"]},
    "Mammary_Gland": {"luminal epithelial cell": ["Krt8"]}, "Marrow": {"granulocyte": ["Ngp"]},
    "MAT": {"mesenchymal stem cell": ["Pdgfra", "Ly6a"]}, "Pancreas": {"pancreatic acinar cell": ["Cpa1"]},
    "SCAT": {"mesenchymal stem cell": ["Pdgfra", "Ly6a"]}, "Skin": {"keratinocyte": ["Krt14"]},
    "Spleen": {"plasma cell": ["Jchain"]}, "Thymus": {"thymocyte": ["Rag1"]},
    "Tongue": {"basal cell of epidermis": ["Krt5"]}, "Trachea": {"ciliated cell": ["Foxj1"]},
}


def make_tabula_muris_senis(n_cells: int = 4600, n_genes: int = 2000, seed: int = 0, *,
                            program_seed: int = 0) -> ad.AnnData:
    """TMS stand-in: 23 tissues; obs tissue, cell_type, batch (mouse, 2 per tissue), tech (FACS).

    Shared types (B, T, macrophage, endothelial) occur in every tissue with a mild tissue
    effect; tissue-specific types occur only in their tissues (skeletal muscle satellite cells
    in Limb_Muscle and Diaphragm, mesenchymal stem cells in Limb_Muscle and the fat depots).
    Mouse gene symbols. X: (n_cells, n_genes) CSR float32 counts.
    """
    if n_cells < 23:
        raise ValueError(f"n_cells must be >= 23 (one per tissue), got {n_cells}")
    specific = {}
    for d in TMS_TISSUES.values():
        specific.update(d)
    markers = {**TMS_SHARED, **specific}
    prog = _Program([g for v in markers.values() for g in v] + ["Actb", "Gapdh", "Malat1"], n_genes,
                    np.random.default_rng([program_seed, 401]), filler="Sim")
    types = list(markers)
    typ = prog.factors(len(types), de_prob=0.1, scale=0.5)
    for i, t in enumerate(types):
        prog.plant(typ[i], markers[t], 20.0)
    tissues = list(TMS_TISSUES)
    tfac = np.vstack([lognormal_factors(n_genes, 0.5, 0.5, 0.05, 0.2, prog.rng) for _ in tissues])
    rng = np.random.default_rng([seed, 402])
    tissue = np.repeat(tissues, _split(n_cells, np.ones(len(tissues))))
    ctype = np.empty(n_cells, dtype=object)
    for ti in tissues:
        idx = np.flatnonzero(tissue == ti)
        probs = {**{t: 0.12 for t in TMS_SHARED}, **{t: 0.5 / len(TMS_TISSUES[ti]) for t in TMS_TISSUES[ti]}}
        ctype[idx] = _composition(idx.size, probs, rng)
    mice = ["3-M-8", "18-F-50", "24-M-58"]
    mouse = rng.choice(mice, size=n_cells)
    batch = np.array([f"{t}_{m}" for t, m in zip(tissue, mouse)])
    mfac = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.05, 0.1, prog.rng) for _ in mice])
    lib = rng.lognormal(10.0, 0.4, size=n_cells)
    X = _sample(prog, [(_codes(ctype, types), typ), (_codes(tissue, tissues), tfac),
                       (_codes(mouse, mice), mfac)], lib, rng)
    return _adata(X, {"cell_type": ctype, "batch": batch, "tissue": tissue, "mouse": mouse,
                      "tech": np.full(n_cells, "FACS")}, prog.genes,
                  cats={"cell_type": types, "tissue": tissues})


# ----------------------------------------------------------------------------------------------
# PBMC 160k CITE-seq (Hao et al. 2021): RNA + 3-level annotation + protein panel
CITESEQ_L3 = {  # l3 -> (l2, l1)
    "B naive kappa": ("B naive", "B"), "B naive lambda": ("B naive", "B"),
    "B memory": ("B memory", "B"), "Plasmablast": ("Plasmablast", "B"),
    "CD4 Naive": ("CD4 Naive", "CD4 T"), "CD4 TCM_1": ("CD4 TCM", "CD4 T"),
    "CD4 TCM_2": ("CD4 TCM", "CD4 T"), "CD4 TEM_1": ("CD4 TEM", "CD4 T"),
    "Treg Naive": ("Treg", "CD4 T"), "CD8 Naive": ("CD8 Naive", "CD8 T"),
    "CD8 TEM_1": ("CD8 TEM", "CD8 T"), "CD8 TEM_2": ("CD8 TEM", "CD8 T"),
    "MAIT": ("MAIT", "other T"), "gdT_1": ("gdT", "other T"),
    "NK_1": ("NK", "NK"), "NK_2": ("NK", "NK"), "NK_CD56bright": ("NK_CD56bright", "NK"),
    "CD14 Mono": ("CD14 Mono", "Mono"), "CD16 Mono": ("CD16 Mono", "Mono"),
    "cDC2_1": ("cDC2", "DC"), "pDC": ("pDC", "DC"),
    # as in the real l2 level; the COVID query (Fig 5) maps onto them
    "CD8 TCM_1": ("CD8 TCM", "CD8 T"), "CD8 Proliferating": ("CD8 Proliferating", "CD8 T"),
    "NK Proliferating": ("NK Proliferating", "NK"),
}
#: genes the COVID-19 analysis reads (Fig 5: exhaustion, proliferation, naive / cytotoxic,
#: NK and monocyte markers); planted in the PBMC reference's program, shared by the COVID query
COVID_ANALYSIS_GENES = ["PDCD1", "TIGIT", "LAG3", "HAVCR2", "CTLA4", "MKI67", "TYMS", "LEF1", "TCF7",
                        "SELL", "PRF1", "HLA-DRA", "S100A9", "S100A12", "NCAM1", "XCL1", "CD27",
                        "B3GAT1", "CXCR3"]
CITESEQ_RNA_MARKERS = {
    "B": ["MS4A1", "CD79A", "CD19"], "CD4 T": ["CD4", "IL7R"], "CD8 T": ["CD8A", "CD8B"],
    "other T": ["TRDC", "SLC4A10"], "NK": ["GNLY", "NKG7", "FCGR3A", "GZMB"],
    "Mono": ["CD14", "LYZ", "S100A8"], "DC": ["FCER1A", "CD1C", "CLEC10A", "LILRA4"],
}
PROTEINS = ["CD3", "CD4", "CD8", "CD19", "CD20", "CD14", "CD16", "CD56", "CD11c", "CD123",
            "HLA-DR", "CD45RA", "CD45RO", "CD197", "CD25", "CD127", "TCR-Va7.2", "TCR-g/d",
            "CLEC12A", "CD155", "CD11b", "CD1c", "CD27", "CD38"]
_PROTEIN_POS = {  # protein -> {type (l1/l2/l3 name): level}
    "CD3": {"CD4 T": 6, "CD8 T": 6, "other T": 6}, "CD4": {"CD4 T": 7, "Mono": 2, "DC": 1.5},
    "CD8": {"CD8 T": 7, "MAIT": 3}, "CD19": {"B": 6}, "CD20": {"B": 6},
    "CD14": {"CD14 Mono": 6, "CD16 Mono": 2, "DC": 3}, "CD16": {"NK": 6, "CD16 Mono": 6, "NK_CD56bright": 0},
    "CD56": {"NK": 5, "NK_CD56bright": 8}, "CD11c": {"Mono": 5, "DC": 5},
    "CD123": {"pDC": 6, "DC": 2}, "HLA-DR": {"B": 6, "Mono": 5, "DC": 6},
    "CD45RA": {"B naive": 5, "CD4 Naive": 5, "CD8 Naive": 5, "NK": 4},
    "CD45RO": {"CD4 TCM": 5, "CD4 TEM": 5, "CD8 TEM": 5, "CD8 TCM": 5, "Treg": 4, "MAIT": 4},
    "CD197": {"CD4 Naive": 5, "CD8 Naive": 5, "CD4 TCM": 3}, "CD25": {"Treg": 6},
    "CD127": {"CD4 T": 3, "MAIT": 4}, "TCR-Va7.2": {"MAIT": 7}, "TCR-g/d": {"gdT": 7},
    "CLEC12A": {"Mono": 5, "DC": 4}, "CD155": {"Mono": 3, "DC": 3}, "CD11b": {"Mono": 5, "NK": 2, "DC": 3},
    "CD1c": {"cDC2": 3}, "CD27": {"CD4 T": 3, "CD8 Naive": 3, "B memory": 4}, "CD38": {"Plasmablast": 7, "NK": 2},
}


def _citeseq_program(n_genes: int, program_seed: int):
    """The PBMC reference's biology: (program, l1s, l2s, l3s, (L3, G) l3 factors).

    Shared by :func:`make_pbmc160k_citeseq` and :func:`make_covid_pbmc`, so the COVID query
    has the reference's genes and cell types (plus its disease states).
    """
    l3s = list(CITESEQ_L3)
    l2s = list(dict.fromkeys(v[0] for v in CITESEQ_L3.values()))
    l1s = list(dict.fromkeys(v[1] for v in CITESEQ_L3.values()))
    named = [g for v in CITESEQ_RNA_MARKERS.values() for g in v] + ["CCR7", "GZMA", "CLEC12A", "ITGAX",
                                                                    "CD3D", "CD3E", "ACTB", "MALAT1"]
    named += COVID_ANALYSIS_GENES
    prog = _Program(named, n_genes, np.random.default_rng([program_seed, 501]))
    # state genes (exhaustion, proliferation) are near-silent outside their state, as in PBMCs
    quiet = [prog.index[g] for g in ("PDCD1", "TIGIT", "LAG3", "HAVCR2", "CTLA4", "MKI67", "TYMS")]
    prog.gene_mean[quiet] = np.quantile(prog.gene_mean, 0.05)
    # l1 factors; T types share a T factor and differ only mildly from each other
    t_fac = prog.factors(1, de_prob=0.1, scale=0.6)[0]
    prog.plant(t_fac, ["CD3D", "CD3E"], 10.0)
    myeloid = prog.factors(1, de_prob=0.1, scale=0.6)[0]
    l1f = {}
    for l1 in l1s:
        if l1 in ("CD4 T", "CD8 T", "other T"):
            # CD8 T: a clearer RNA programme than CD4 vs other T (the COVID analysis finds CD8 T
            # cells in RNA), still far weaker than the CD4 / CD8 proteins
            cd8 = l1 == "CD8 T"
            f = t_fac * prog.factors(1, de_prob=0.04 if cd8 else 0.015, scale=0.35 if cd8 else 0.25)[0]
            prog.plant(f, CITESEQ_RNA_MARKERS[l1], 4.0 if cd8 else 1.8)
        elif l1 in ("Mono", "DC"):
            f = myeloid * prog.factors(1, de_prob=0.15, scale=0.7)[0]  # DC vs Mono: clear in RNA
            prog.plant(f, CITESEQ_RNA_MARKERS[l1], 15.0)
        else:
            f = prog.factors(1, de_prob=0.1, scale=0.6)[0]
            prog.plant(f, CITESEQ_RNA_MARKERS[l1], 15.0)
        if l1 in ("B", "Mono", "DC"):   # antigen presentation: highest on B and DC
            prog.plant(f, ["HLA-DRA"], 3.0 if l1 == "Mono" else 8.0)
        l1f[l1] = f
    l3f = np.vstack([l1f[CITESEQ_L3[t][1]] * prog.factors(1, de_prob=0.02, scale=0.3)[0] for t in l3s])
    for i, t in enumerate(l3s):
        l2, l1 = CITESEQ_L3[t]
        if l2 in ("CD8 TEM", "CD4 TEM"):   # cytotoxic program shared by TEM and NK
            prog.plant(l3f[i], ["GZMA", "NKG7", "GNLY", "PRF1"], 4.0)
        if l2.endswith("Naive") or l2 == "CD4 TCM":
            prog.plant(l3f[i], ["CCR7"], 6.0)
        if l2 in ("CD4 Naive", "CD8 Naive"):
            prog.plant(l3f[i], ["LEF1", "TCF7", "SELL"], 4.0)
        if l2 == "CD8 TCM":
            prog.plant(l3f[i], ["CCR7", "SELL"], 3.0)
        if l2.endswith("Proliferating"):
            prog.plant(l3f[i], ["MKI67", "TYMS"], 60.0)   # from a near-silent baseline
        if l1 == "NK":   # NK cells carry the cytotoxic granule genes too (paper Fig 4d reads GZMA)
            prog.plant(l3f[i], ["PRF1", "GZMA"], 4.0)
        if l2 == "NK":                      # CD56dim CD16bright
            prog.plant(l3f[i], ["B3GAT1", "CXCR3"], 3.0)
        if l2 == "NK_CD56bright":
            prog.plant(l3f[i], ["NCAM1", "XCL1"], 8.0)
            prog.plant(l3f[i], ["CD27"], 4.0)
            prog.plant(l3f[i], ["FCGR3A"], 1 / 6.0)
        if l2 == "CD14 Mono":
            prog.plant(l3f[i], ["S100A9", "S100A12"], 6.0)
        if l2 == "CD16 Mono":
            prog.plant(l3f[i], ["FCGR3A"], 10.0)
            prog.plant(l3f[i], ["CD14", "S100A8"], 1 / 6.0)
        if l1 in ("Mono", "DC"):
            prog.plant(l3f[i], ["CLEC12A", "ITGAX"], 6.0)
        if l2 in ("CD16 Mono", "NK_CD56bright"):   # distinct subsets: a broader programme of their own
            l3f[i] *= prog.factors(1, de_prob=0.06, scale=0.5)[0]
    return prog, l1s, l2s, l3s, l3f


def make_pbmc160k_citeseq(n_cells: int = 3000, n_genes: int = 2000, seed: int = 0, *,
                          program_seed: int = 0) -> ad.AnnData:
    """PBMC CITE-seq stand-in: RNA counts in X, protein (ADT) counts in ``obsm['protein']``.

    obs: celltype.l1 (8) > celltype.l2 > celltype.l3, cell_type (= l2), donor and batch
    (8 donors P1-P8), tech. ``uns['protein_names']`` (24 ADTs). Planted: CD4 vs CD8 T differ
    weakly in RNA (small DE, sparse CD4/CD8A) but strongly in protein (CD4, CD8); DC vs
    monocytes differ strongly in RNA but share their surface proteins (CD11c, CLEC12A, HLA-DR).
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    prog, l1s, l2s, l3s, l3f = _citeseq_program(n_genes, program_seed)
    # protein means per l3 type: background 1 + level per matching l1/l2/l3 name
    P = np.ones((len(l3s), len(PROTEINS)))
    for j, pr in enumerate(PROTEINS):
        for i, t in enumerate(l3s):
            l2, l1 = CITESEQ_L3[t]
            lev = [v for k, v in _PROTEIN_POS[pr].items() if k in (t, l2, l1)]
            if lev:
                P[i, j] = 2.0 ** lev[-1]
    rng = np.random.default_rng([seed, 502])
    probs = {t: 1.0 for t in l3s}
    for t, w in {"CD4 Naive": 6, "CD4 TCM_1": 5, "CD4 TCM_2": 3, "CD14 Mono": 8, "NK_1": 3,
                 "B naive kappa": 2.5, "CD8 Naive": 3, "CD8 TEM_1": 3, "CD8 Proliferating": 0.4,
                 "NK Proliferating": 0.4}.items():
        probs[t] = w
    donors = [f"P{i}" for i in range(1, 9)]
    donor = np.repeat(donors, _split(n_cells, np.ones(8)))
    l3 = np.concatenate([_composition(int((donor == d).sum()), probs, rng) for d in donors])
    dfac = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.0, 0.1, prog.rng) for _ in donors])
    lib = rng.lognormal(8.3, 0.35, size=n_cells)
    X = _sample(prog, [(_codes(l3, l3s), l3f), (_codes(donor, donors), dfac)], lib, rng)
    pm = P[_codes(l3, l3s)]
    pm = pm / pm.sum(1, keepdims=True) * rng.lognormal(7.5, 0.4, size=(n_cells, 1))
    prot = rng.poisson(rng.gamma(10.0, pm / 10.0)).astype(np.float32)  # ADT: BCV ~0.3
    l2 = np.array([CITESEQ_L3[t][0] for t in l3])
    a = _adata(X, {"cell_type": l2, "batch": donor, "donor": donor, "tech": np.full(n_cells, "CITE-seq"),
                   "celltype.l1": np.array([CITESEQ_L3[t][1] for t in l3]), "celltype.l2": l2,
                   "celltype.l3": l3}, prog.genes,
               cats={"celltype.l1": l1s, "celltype.l2": l2s, "cell_type": l2s, "celltype.l3": l3s})
    a.obsm["protein"] = prot
    a.uns["protein_names"] = list(PROTEINS)
    return a


# ----------------------------------------------------------------------------------------------
# COVID-19 PBMC (healthy / moderate / severe donors), drawn from the PBMC reference's program
#: query type -> (reference l3 type it derives from, {condition: relative abundance});
#: types not in the reference are disease states planted on top of their reference type
COVID_TYPES = {
    "CD4 Naive": ("CD4 Naive", {"healthy": 8, "moderate": 6, "severe": 5}),
    "CD4 TCM": ("CD4 TCM_1", {"healthy": 8, "moderate": 7, "severe": 6}),
    "CD4 TEM": ("CD4 TEM_1", {"healthy": 2, "moderate": 2, "severe": 2}),
    "Treg": ("Treg Naive", {"healthy": 1, "moderate": 1, "severe": 1}),
    "CD8 Naive": ("CD8 Naive", {"healthy": 5, "moderate": 3, "severe": 2}),
    "CD8 TCM": ("CD8 TCM_1", {"healthy": 1.5, "moderate": 1.5, "severe": 1.5}),
    "CD8 TEM": ("CD8 TEM_1", {"healthy": 4, "moderate": 4, "severe": 4}),
    "CD8 Proliferating": ("CD8 Proliferating", {"healthy": 0.2, "moderate": 1.0, "severe": 1.5}),
    "CD8 T exhausted": ("CD8 TEM_1", {"healthy": 0, "moderate": 1.5, "severe": 2.5}),
    "MAIT": ("MAIT", {"healthy": 1, "moderate": 0.7, "severe": 0.5}),
    "gdT": ("gdT_1", {"healthy": 1, "moderate": 0.7, "severe": 0.5}),
    "NK": ("NK_1", {"healthy": 5, "moderate": 5, "severe": 6}),
    "NK_CD56bright": ("NK_CD56bright", {"healthy": 1.0, "moderate": 0.5, "severe": 0.25}),
    "NK Proliferating": ("NK Proliferating", {"healthy": 0.1, "moderate": 0.5, "severe": 0.8}),
    "B naive": ("B naive kappa", {"healthy": 5, "moderate": 4, "severe": 3}),
    "B memory": ("B memory", {"healthy": 2, "moderate": 2, "severe": 2}),
    "Plasmablast": ("Plasmablast", {"healthy": 0.2, "moderate": 1.0, "severe": 1.5}),
    "CD14 Mono": ("CD14 Mono", {"healthy": 10, "moderate": 10, "severe": 8}),
    "CD14 Mono HLA-DR low": ("CD14 Mono", {"healthy": 0, "moderate": 2, "severe": 8}),
    "CD16 Mono": ("CD16 Mono", {"healthy": 3, "moderate": 2, "severe": 1}),
    "cDC2": ("cDC2_1", {"healthy": 1, "moderate": 0.7, "severe": 0.5}),
    "pDC": ("pDC", {"healthy": 0.5, "moderate": 0.4, "severe": 0.3}),
}
COVID_CONDITIONS = ["healthy", "moderate", "severe"]


def make_covid_pbmc(n_cells: int = 3000, n_genes: int = 2000, seed: int = 0, *, program_seed: int = 0,
                    donors_per_condition: int = 3) -> ad.AnnData:
    """COVID-19 PBMC stand-in: donors of 3 conditions, drawn from the PBMC reference's biology.

    Same genes and cell types as :func:`make_pbmc160k_citeseq` with the same ``n_genes`` and
    ``program_seed`` (a healthy reference for hierarchical mapping), plus disease states absent
    from the reference: exhausted CD8 T (PDCD1, TIGIT, LAG3, HAVCR2, CTLA4 up on CD8 TEM;
    patients only) and HLA-DR-low S100A8/9/12-high CD14 monocytes (patients, mostly severe).
    Planted composition shifts: fewer CD8 naive, CD56bright NK and CD16 monocytes and more
    proliferating CD8 T / NK and plasmablasts in patients. A study factor (query vs reference),
    donor factors and an interferon-like programme in patients act on all cells.
    obs: cell_type (= celltype_l2: the reference l2 name, or the disease state), celltype_l1
    (reference l1), condition, donor, batch (= donor), tech.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    if donors_per_condition < 1:
        raise ValueError(f"donors_per_condition must be >= 1, got {donors_per_condition}")
    prog, l1s, _, l3s, l3f = _citeseq_program(n_genes, program_seed)
    types = list(COVID_TYPES)
    f = np.vstack([l3f[l3s.index(COVID_TYPES[t][0])] for t in types])
    # from a near-silent baseline (see _citeseq_program)
    prog.plant(f[types.index("CD8 T exhausted")], ["PDCD1", "TIGIT", "LAG3", "HAVCR2", "CTLA4"], 60.0)
    hla_low = f[types.index("CD14 Mono HLA-DR low")]
    prog.plant(hla_low, ["S100A8", "S100A9", "S100A12"], 6.0)
    prog.plant(hla_low, ["HLA-DRA"], 1 / 8.0)
    l1_of = {t: CITESEQ_L3[COVID_TYPES[t][0]][1] for t in types}
    disease_rng = np.random.default_rng([program_seed, 603])   # query-only biology
    study = lognormal_factors(n_genes, 0.3, 0.5, 0.0, 0.2, disease_rng)[None, :]
    cfac = np.vstack([lognormal_factors(n_genes, 0.05, 0.3, 0.2, 0.3, disease_rng) for _ in COVID_CONDITIONS])
    cfac[0] = 1.0  # interferon-like disease program in patients only
    rng = np.random.default_rng([seed, 602])
    donors = [f"{c}_{i + 1}" for c in COVID_CONDITIONS for i in range(donors_per_condition)]
    cond_of = {d: d.rsplit("_", 1)[0] for d in donors}
    donor = np.repeat(donors, _split(n_cells, np.ones(len(donors))))
    ctype = np.empty(n_cells, dtype=object)
    for d in donors:
        idx = np.flatnonzero(donor == d)
        probs = {t: v[1][cond_of[d]] for t, v in COVID_TYPES.items() if v[1][cond_of[d]] > 0}
        ctype[idx] = _composition(idx.size, probs, rng)
    dfac = np.vstack([lognormal_factors(n_genes, 1.0, 0.5, 0.0, 0.12, rng) for _ in donors])
    condition = np.array([cond_of[d] for d in donor])
    lib = rng.lognormal(8.2, 0.35, size=n_cells)
    X = _sample(prog, [(_codes(ctype, types), f * study), (_codes(donor, donors), dfac),
                       (_codes(condition, COVID_CONDITIONS), cfac)], lib, rng)
    return _adata(X, {"cell_type": ctype, "celltype_l2": ctype,
                      "celltype_l1": np.array([l1_of[t] for t in ctype]), "condition": condition,
                      "donor": donor, "batch": donor, "tech": np.full(n_cells, "10x")}, prog.genes,
                  cats={"cell_type": types, "celltype_l2": types, "celltype_l1": l1s,
                        "condition": COVID_CONDITIONS, "donor": donors, "batch": donors})


# ----------------------------------------------------------------------------------------------
# scalability study (paper Fig 4g): the scsim-scale generator, a reference and a query of one size
def make_scsim_scale(n_cells: int = 2000, n_genes: int = 2000, seed: int = 0, *,
                     query_fraction: float = 0.5, reference_batches: int = 2) -> ad.AnnData:
    """Cells of :mod:`.scsim_scale` (the paper's scsim settings, 5 groups), in memory.

    ``obs['part']`` is ``reference`` or ``query`` (a random ``query_fraction`` of the cells; the
    paper maps a query as large as the reference). ``batch``: the reference cells are dealt at
    random into ``reference_batches`` labels (ref1, ref2, ...: scsim has no batch effect, but
    Symphony's reference needs Harmony, hence more than one batch), the query is batch ``query``;
    tech ``scsim``. For sizes beyond memory use the sharded writer.
    """
    import tempfile

    from .scsim_scale import read_shards, write_scsim_shards

    if n_cells < 2:
        raise ValueError(f"n_cells must be >= 2 (a reference and a query), got {n_cells}")
    if not 0 < query_fraction < 1:
        raise ValueError(f"query_fraction must be in (0, 1), got {query_fraction}")
    if reference_batches < 1:
        raise ValueError(f"reference_batches must be >= 1, got {reference_batches}")
    with tempfile.TemporaryDirectory() as tmp:
        write_scsim_shards(tmp, ngenes=n_genes, ncells=n_cells, seed=seed, shard_size=max(n_cells, 1))
        a = read_shards(tmp)
    rng = np.random.default_rng([seed, 601])
    part = np.where(rng.permutation(n_cells) < round(query_fraction * n_cells), "query", "reference")
    batch = np.where(part == "query", "query", np.char.add("ref", (rng.integers(0, reference_batches, n_cells) + 1).astype(str)))
    a.obs = pd.DataFrame({"cell_type": a.obs["cell_type"].astype(str).to_numpy(), "batch": batch, "part": part,
                          "tech": np.full(n_cells, "scsim")}, index=a.obs_names)
    for c in a.obs:
        a.obs[c] = pd.Categorical(a.obs[c].astype(str))
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    return a


def make_splat_robustness(n_cells: int = 600, n_genes: int = 1000, seed: int = 0, *,
                          de_fac_scale: float = 0.2, dropout_mid: float = 1.0) -> ad.AnnData:
    """One point of the Supp. Fig. 8 robustness grid (:mod:`.robustness`): Splat with 5 equal
    groups (``cell_type`` Group1..5), DE strength ``de_fac_scale`` and experiment-wide dropout
    with midpoint ``dropout_mid`` (shape -1); one batch, tech ``splat``. The grid itself is the
    config's list of datasets using this maker."""
    from .robustness import simulate_splat_robustness, splat_robustness_params

    a = simulate_splat_robustness(splat_robustness_params(n_cells, n_genes, seed, de_fac_scale=de_fac_scale,
                                                          dropout_mid=dropout_mid))
    obs = a.obs[["cell_type", "batch", "tech"]].astype(str)
    out = ad.AnnData(X=sp.csr_matrix(a.X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=a.var_names))
    for c in out.obs:
        out.obs[c] = pd.Categorical(out.obs[c])
    out.uns.update(splat_de_fac_scale=float(de_fac_scale), splat_dropout_mid=float(dropout_mid))
    return out
