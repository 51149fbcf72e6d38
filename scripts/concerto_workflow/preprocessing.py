"""Preprocessing of one fold, as in the paper's Methods, fitted on the fold's training cells only.

Steps: drop mitochondrial/ERCC genes; drop cells with < ``min_genes`` detected genes; normalise
each cell to ``target_sum`` counts and log1p (each cell on its own full profile, so nothing is
shared between cells); choose the genes on the *training* cells (detected in >= ``min_cells``
training cells, then the ``n_top_genes`` most variable by scanpy); put every other cell on
those genes with :meth:`concerto_core.encoding.GeneVocabulary.align` (missing genes = 0).
Cells of a second dataset (cross-dataset query) are first renamed to the reference's gene
identifiers through a one-to-one gene map (e.g. human-mouse orthologs).
``features`` chooses what ``X`` holds for the methods (paper Fig 2e): the genes (``rna``), the
ADTs of ``obsm['protein']`` (``protein``; log1p of counts, or values a file already normalised,
e.g. CLR, as they are) or both side by side (``rna+protein``).
"""
from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .columns import PROTEIN, PROTEIN_NAMES, ROLE, SOURCE_DATASET, TRAIN

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
    import scanpy as sc  # here, not at the top: every method job imports this module (is_counts)

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
    if n_top_genes is not None and n_top_genes > len(genes):
        raise ValueError(f"n_top_genes={n_top_genes} but only {len(genes)} genes are detected in >= "
                         f"{min_cells} training cells; lower the HVG level or use 'all'")
    if n_top_genes is None or n_top_genes == len(genes):
        return genes
    import scanpy as sc

    sub = train_norm[:, genes].copy()
    hv = sc.pp.highly_variable_genes(sub, n_top_genes=n_top_genes, flavor=flavor, inplace=False)
    return genes[np.asarray(hv["highly_variable"], dtype=bool)]


def align_genes(a: ad.AnnData, genes: pd.Index) -> ad.AnnData:
    """``a`` on exactly ``genes`` (missing genes = 0, extra genes dropped), through the model
    package's aligner so the workflow and ``concerto_core`` agree on gene matching."""
    from concerto_core.encoding import GeneVocabulary

    X, report = GeneVocabulary(list(genes)).align(sp.csr_matrix(a.X, dtype=np.float32), a.var_names,
                                                  min_overlap=0.0)
    if report.n_missing:
        log.warning("%s", report)
    out = ad.AnnData(sp.csr_matrix(X, dtype=np.float32), obs=a.obs.copy(), var=pd.DataFrame(index=genes))
    out.obsm.update({k: v for k, v in a.obsm.items()})
    return out


FEATURES = ("rna", "protein", "rna+protein")
PROTEIN_PREFIX = "ADT_"


def is_counts(values) -> bool:
    """Whether a matrix holds counts (non-negative integers) rather than normalised values."""
    v = np.asarray(values)
    return bool(np.all(v >= 0) and np.all(v == np.round(v)))


def select_features(a: ad.AnnData, features: str) -> ad.AnnData:
    """``a`` with ``X`` = the chosen features of every cell (see the module docstring). Protein
    features are log1p(ADT counts), a per-cell transform (nothing fitted across cells), or the
    values as they are when the file holds normalised ADTs (not counts: e.g. CBMC's CLR-scaled
    proteins, which log1p would turn into NaN), named ``ADT_<protein>``; ``obsm['protein']``
    stays as it is."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if features == "rna":
        return a
    if PROTEIN not in a.obsm:
        raise ValueError(f"features={features!r} needs obsm[{PROTEIN!r}] (ADT counts); this dataset has "
                         f"obsm keys {list(a.obsm)}")
    prot = np.asarray(a.obsm[PROTEIN], dtype=np.float32)
    if is_counts(prot):
        prot = np.log1p(prot)
    names = list(a.uns.get(PROTEIN_NAMES) or [f"P{i}" for i in range(prot.shape[1])])
    var = pd.Index([PROTEIN_PREFIX + str(n) for n in names])
    if features == "protein":
        X, var_names = sp.csr_matrix(prot), var
    else:
        X, var_names = sp.hstack([sp.csr_matrix(a.X), sp.csr_matrix(prot)], format="csr"), a.var_names.append(var)
    out = ad.AnnData(sp.csr_matrix(X, dtype=np.float32), obs=a.obs.copy(), var=pd.DataFrame(index=var_names),
                     uns=dict(a.uns))
    out.obsm.update(dict(a.obsm))
    return out


PROTEIN_VALUES = ("as_is", "log1p")


def shared_proteins(parts: list[ad.AnnData]) -> list[str] | None:
    """Names of the proteins (``obsm['protein']`` columns, named by ``uns['protein_names']``) that
    every part measures, in the first part's order; None when a part lacks the slot or its names.
    A reference panel larger than the query's (10x PBMC 5k: 29 proteins, 10k: 14) is cut to the
    shared ones, so every method infers, and the scoring compares, the same proteins."""
    names = []
    for a in parts:
        n = a.uns.get(PROTEIN_NAMES)
        if PROTEIN not in a.obsm or n is None or len(n) != a.obsm[PROTEIN].shape[1]:
            return None
        names.append([str(x) for x in n])
    shared = set.intersection(*map(set, names))
    return [p for p in names[0] if p in shared]


def keep_proteins(a: ad.AnnData, proteins: list[str]) -> ad.AnnData:
    """``a`` with ``obsm['protein']`` cut to (and ordered as) ``proteins``, which it must name."""
    names = [str(x) for x in a.uns[PROTEIN_NAMES]]
    a = a.copy()
    a.obsm[PROTEIN] = np.asarray(a.obsm[PROTEIN], dtype=np.float32)[:, [names.index(p) for p in proteins]]
    a.uns[PROTEIN_NAMES] = list(proteins)
    return a


def protein_values(values, how: str) -> np.ndarray:
    """The second modality's values for methods and scoring: ``as_is`` or ``log1p`` (of ADT counts;
    a per-value transform, nothing fitted across cells). log1p refuses values that are not counts
    (already normalised ADTs, e.g. CLR, would become NaN or be transformed twice)."""
    if how not in PROTEIN_VALUES:
        raise ValueError(f"preprocessing protein_values must be one of {PROTEIN_VALUES}, got {how!r}")
    values = np.asarray(values, dtype=np.float32)
    if how == "as_is":
        return values
    if not is_counts(values):
        raise ValueError("preprocessing protein_values: log1p needs ADT counts (non-negative integers); "
                         f"these values are already normalised (min {values.min():.3g}): use as_is")
    return np.log1p(values)


def one_to_one(table: pd.DataFrame, ref_col: str, query_col: str) -> pd.DataFrame:
    """Pairs whose reference and query genes each occur exactly once (ambiguous ones dropped)."""
    t = table[[ref_col, query_col]].dropna().astype(str).drop_duplicates()
    t = t[~t[ref_col].duplicated(keep=False) & ~t[query_col].duplicated(keep=False)]
    return t.rename(columns={ref_col: "reference", query_col: "query"}).reset_index(drop=True)


def map_genes(a: ad.AnnData, table: pd.DataFrame) -> tuple[ad.AnnData, dict]:
    """Rename ``a``'s genes from query to reference identifiers with a one-to-one table
    (columns ``reference``, ``query``); genes without a partner are dropped and counted."""
    m = dict(zip(table["query"], table["reference"]))
    has = np.array([g in m for g in a.var_names])
    out = a[:, has].copy()
    out.var_names = [m[g] for g in out.var_names]
    report = {"query_genes": int(a.n_vars), "mapped": int(has.sum()), "unmatched": int((~has).sum()),
              "table_pairs": int(len(table))}
    log.info("gene map: %(mapped)d of %(query_genes)d query genes mapped one-to-one "
             "(%(unmatched)d unmatched; table has %(table_pairs)d pairs)", report)
    if not has.any():
        raise ValueError(f"gene map: none of the {a.n_vars} query genes (e.g. {list(a.var_names[:3])}) "
                         f"is in the table's query column (e.g. {list(table['query'][:3])})")
    return out, report


def _info(**kw) -> dict:
    return {k: (-1 if v is None else v) for k, v in kw.items()}


def preprocess_fold(parts: list[tuple[str, ad.AnnData, pd.Series]], *, min_genes: int, min_cells: int,
                    target_sum: float, n_top_genes: int | None, flavor: str,
                    gene_maps: dict[str, pd.DataFrame] | None = None, features: str = "rna",
                    proteins: str = "as_is") -> ad.AnnData:
    """One fold's cells on the genes fitted on its training cells.

    ``parts``: (dataset name, raw counts AnnData, role per cell of that AnnData indexed by obs
    name), the first being the experiment's own dataset. ``gene_maps[dataset]`` renames a
    second dataset's genes to the first one's. Cells are always filtered on their RNA; ``features``
    then chooses what X holds (:func:`select_features`). When every part has named proteins, each
    keeps the proteins all parts share (:func:`shared_proteins`), transformed as ``proteins`` says
    (:func:`protein_values`). Returns log-normalised CSR X with
    ``obs['role']`` and ``obs['source_dataset']``; ``uns['preprocessing']`` records what was fitted.
    """
    gene_maps = gene_maps or {}
    normed, counts, reports = [], [], {}
    panel = shared_proteins([raw for _, raw, _ in parts])
    if panel is not None and len(parts) > 1:
        log.info("proteins: the %d all datasets share (%s)", len(panel), ", ".join(panel))
        if not panel:
            log.warning("the datasets share no protein: obsm['%s'] dropped", PROTEIN)
    for name, raw, roles in parts:
        a = raw[raw.obs_names.isin(roles.index)].copy()
        if panel:
            a = keep_proteins(a, panel)
        elif panel is not None and PROTEIN in a.obsm:
            del a.obsm[PROTEIN]
        if PROTEIN in a.obsm:
            a.obsm[PROTEIN] = protein_values(a.obsm[PROTEIN], proteins)
        if name in gene_maps:
            a, reports[name] = map_genes(a, gene_maps[name])
        a = filter_cells(a, min_genes)
        a.obs[ROLE] = pd.Categorical(roles.reindex(a.obs_names).astype(str).to_numpy())
        a.obs[SOURCE_DATASET] = name
        if len(parts) > 1:  # obs names unique across datasets
            a.obs_names = [f"{name}:{c}" for c in a.obs_names]
        counts.append(a)
        normed.append(normalise(a, target_sum))
    train_mask = [(a.obs[ROLE] == TRAIN).to_numpy() for a in counts]
    n_train = sum(int(m.sum()) for m in train_mask)
    if n_train == 0:
        raise ValueError("this fold has no training cells left after filtering (min_genes="
                         f"{min_genes})")
    # genes are fitted on training cells, which all come from datasets sharing gene identifiers
    train_counts = ad.concat([a[m] for a, m in zip(counts, train_mask) if m.any()], join="inner")
    train_norm = ad.concat([a[m] for a, m in zip(normed, train_mask) if m.any()], join="inner")
    genes = fit_genes(train_counts, train_norm, min_cells, n_top_genes, flavor)
    aligned = [align_genes(a, genes) for a in normed]
    has_protein = all(PROTEIN in a.obsm for a in aligned)
    out = ad.concat(aligned, join="outer", merge="same")
    out.X = sp.csr_matrix(out.X, dtype=np.float32)
    if has_protein and panel:
        out.uns[PROTEIN_NAMES] = panel
    elif not has_protein and PROTEIN in out.obsm:
        del out.obsm[PROTEIN]
    for c in out.obs.columns:
        if out.obs[c].dtype == object:
            out.obs[c] = pd.Categorical(out.obs[c].astype(str))
    out.uns["preprocessing"] = _info(
        n_top_genes=n_top_genes, n_genes=int(out.n_vars), min_genes=min_genes, min_cells=min_cells,
        target_sum=target_sum, flavor=flavor, fitted_on=f"{n_train} training cells", features=features,
        protein_values=proteins)
    out = select_features(out, features)
    if reports:
        out.uns["gene_map"] = reports
    log.info("fold: %d cells x %d genes; roles %s", out.n_obs, out.n_vars,
             out.obs[ROLE].value_counts().to_dict())
    return out


def gene_maps_for(name: str, raw: ad.AnnData, gene_map: dict) -> dict[str, pd.DataFrame]:
    """{dataset: one-to-one table} for a cross-dataset query from the split's ``gene_map``."""
    source = gene_map.get("source", "none")
    if source == "none":
        return {}
    if source == "var_column":
        col = gene_map["column"]
        if col not in raw.var:
            raise ValueError(f"gene_map: var column {col!r} not in dataset {name!r}; var columns: "
                             f"{list(raw.var.columns)}")
        table = pd.DataFrame({"reference": raw.var[col].astype(str).to_numpy(),
                              "query": raw.var_names.astype(str)})
        return {name: one_to_one(table, "reference", "query")}
    table = pd.read_csv(gene_map["path"], sep=None, engine="python")
    for key in ("reference_column", "query_column"):
        if gene_map[key] not in table:
            raise ValueError(f"gene_map.{key} = {gene_map[key]!r} not in {gene_map['path']} "
                             f"(columns {list(table.columns)})")
    return {name: one_to_one(table, gene_map["reference_column"], gene_map["query_column"])}
