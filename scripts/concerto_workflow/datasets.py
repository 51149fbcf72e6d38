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

from .columns import BATCH, DATASET_COLUMNS, PROTEIN, PROTEIN_NAMES
from .converters import tech_from_batch

REQUIRED_OBS = ("cell_type", "batch", "tech")
#: obs['cell_type'] of a file without labels (config label_col ""; e.g. the 10x CITE-seq PBMC files,
#: used for protein inference only)
UNLABELLED = "unlabelled"
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
    ``inDrop``). An empty ``batch_col`` means one batch (``'batch1'``) for a file without one; an
    empty ``label_col`` labels every cell :data:`UNLABELLED` (a file without labels, for tasks that
    need none; the config check refuses it for tasks that do).
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
    labels = a.obs[label_col].astype(str) if label_col else pd.Series(UNLABELLED, index=a.obs_names)
    obs = pd.DataFrame({"cell_type": labels.values, "batch": batch.values,
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


#: fewer shared genes than this make a concatenation useless (almost surely different gene
#: identifiers, e.g. Ensembl ids in one part and symbols in the other)
MIN_SHARED_GENES = 100
CONCAT_SEPARATOR = ":"   # part name and cell name / batch value, when they are prefixed


def concat_datasets(parts: dict[str, ad.AnnData], *, origin_col: str = "origin",
                    min_shared_genes: int = MIN_SHARED_GENES) -> ad.AnnData:
    """One dataset made of several prepared ones (config source ``concat``), in the common schema.

    ``parts``: part name (a dataset of the config) -> its prepared AnnData, in order. Genes are
    the intersection of the parts' var_names (inner join, in the first part's order);
    ``obs[origin_col]`` names each cell's part. The obs columns every part has are kept (the
    standard :data:`~concerto_workflow.columns.DATASET_COLUMNS` always), others dropped with a
    printed note. When two parts share a batch value, every batch value becomes
    ``<part>:<batch>``, so batches of different studies stay distinct; likewise cell names
    become ``<part>:<name>`` when two parts share one. ``obsm['protein']`` is kept only if every
    part has it with the same protein names (reordered to the first part's order); other obsm
    keys are dropped (an embedding of one study is not one of the others).
    """
    names = list(parts)
    if len(names) < 2:
        raise ValueError(f"a concatenation needs at least 2 datasets, got {names}")
    if origin_col in DATASET_COLUMNS:
        raise ValueError(f"origin_col = {origin_col!r} would overwrite a standard column {DATASET_COLUMNS}")
    for n, a in parts.items():
        missing = [c for c in DATASET_COLUMNS if c not in a.obs]
        if missing:
            raise KeyError(f"dataset {n!r} lacks obs columns {missing}: concatenate prepared datasets only")
        if origin_col in a.obs:
            raise ValueError(f"dataset {n!r} already has obs column {origin_col!r} (a concatenation "
                             f"itself?); choose another origin_col")
    shared = set.intersection(*(set(a.var_names) for a in parts.values()))
    genes = [g for g in parts[names[0]].var_names if g in shared]
    if len(genes) < min_shared_genes:
        sizes = ", ".join(f"{n} {parts[n].n_vars}" for n in names)
        raise ValueError(f"datasets {names} share only {len(genes)} genes (fewer than {min_shared_genes}; "
                         f"genes per dataset: {sizes}); do they name genes the same way (symbols vs "
                         f"Ensembl ids, human vs mouse)?")

    columns = [c for c in parts[names[0]].obs.columns if all(c in a.obs for a in parts.values())]
    dropped = sorted({c for a in parts.values() for c in a.obs.columns} - set(columns))
    if dropped:
        print(f"concat {names}: obs columns {dropped} are not in every part; dropped", flush=True)
    batch_clash = _shared_values([a.obs[BATCH].astype(str) for a in parts.values()])
    name_clash = _shared_values([a.obs_names.to_series() for a in parts.values()])
    obs = []
    for n, a in parts.items():
        o = a.obs[columns].copy()
        for c in columns:
            if isinstance(o[c].dtype, pd.CategoricalDtype):
                o[c] = o[c].astype(str)     # categories differ between parts
        if batch_clash:
            o[BATCH] = n + CONCAT_SEPARATOR + o[BATCH].astype(str)
        o[origin_col] = n
        o.index = [n + CONCAT_SEPARATOR + c for c in a.obs_names] if name_clash else list(a.obs_names)
        obs.append(o)
    obs = pd.concat(obs)
    for c in columns + [origin_col]:
        if obs[c].dtype == object:
            obs[c] = pd.Categorical(obs[c].astype(str))
    X = sp.vstack([sp.csr_matrix(a[:, genes].X, dtype=np.float32) for a in parts.values()], format="csr")
    out = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))

    proteins = [_protein_names(a) for a in parts.values()]
    if all(p is not None and sorted(p) == sorted(proteins[0]) for p in proteins):
        order = proteins[0]
        out.obsm[PROTEIN] = np.vstack([np.asarray(a.obsm[PROTEIN], dtype=np.float32)[:, [p.index(x) for x in order]]
                                       for a, p in zip(parts.values(), proteins)])
        out.uns[PROTEIN_NAMES] = order
    elif any(PROTEIN in a.obsm for a in parts.values()):
        print(f"concat {names}: obsm['{PROTEIN}'] dropped (not in every part with the same protein names: "
              + ", ".join(f"{n} {'none or unnamed' if p is None else len(p)}" for n, p in zip(names, proteins))
              + ")", flush=True)
    other = sorted({k for a in parts.values() for k in a.obsm} - {PROTEIN})
    if other:
        print(f"concat {names}: obsm keys {other} dropped (not comparable across datasets)", flush=True)
    return to_common_schema(out)


def _shared_values(series: list[pd.Series]) -> bool:
    """Whether any value occurs in two of the series."""
    seen: set = set()
    for s in series:
        values = set(s)
        if seen & values:
            return True
        seen |= values
    return False


def _protein_names(a: ad.AnnData) -> list[str] | None:
    """The names of ``obsm['protein']``'s columns; None without the slot or without one name per column."""
    names = a.uns.get(PROTEIN_NAMES)
    if PROTEIN not in a.obsm or names is None or len(names) != a.obsm[PROTEIN].shape[1]:
        return None
    return [str(x) for x in names]
