import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_workflow import datasets


def test_convert_real_scib_like(tmp_path):
    """scIB pancreas layout: counts in layers['counts'], batch in obs['tech'], labels in 'celltype'."""
    n = 6
    a = ad.AnnData(np.ones((n, 3), dtype=np.float32),
                   obs=pd.DataFrame({"tech": ["inDrop1", "inDrop3", "celseq2", "celseq", "smartseq2", "fluidigmc1"],
                                     "celltype": list("abcabc")}, index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=["G1", "G2", "G3"]))
    a.layers["counts"] = sp.csr_matrix(np.arange(n * 3, dtype=np.float32).reshape(n, 3))
    a.write_h5ad(tmp_path / "scib.h5ad")
    out = datasets.convert_real(str(tmp_path / "scib.h5ad"), batch_col="tech", label_col="celltype",
                                counts_layer="counts",
                                tech_pattern="^(inDrop|celseq2|celseq|fluidigmc1|smarter|smartseq2)")
    assert list(out.obs["tech"]) == ["inDrop", "inDrop", "celseq2", "celseq", "smartseq2", "fluidigmc1"]
    assert list(out.obs["batch"])[:2] == ["inDrop1", "inDrop3"]
    assert out.X.format == "csr" and out.X[1, 0] == 3


def test_convert_real_names_missing_column(tmp_path):
    a = ad.AnnData(np.ones((2, 2), dtype=np.float32), obs=pd.DataFrame({"x": [1, 2]}, index=["a", "b"]))
    a.write_h5ad(tmp_path / "x.h5ad")
    with pytest.raises(KeyError, match="batch_col"):
        datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="tech", label_col="celltype")


def test_standin_in_common_schema():
    a = datasets.make_standin("pancreas", {"n_cells": 300, "n_genes": 200, "seed": 0})
    assert {"cell_type", "batch", "tech"} <= set(a.obs.columns)
    assert a.obs["batch"].nunique() == 8 and "inDrop" in set(a.obs["tech"])
    assert a.X.format == "csr"


def test_convert_real_keeps_columns_and_protein(tmp_path):
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32),
                   obs=pd.DataFrame({"b": ["x", "x", "y"], "l": list("abc"), "t": ["10x"] * 3, "donor": list("ppq")},
                                    index=["c1", "c2", "c3"]), var=pd.DataFrame(index=["G1", "G2"]))
    a.obsm["protein"] = np.arange(6, dtype=np.float32).reshape(3, 2)
    a.uns["protein_names"] = ["CD3", "CD4"]
    a.write_h5ad(tmp_path / "x.h5ad")
    out = datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="b", label_col="l", tech_col="t",
                                keep_obs=["donor"])
    assert list(out.obs["tech"]) == ["10x"] * 3 and list(out.obs["donor"]) == list("ppq")
    assert out.obsm["protein"].shape == (3, 2) and list(out.uns["protein_names"]) == ["CD3", "CD4"]


def test_convert_real_without_batch_column_is_one_batch(tmp_path):
    """A single run (PBMC 4k, CBMC): batch_col '' -> every cell in batch0."""
    a = ad.AnnData(np.ones((3, 2), dtype=np.float32), obs=pd.DataFrame({"label": ["1", "2", "1"]}, index=list("abc")))
    a.write_h5ad(tmp_path / "x.h5ad")
    out = datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="", label_col="label")
    assert set(out.obs["batch"]) == {"batch0"} and list(out.obs["cell_type"]) == ["1", "2", "1"]
