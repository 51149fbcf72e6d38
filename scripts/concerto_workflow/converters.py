"""Converters from the source formats of the paper's datasets to the standard dataset schema.

Readers (one per source format; each returns an AnnData of raw counts, cells x genes, CSR):

===========  ==================================================================================
format       files
===========  ==================================================================================
mtx          a MatrixMarket genes x cells matrix + its gene list + its cell list (GEO style)
10x_mtx      ``matrix.mtx(.gz)`` (genes x cells) + ``features.tsv(.gz)`` / ``genes.tsv(.gz)`` +
             ``barcodes.tsv(.gz)``: a directory, or the three files named by a common prefix
             (GEO style ``GSM..._RNA_3P-``)
table        a CSV / TSV (optionally .gz) count table, ``genes_x_cells`` or ``cells_x_genes``;
             non-numeric columns of a cells x genes table become obs (e.g. Baron's
             ``barcode``, ``assigned_cluster``)
h5ad         an AnnData file; counts from ``X`` or a named layer, obs / obsm kept
10x_h5       Cell Ranger's HDF5 matrix (``matrix/{data,indices,indptr,shape,barcodes,features}``)
===========  ==================================================================================

RDS files are not read: the Seurat objects of the paper's sources have an h5ad, mtx or table
alternative, which the sources config uses instead.

:func:`convert` assembles one dataset from a source entry of ``config/sources.yaml``: counts
(several files or tar members are concatenated, each member's name becoming a batch), an
optional second modality into ``obsm['protein']``, an optional cell metadata table joined on
the cell barcodes, source columns renamed to the standard ones
(:data:`~concerto_workflow.columns.STANDARD_OBS`), constants (tech, species, tissue) and the
cell-type harmonisation as a mapping table (``config/celltype_maps/*.tsv``: columns
``source_label``, ``cell_type``), never a code branch per dataset. Output: raw counts in
``layers['counts']`` (``X`` left empty: one copy of the counts on disk), checked by
:func:`concerto_workflow.contracts.validate_standard`.
"""
from __future__ import annotations

import fnmatch
import gzip
import logging
import os
import re
import shutil
import tarfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from .columns import BATCH, CELL_TYPE, COUNTS_LAYER, PROTEIN, PROTEIN_NAMES, STANDARD_OBS, TECH
from .contracts import validate_standard

log = logging.getLogger(__name__)


def _counts(X) -> sp.csr_matrix:
    return sp.csr_matrix(X, dtype=np.float32)


def _find(directory: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        for suffix in ("", ".gz"):
            p = directory / f"{n}{suffix}"
            if p.exists():
                return p
    raise FileNotFoundError(f"none of {list(names)} (.gz) in {directory}")


# ------------------------------------------------------------------------------- readers


def read_mtx(matrix: str | os.PathLike, *, features: str | os.PathLike, barcodes: str | os.PathLike) -> ad.AnnData:
    """A MatrixMarket count matrix (genes x cells, optionally .gz) with its gene and cell lists
    (one per line, tab-separated columns; gene symbol = second column if there is one, else
    the first). Ensembl ids go to ``var['gene_id']``; var_names are made unique."""
    with (gzip.open(matrix) if str(matrix).endswith(".gz") else open(matrix, "rb")) as f:
        X = scipy.io.mmread(f)
    feat = pd.read_csv(features, sep="\t", header=None, dtype=str)
    cells = pd.read_csv(barcodes, sep="\t", header=None, dtype=str)[0]
    if X.shape != (len(feat), len(cells)):
        raise ValueError(f"{matrix}: matrix is {X.shape} but {Path(features).name} has {len(feat)} rows and "
                         f"{Path(barcodes).name} {len(cells)} (expected genes x cells)")
    symbols = feat[1] if feat.shape[1] > 1 else feat[0]
    var = pd.DataFrame({"gene_id": feat[0].to_numpy()}, index=symbols.to_numpy())
    if feat.shape[1] > 2:
        var["feature_type"] = feat[2].to_numpy()
    a = ad.AnnData(_counts(sp.csc_matrix(X).T), obs=pd.DataFrame(index=cells.to_numpy()), var=var)
    a.var_names_make_unique()
    return a


def read_10x_mtx(path: str | os.PathLike) -> ad.AnnData:
    """A 10x MatrixMarket triple (:func:`read_mtx`). ``path`` is a directory holding
    ``matrix.mtx``, ``features.tsv`` (or v2 ``genes.tsv``) and ``barcodes.tsv`` (each optionally
    .gz), or a prefix ``dir/GSM123_RNA_3P-`` of files ``<prefix>matrix.mtx.gz`` etc."""
    p = Path(path)
    directory, prefix = (p, "") if p.is_dir() else (p.parent, p.name)
    return read_mtx(_find(directory, (f"{prefix}matrix.mtx",)),
                    features=_find(directory, (f"{prefix}features.tsv", f"{prefix}genes.tsv")),
                    barcodes=_find(directory, (f"{prefix}barcodes.tsv",)))


def read_table(path: str | os.PathLike, *, orientation: str = "genes_x_cells", sep: str | None = None,
               index_col: int | str = 0) -> ad.AnnData:
    """A delimited count table (CSV / TSV, optionally .gz; separator sniffed unless given).
    ``genes_x_cells``: first column gene, one column per cell. ``cells_x_genes``: one row per
    cell; its non-numeric columns (barcode, cluster label, ...) become obs."""
    if orientation not in ("genes_x_cells", "cells_x_genes"):
        raise ValueError(f"orientation must be 'genes_x_cells' or 'cells_x_genes', got {orientation!r}")
    df = pd.read_csv(path, sep=sep, engine="python" if sep is None else "c", index_col=index_col)
    df.index = df.index.astype(str)
    if orientation == "genes_x_cells":
        bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise ValueError(f"{path}: genes x cells table has non-numeric cell columns {bad[:5]}; "
                             f"is it cells x genes?")
        a = ad.AnnData(_counts(df.to_numpy().T), obs=pd.DataFrame(index=df.columns.astype(str)),
                       var=pd.DataFrame(index=df.index))
    else:
        meta = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        genes = df.drop(columns=meta)
        a = ad.AnnData(_counts(genes.to_numpy()), obs=df[meta].astype(str), var=pd.DataFrame(index=genes.columns.astype(str)))
    a.var_names_make_unique()
    return a


def read_h5ad(path: str | os.PathLike, *, counts_layer: str = "") -> ad.AnnData:
    """An h5ad; counts from ``X`` or ``layers[counts_layer]``; obs, var, obsm and uns kept."""
    a = ad.read_h5ad(path)
    if counts_layer:
        if counts_layer not in a.layers:
            raise KeyError(f"{path}: no layer {counts_layer!r}; layers: {list(a.layers)}")
        a.X = a.layers[counts_layer]
    a.layers.clear()
    a.X = _counts(a.X)
    return a


def read_10x_h5(path: str | os.PathLike, *, feature_type: str = "Gene Expression") -> ad.AnnData:
    """Cell Ranger (v3+) HDF5 matrix; only features of ``feature_type`` (empty = all)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "matrix" not in f:
            raise ValueError(f"{path}: no 'matrix' group; Cell Ranger v2 files (one group per genome) "
                             f"are not supported, convert them with Cell Ranger or scanpy first")
        m = f["matrix"]
        shape = tuple(m["shape"][()])
        X = sp.csc_matrix((m["data"][()], m["indices"][()], m["indptr"][()]), shape=shape)
        dec = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else str(b))
        names = dec(m["features/name"][()])
        ids = dec(m["features/id"][()])
        types = dec(m["features/feature_type"][()]) if "feature_type" in m["features"] else np.full(len(ids), feature_type)
        cells = dec(m["barcodes"][()])
    keep = types == feature_type if feature_type else np.ones(len(ids), bool)
    a = ad.AnnData(_counts(X.T[:, keep]), obs=pd.DataFrame(index=cells),
                   var=pd.DataFrame({"gene_id": ids[keep], "feature_type": types[keep]}, index=names[keep]))
    a.var_names_make_unique()
    return a


READERS = {"10x_mtx": read_10x_mtx, "mtx": read_mtx, "table": read_table, "h5ad": read_h5ad, "10x_h5": read_10x_h5}


def read_homology_report(path: str | os.PathLike, *, reference: str = "human", query: str = "mouse") -> pd.DataFrame:
    """MGI's ``HOM_MouseHumanSequence.rpt`` (tab-separated; one row per gene, grouped by
    ``DB Class Key``) -> one-to-one pairs, columns ``human``, ``mouse`` (the ortholog table
    of a cross-species split's ``gene_map: {source: table}``). Classes with more than one
    gene of either species are dropped (as the paper uses one-to-one homologs only)."""
    t = pd.read_csv(path, sep="\t", dtype=str)
    need = {"DB Class Key", "Common Organism Name", "Symbol"}
    if not need <= set(t.columns):
        raise ValueError(f"{path}: not an MGI homology report (needs columns {sorted(need)}; has "
                         f"{list(t.columns)[:8]})")
    species = t["Common Organism Name"].str.lower().str.extract(r"(human|mouse)")[0]
    t = t.assign(species=species).dropna(subset=["species"])
    counts = t.groupby(["DB Class Key", "species"]).size().unstack(fill_value=0)
    one = counts.index[(counts.get("human", 0) == 1) & (counts.get("mouse", 0) == 1)]
    t = t[t["DB Class Key"].isin(one)]
    wide = t.pivot(index="DB Class Key", columns="species", values="Symbol")
    return wide[[reference, query]].reset_index(drop=True).rename_axis(None, axis=1)


# ------------------------------------------------------------------------------- assembly


def _expand(files: dict[str, str], spec: dict, workdir: Path) -> list[tuple[str, Path]]:
    """(member name, path) of the files a part of a source entry reads: ``file`` (a role of the
    entry's files) or a list of roles; with ``members`` (a glob), the matching members of that
    tar archive, extracted under ``workdir``."""
    roles = spec["file"] if isinstance(spec["file"], list) else [spec["file"]]
    out = []
    for role in roles:
        if role not in files:
            raise KeyError(f"convert: file role {role!r} not among the downloaded files {sorted(files)}")
        path = Path(files[role])
        if not spec.get("members"):
            out.append((role, path))
            continue
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and fnmatch.fnmatch(Path(m.name).name, spec["members"])]
            if not members:
                raise ValueError(f"convert: no member of {path} matches {spec['members']!r}")
            for m in members:
                target = workdir / Path(m.name).name
                if not target.exists():   # extracted before (a rerun) or written whole, then renamed
                    part = target.with_name(f".{target.name}.part")
                    with tar.extractfile(m) as src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.replace(part, target)
                out.append((Path(m.name).name, target))
    return sorted(out)


def _read_part(files: dict, spec: dict, workdir: Path) -> ad.AnnData:
    reader = READERS[spec.get("format", "h5ad")]
    kwargs = dict(spec.get("options", {}))
    if spec.get("format") == "mtx":   # the gene and cell lists are further downloaded files
        kwargs = {**kwargs, **{k: files[kwargs[k]] for k in ("features", "barcodes")}}
    parts = []
    for member, path in _expand(files, spec, workdir):
        if spec.get("format") == "10x_mtx" and spec.get("members"):
            # a triple of members shares the prefix before matrix.mtx / features.tsv / barcodes.tsv
            if not member.endswith(("matrix.mtx", "matrix.mtx.gz")):
                continue
            path = path.with_name(re.sub(r"matrix\.mtx(\.gz)?$", "", member))
        a = reader(path, **kwargs)
        pattern = spec.get("batch_from_member")
        if pattern:
            found = re.search(pattern, member)
            if not found:
                raise ValueError(f"convert: batch_from_member {pattern!r} does not match member {member!r}")
            a.obs["member_batch"] = found.group(1)
            a.obs_names = [f"{found.group(1)}_{c}" for c in a.obs_names] if spec.get("prefix_cells") else a.obs_names
        parts.append(a)
    if len(parts) == 1:
        return parts[0]
    return ad.concat(parts, join="outer", merge="same")


def tech_from_batch(batch: pd.Series, pattern: str) -> pd.Series:
    """Technology of each batch name: the first group of ``pattern`` (the whole name if it does
    not match), e.g. ``^(inDrop|celseq2|celseq)`` turns scIB's ``inDrop3`` into ``inDrop``."""
    return batch.astype(str).map(lambda b: (re.match(pattern, b) or re.match("(.*)", b)).group(1))


def read_celltype_map(path: str | os.PathLike) -> dict[str, str]:
    """A harmonisation table (TSV, columns ``source_label`` and ``cell_type``)."""
    t = pd.read_csv(path, sep="\t", dtype=str, comment="#")
    if not {"source_label", "cell_type"} <= set(t.columns):
        raise ValueError(f"{path}: a cell-type map needs columns source_label and cell_type; has {list(t.columns)}")
    dup = t["source_label"][t["source_label"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: source labels mapped twice: {dup}")
    return dict(zip(t["source_label"], t["cell_type"]))


def harmonise(labels: pd.Series, mapping: dict[str, str], *, where: str) -> pd.Series:
    """Source labels -> harmonised names; a label the table lacks is an error naming it (a new
    label must be a decision written into the table, not a silent pass-through)."""
    labels = labels.astype(str)
    missing = sorted(set(labels) - set(mapping))
    if missing:
        raise ValueError(f"{where}: labels {missing} are not in the cell-type map; add them (a row "
                         f"source_label<TAB>cell_type) to the table")
    return labels.map(mapping)


def convert(files: dict[str, str], spec: dict, *, name: str, workdir: str | os.PathLike,
            repo: str | os.PathLike = ".") -> ad.AnnData:
    """One source entry's downloaded ``files`` ({role: path}) -> the standard schema.

    ``spec`` (the entry's ``convert`` block, see ``config/sources.yaml``): ``counts`` and
    optional ``protein`` ({file, format, options, members, batch_from_member}, or {obsm,
    names_uns} for proteins already in the h5ad's obsm), optional
    ``metadata`` ({file, index_col, sep}) joined on cell names (cells without metadata are
    dropped and counted), ``obs`` {standard column: source column}, ``constants``
    {standard column: value}, ``tech_pattern`` (regex: technology = first group of the batch
    name, when no column gives it), ``celltype_map`` (TSV path relative to ``repo``) applied to
    ``obs['cell_type']`` and ``drop_labels`` (source labels removed first).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    a = _read_part(files, spec["counts"], workdir)
    meta = a.obs.copy()
    if spec.get("metadata"):
        m = spec["metadata"]
        table = pd.read_csv(files[m["file"]], sep=m.get("sep"), engine="python" if m.get("sep") is None else "c",
                            index_col=m.get("index_col", 0), dtype=str, comment=m.get("comment"),
                            skiprows=m.get("skiprows") or None)
        table.index = table.index.astype(str)
        shared = a.obs_names.intersection(table.index)
        if len(shared) == 0:
            raise ValueError(f"dataset {name!r}: no cell of the counts (e.g. {list(a.obs_names[:3])}) is in "
                             f"the metadata table (e.g. {list(table.index[:3])})")
        log.info("%s: %d of %d cells have metadata; the others are dropped", name, len(shared), a.n_obs)
        a = a[shared].copy()
        meta = a.obs.join(table.loc[shared], rsuffix="_meta")
    obs = pd.DataFrame(index=a.obs_names.astype(str))
    unknown = sorted((set(spec.get("obs", {})) | set(spec.get("constants", {}))) - set(STANDARD_OBS))
    if unknown:
        raise ValueError(f"dataset {name!r}: {unknown} are not standard obs columns; standard: {list(STANDARD_OBS)}")
    for std, col in spec.get("obs", {}).items():
        if col not in meta:
            raise KeyError(f"dataset {name!r}: convert.obs.{std} = {col!r} is not a column of the cell "
                           f"metadata; columns: {list(meta.columns)}")
        obs[std] = meta[col].astype(str).to_numpy()
    for std, value in spec.get("constants", {}).items():
        obs[std] = str(value)
    if BATCH not in obs:
        obs[BATCH] = "batch1"
    if TECH not in obs:   # from the batch name (scIB pancreas: inDrop3 -> inDrop), else unknown
        pattern = spec.get("tech_pattern")
        obs[TECH] = tech_from_batch(obs[BATCH], pattern).to_numpy() if pattern else "unknown"
    if CELL_TYPE not in obs:
        raise ValueError(f"dataset {name!r}: convert.obs names no cell_type column")
    drop = obs[CELL_TYPE].isin([str(v) for v in spec.get("drop_labels", [])]).to_numpy()
    obs, a = obs[~drop], a[~drop].copy()
    if spec.get("celltype_map"):
        mapping = read_celltype_map(Path(repo) / spec["celltype_map"])
        obs["cell_type_source"] = obs[CELL_TYPE]
        obs[CELL_TYPE] = harmonise(obs[CELL_TYPE], mapping, where=f"dataset {name!r} ({spec['celltype_map']})").to_numpy()
    for c in obs:
        obs[c] = pd.Categorical(obs[c])
    out = ad.AnnData(X=None, obs=obs, var=pd.DataFrame(index=a.var_names.astype(str)),
                     layers={COUNTS_LAYER: _counts(a.X)})
    if spec.get("protein", {}).get("obsm"):     # h5ad sources: proteins already beside the RNA
        key, names = spec["protein"]["obsm"], spec["protein"].get("names_uns", PROTEIN_NAMES)
        if key not in a.obsm:
            raise KeyError(f"dataset {name!r}: convert.protein.obsm = {key!r} not in obsm; has {list(a.obsm)}")
        out.obsm[PROTEIN] = np.asarray(a.obsm[key], dtype=np.float32)
        if names in a.uns:
            out.uns[PROTEIN_NAMES] = [str(g) for g in a.uns[names]]
    elif spec.get("protein"):
        p = _read_part(files, spec["protein"], workdir)
        missing = out.obs_names.difference(p.obs_names)
        if len(missing):
            raise ValueError(f"dataset {name!r}: {len(missing)} cells have no protein measurement "
                             f"(e.g. {list(missing[:3])})")
        out.obsm[PROTEIN] = np.asarray(p[out.obs_names].X.toarray(), dtype=np.float32)
        out.uns[PROTEIN_NAMES] = [str(g) for g in p.var_names]
    validate_standard(out, f"dataset {name!r}")
    return out
