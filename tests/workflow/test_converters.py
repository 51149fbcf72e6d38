"""Converters: tiny fixtures written here in every source format, checked against the standard schema."""
import gzip
import io
import tarfile

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from concerto_workflow import converters as C
from concerto_workflow.columns import COUNTS_LAYER, PROTEIN, PROTEIN_NAMES
from concerto_workflow.contracts import validate_standard

GENES = ["INS", "GCG", "SST", "KRT19"]
CELLS = ["c1", "c2", "c3"]
COUNTS = np.array([[5, 0, 1, 0], [0, 7, 0, 2], [1, 0, 0, 9]], dtype=np.float32)   # cells x genes


def _gz(path, text):
    with gzip.open(path, "wt") as f:
        f.write(text)


def _write_mtx(prefix, counts=COUNTS, genes=GENES, cells=CELLS):
    """10x v3 triple at ``prefix`` (a directory path ending in '/' or a GEO-style file prefix)."""
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, sp.coo_matrix(counts.T))
    with gzip.open(f"{prefix}matrix.mtx.gz", "wb") as f:
        f.write(buf.getvalue())
    _gz(f"{prefix}features.tsv.gz", "".join(f"ENSG{i}\t{g}\tGene Expression\n" for i, g in enumerate(genes)))
    _gz(f"{prefix}barcodes.tsv.gz", "".join(f"{c}\n" for c in cells))


def _check_counts(a, cells=CELLS, genes=GENES, counts=COUNTS):
    assert list(a.obs_names) == cells and list(a.var_names) == genes
    np.testing.assert_array_equal(a.X.toarray(), counts)


def test_read_10x_mtx_directory(tmp_path):
    _write_mtx(f"{tmp_path}/")
    a = C.read_10x_mtx(tmp_path)
    _check_counts(a)
    assert a.var["gene_id"].iloc[0] == "ENSG0"


def test_read_10x_mtx_shape_mismatch_is_named(tmp_path):
    _write_mtx(f"{tmp_path}/")
    _gz(tmp_path / "barcodes.tsv.gz", "c1\nc2\n")
    with pytest.raises(ValueError, match="expected genes x cells"):
        C.read_10x_mtx(tmp_path)


def test_read_tables_both_orientations(tmp_path):
    gxc = pd.DataFrame(COUNTS.T, index=GENES, columns=CELLS)
    gxc.to_csv(tmp_path / "g.csv.gz")
    _check_counts(C.read_table(tmp_path / "g.csv.gz"))
    cxg = pd.DataFrame(COUNTS, index=CELLS, columns=GENES)
    cxg.insert(0, "assigned_cluster", ["beta", "alpha", "ductal"])
    cxg.to_csv(tmp_path / "c.tsv", sep="\t")
    a = C.read_table(tmp_path / "c.tsv", orientation="cells_x_genes")
    _check_counts(a)
    assert list(a.obs["assigned_cluster"]) == ["beta", "alpha", "ductal"]
    with pytest.raises(ValueError, match="is it cells x genes"):
        C.read_table(tmp_path / "c.tsv")


def test_read_h5ad_layer_and_10x_h5(tmp_path):
    import h5py

    b = ad.AnnData(np.log1p(COUNTS), obs=pd.DataFrame(index=CELLS), var=pd.DataFrame(index=GENES),
                   layers={"raw": sp.csr_matrix(COUNTS)})
    b.write_h5ad(tmp_path / "x.h5ad")
    a = C.read_h5ad(tmp_path / "x.h5ad", counts_layer="raw")
    _check_counts(a)
    with pytest.raises(KeyError, match="no layer 'counts'"):
        C.read_h5ad(tmp_path / "x.h5ad", counts_layer="counts")

    m = sp.csc_matrix(np.vstack([COUNTS.T, [[3, 3, 3]]]))           # 4 genes + 1 antibody, x 3 cells
    with h5py.File(tmp_path / "x.h5", "w") as f:
        g = f.create_group("matrix")
        for k in ("data", "indices", "indptr"):
            g[k] = getattr(m, k)
        g["shape"] = np.array(m.shape)
        g["barcodes"] = np.array(CELLS, dtype="S")
        g["features/name"] = np.array(GENES + ["CD3"], dtype="S")
        g["features/id"] = np.array([f"E{i}" for i in range(5)], dtype="S")
        g["features/feature_type"] = np.array(["Gene Expression"] * 4 + ["Antibody Capture"], dtype="S")
    _check_counts(C.read_10x_h5(tmp_path / "x.h5"))


def test_homology_report_keeps_one_to_one(tmp_path):
    rows = [("1", "human", "INS"), ("1", "mouse, laboratory", "Ins1"),
            ("2", "human", "GCG"), ("2", "mouse, laboratory", "Gcg"),
            ("3", "human", "AMY2A"), ("3", "mouse, laboratory", "Amy2a1"), ("3", "mouse, laboratory", "Amy2a2")]
    pd.DataFrame(rows, columns=["DB Class Key", "Common Organism Name", "Symbol"]).to_csv(
        tmp_path / "HOM.rpt", sep="\t", index=False)
    t = C.read_homology_report(tmp_path / "HOM.rpt")
    assert sorted(map(tuple, t[["human", "mouse"]].to_numpy())) == [("GCG", "Gcg"), ("INS", "Ins1")]


def _celltype_map(tmp_path):
    (tmp_path / "maps").mkdir(exist_ok=True)
    (tmp_path / "maps/p.tsv").write_text("source_label\tcell_type\nbeta\tbeta\nA\talpha\nduct\tductal\n")
    return "maps/p.tsv"


def test_convert_geo_tar_with_metadata_protein_and_harmonisation(tmp_path):
    """GEO-style: a RAW tar of per-sample mtx triples (RNA + ADT), a metadata table, a label map."""
    src = tmp_path / "src"
    src.mkdir()
    for s, cells, rows in (("GSM1_P1_", ["a", "b"], [0, 1]), ("GSM2_P2_", ["c"], [2])):
        _write_mtx(f"{src}/{s}RNA-", COUNTS[rows], cells=cells)
        _write_mtx(f"{src}/{s}ADT-", np.full((len(cells), 2), 4.0, np.float32), genes=["CD3", "CD4"], cells=cells)
    with tarfile.open(tmp_path / "RAW.tar", "w") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=p.name)
    pd.DataFrame({"cell": ["P1_a", "P1_b", "P2_c", "P9_zz"], "label": ["beta", "A", "duct", "beta"],
                  "donor": ["P1", "P1", "P2", "P9"]}).to_csv(tmp_path / "meta.csv", index=False)
    spec = {
        "counts": {"file": "raw", "format": "10x_mtx", "members": "*_RNA-*", "batch_from_member": r"_(P\d)_",
                   "prefix_cells": True},
        "protein": {"file": "raw", "format": "10x_mtx", "members": "*_ADT-*", "batch_from_member": r"_(P\d)_",
                    "prefix_cells": True},
        "metadata": {"file": "meta", "index_col": "cell", "sep": ","},
        "obs": {"cell_type": "label", "donor": "donor", "batch": "member_batch"},
        "constants": {"tech": "10x 3'", "species": "human"},
        "celltype_map": _celltype_map(tmp_path),
    }
    a = C.convert({"raw": str(tmp_path / "RAW.tar"), "meta": str(tmp_path / "meta.csv")}, spec,
                  name="demo", workdir=tmp_path / "work", repo=tmp_path)
    validate_standard(a, "demo")
    assert a.X is None and a.layers[COUNTS_LAYER].shape == (3, 4)
    assert list(a.obs_names) == ["P1_a", "P1_b", "P2_c"]
    assert list(a.obs["cell_type"]) == ["beta", "alpha", "ductal"]
    assert list(a.obs["cell_type_source"]) == ["beta", "A", "duct"]
    assert list(a.obs["batch"]) == ["P1", "P1", "P2"] and set(a.obs["species"]) == {"human"}
    assert a.obsm[PROTEIN].shape == (3, 2) and a.uns[PROTEIN_NAMES] == ["CD3", "CD4"]
    np.testing.assert_array_equal(a.layers[COUNTS_LAYER].toarray(), COUNTS[[0, 1, 2]])


def test_convert_cells_by_genes_table_and_h5ad_proteins(tmp_path):
    cxg = pd.DataFrame(COUNTS, index=CELLS, columns=GENES)
    cxg.insert(0, "assigned_cluster", ["beta", "A", "ghost"])
    cxg.to_csv(tmp_path / "human1.csv")
    spec = {"counts": {"file": "counts", "format": "table", "options": {"orientation": "cells_x_genes"}},
            "obs": {"cell_type": "assigned_cluster"}, "constants": {"tech": "inDrop", "batch": "human1"},
            "celltype_map": _celltype_map(tmp_path)}
    with pytest.raises(ValueError, match=r"labels \['ghost'\] are not in the cell-type map"):
        C.convert({"counts": str(tmp_path / "human1.csv")}, spec, name="baron", workdir=tmp_path, repo=tmp_path)
    a = C.convert({"counts": str(tmp_path / "human1.csv")}, {**spec, "drop_labels": ["ghost"]}, name="baron",
                  workdir=tmp_path, repo=tmp_path)
    assert a.n_obs == 2 and list(a.obs["cell_type"]) == ["beta", "alpha"]

    b = ad.AnnData(sp.csr_matrix(COUNTS), obs=pd.DataFrame({"ct": ["x", "y", "x"]}, index=CELLS),
                   var=pd.DataFrame(index=GENES), obsm={"adt": np.ones((3, 2))}, uns={"adt_names": ["CD3", "CD4"]})
    b.write_h5ad(tmp_path / "b.h5ad")
    a = C.convert({"h5ad": str(tmp_path / "b.h5ad")},
                  {"counts": {"file": "h5ad", "format": "h5ad"}, "obs": {"cell_type": "ct"},
                   "protein": {"obsm": "adt", "names_uns": "adt_names"}}, name="cite", workdir=tmp_path)
    validate_standard(a, "cite")
    assert a.uns[PROTEIN_NAMES] == ["CD3", "CD4"] and set(a.obs["batch"]) == {"batch1"}
    with pytest.raises(ValueError, match="not standard obs columns"):
        C.convert({"h5ad": str(tmp_path / "b.h5ad")}, {"counts": {"file": "h5ad"}, "obs": {"cell_type": "ct", "celltype": "ct"}},
                  name="cite", workdir=tmp_path)


def test_standard_schema_shared_with_the_standins_and_names_problems():
    from concerto_workflow.simulate.standins import make_pancreas

    validate_standard(make_pancreas(n_cells=200, n_genes=300), "stand-in pancreas")
    bad = ad.AnnData(sp.csr_matrix(-COUNTS), obs=pd.DataFrame({"cell_type": ["a"] * 3}, index=CELLS),
                     var=pd.DataFrame(index=GENES))
    with pytest.raises(ValueError, match=r"cell_type'\] is object, not categorical.*obs\['batch'\] missing.*negative"):
        validate_standard(bad, "demo")


def test_convert_geo_matrix_market_with_separate_gene_and_cell_lists(tmp_path):
    _write_mtx(f"{tmp_path}/x_")
    files = {"counts": f"{tmp_path}/x_matrix.mtx.gz", "genes": f"{tmp_path}/x_features.tsv.gz",
             "cells": f"{tmp_path}/x_barcodes.tsv.gz", "meta": f"{tmp_path}/meta.tsv"}
    pd.DataFrame({"NAME": CELLS, "CellType": ["B", "B", "T"], "Method": ["Drop-seq"] * 3}).to_csv(
        files["meta"], sep="\t", index=False)
    spec = {"counts": {"file": "counts", "format": "mtx", "options": {"features": "genes", "barcodes": "cells"}},
            "metadata": {"file": "meta", "index_col": "NAME", "sep": "\t"},
            "obs": {"cell_type": "CellType", "tech": "Method", "batch": "Method"}}
    a = C.convert(files, spec, name="pbmc45k", workdir=tmp_path)
    validate_standard(a, "pbmc45k")
    np.testing.assert_array_equal(a.layers[COUNTS_LAYER].toarray(), COUNTS)
    assert list(a.obs["tech"]) == ["Drop-seq"] * 3
