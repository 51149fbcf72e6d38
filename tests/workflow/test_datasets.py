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


def test_convert_real_drops_labels_and_makes_one_batch(tmp_path):
    a = ad.AnnData(np.ones((4, 2), dtype=np.float32), obs=pd.DataFrame({"l": ["T", "Mouse", "B", "Unknown"]},
                                                                      index=list("abcd")),
                   var=pd.DataFrame(index=["G1", "G2"]))
    a.write_h5ad(tmp_path / "x.h5ad")
    out = datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="", label_col="l",
                                drop_labels=["Mouse", "Unknown"])
    assert list(out.obs_names) == ["a", "c"] and list(out.obs["batch"]) == ["batch1"] * 2
    with pytest.raises(KeyError, match="drop_labels"):
        datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="", label_col="l", drop_labels=["NK"])


def test_convert_real_lognorm_values_and_a_named_protein_slot(tmp_path):
    """A file of log1p-normalised values is turned back with expm1 (so the engine's own
    normalisation applies); a second modality under another obsm key becomes obsm['protein']."""
    counts = np.array([[1, 0, 3], [0, 2, 2]], dtype=np.float32)
    a = ad.AnnData(sp.csr_matrix(np.log1p(counts)), obs=pd.DataFrame({"l": ["T", "B"]}, index=["a", "b"]),
                   var=pd.DataFrame(index=["G1", "G2", "G3"]))
    a.obsm["ADT_clr"] = np.array([[-1.5, 2.0], [0.3, -0.2]], dtype=np.float32)
    a.write_h5ad(tmp_path / "x.h5ad")
    out = datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="", label_col="l", values="lognorm",
                                protein_obsm="ADT_clr")
    assert np.allclose(out.X.toarray(), counts, atol=1e-5)
    assert np.array_equal(out.obsm["protein"], a.obsm["ADT_clr"])
    assert list(out.uns["protein_names"]) == ["ADT_clr_0", "ADT_clr_1"]
    with pytest.raises(KeyError, match="protein_obsm"):
        datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="", label_col="l", protein_obsm="ADT")
    with pytest.raises(ValueError, match="values"):
        datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="", label_col="l", values="scaled")
