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


def test_convert_real_without_labels_marks_every_cell_unlabelled(tmp_path):
    """The 10x CITE-seq PBMC files have no labels: empty label_col, cells 'unlabelled' (protein inference only)."""
    a = ad.AnnData(np.ones((2, 2), dtype=np.float32), obs=pd.DataFrame({"n_genes": [2, 2]}, index=["a", "b"]),
                   var=pd.DataFrame(index=["G1", "G2"]))
    a.obsm["protein_expression"] = np.array([[3, 0], [1, 5]])
    a.uns["protein_names"] = ["CD3_TotalSeqB", "CD4_TotalSeqB"]
    a.write_h5ad(tmp_path / "x.h5ad")
    out = datasets.convert_real(str(tmp_path / "x.h5ad"), batch_col="", label_col="",
                                protein_obsm="protein_expression")
    assert list(out.obs["cell_type"]) == [datasets.UNLABELLED] * 2
    assert list(out.uns["protein_names"]) == ["CD3_TotalSeqB", "CD4_TotalSeqB"]


def _part(genes, batches, cells, labels=None, protein=None, extra=None):
    """A prepared dataset (common schema) with X[i, j] = 100 * i + j, so rows and genes can be traced."""
    n = len(cells)
    obs = pd.DataFrame({"cell_type": labels or ["T"] * n, "batch": batches, "tech": ["10x"] * n, **(extra or {})},
                       index=cells)
    a = ad.AnnData(sp.csr_matrix(np.add.outer(100 * np.arange(n), np.arange(len(genes))).astype(np.float32)),
                   obs=obs, var=pd.DataFrame(index=genes))
    if protein is not None:
        a.obsm["protein"] = np.tile(np.arange(len(protein), dtype=np.float32), (n, 1))
        a.uns["protein_names"] = protein
    return datasets.to_common_schema(a)


GENES = [f"G{i}" for i in range(120)]


def test_concat_keeps_the_shared_genes_and_records_the_origin():
    thymus = _part(GENES + ["TH1"], ["d1", "d2"], ["a", "b"], ["DP", "SP"], extra={"donor": ["d1", "d2"]})
    pbmc = _part(["PB1"] + GENES[::-1], ["e1", "e1", "e2"], ["c", "d", "e"], ["B", "T", "NK"])
    out = datasets.concat_datasets({"thymus": thymus, "pbmc": pbmc})
    assert list(out.var_names) == GENES                       # first part's order, private genes gone
    assert list(out.obs_names) == list("abcde")               # no clash: names unchanged
    assert list(out.obs["origin"]) == ["thymus"] * 2 + ["pbmc"] * 3
    assert list(out.obs["batch"]) == ["d1", "d2", "e1", "e1", "e2"]   # no clash: batches unchanged
    assert list(out.obs["cell_type"]) == ["DP", "SP", "B", "T", "NK"]
    assert "donor" not in out.obs                             # not in every part
    # pbmc's genes were reversed with PB1 first: its G0 is column 120 of its own X
    assert out.X[2, 0] == pbmc.X[0, 120] and out.X[1, 5] == thymus.X[1, 5]
    assert out.X.format == "csr" and out.X.dtype == np.float32
    assert all(isinstance(out.obs[c].dtype, pd.CategoricalDtype) for c in ("cell_type", "batch", "tech", "origin"))


def test_concat_keeps_clashing_batches_and_cell_names_apart():
    a = _part(GENES, ["b1", "b2"], ["c1", "c2"])
    b = _part(GENES, ["b1", "b1"], ["c1", "x"])
    out = datasets.concat_datasets({"a": a, "b": b}, origin_col="study")
    assert list(out.obs["batch"]) == ["a:b1", "a:b2", "b:b1", "b:b1"]
    assert list(out.obs_names) == ["a:c1", "a:c2", "b:c1", "b:x"]
    assert out.obs["batch"].nunique() == 3 and list(out.obs["study"]) == ["a", "a", "b", "b"]


def test_concat_keeps_protein_only_when_every_part_has_the_same_proteins(capsys):
    a = _part(GENES, ["b1"], ["c1"], protein=["CD3", "CD4"])
    b = _part(GENES, ["b2"], ["c2"], protein=["CD4", "CD3"])   # same proteins, other order
    out = datasets.concat_datasets({"a": a, "b": b})
    assert list(out.uns["protein_names"]) == ["CD3", "CD4"]
    np.testing.assert_array_equal(out.obsm["protein"], [[0, 1], [1, 0]])   # b's columns reordered
    c = _part(GENES, ["b3"], ["c3"])                             # no proteins
    out = datasets.concat_datasets({"a": a, "c": c})
    assert "protein" not in out.obsm and "protein_names" not in out.uns
    assert "obsm['protein'] dropped" in capsys.readouterr().out


@pytest.mark.parametrize("parts, kwargs, error, message", [
    (lambda: {"human": _part(GENES[:99] + ["H"], ["b"], ["c"]), "mouse": _part(GENES[:99] + ["m"], ["b"], ["d"])},
     {}, ValueError, r"datasets \['human', 'mouse'\] share only 99 genes .*human 100, mouse 100"),
    (lambda: {"only": _part(GENES, ["b"], ["c"])}, {}, ValueError, "at least 2 datasets"),
    (lambda: {"a": _part(GENES, ["b"], ["c"]), "b": _part(GENES, ["b"], ["d"])}, {"origin_col": "batch"},
     ValueError, "would overwrite a standard column"),
    (lambda: {"a": _part(GENES, ["b"], ["c"], extra={"origin": ["x"]}), "b": _part(GENES, ["b"], ["d"])}, {},
     ValueError, "dataset 'a' already has obs column 'origin'"),
])
def test_concat_errors_name_the_datasets(parts, kwargs, error, message):
    with pytest.raises(error, match=message):
        datasets.concat_datasets(parts(), **kwargs)
