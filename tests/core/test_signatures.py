import numpy as np
import pytest
import scipy.sparse as sp

from concerto_core.signatures import group_mean_attention, top_genes_per_cell

GENES = ["CD3E", "CD8A", "MS4A1", "CD14", "NKG7"]
ATT = sp.csr_matrix(np.array([
    [0.5, 0.3, 0.0, 0.0, 0.2],
    [0.0, 0.0, 0.6, 0.0, 0.0],
    [0.1, 0.0, 0.0, 0.4, 0.1],   # tie between CD3E and NKG7 -> lower gene index first
    [0.4, 0.4, 0.0, 0.0, 0.0],
]))


def test_top_genes_per_cell():
    names, w = top_genes_per_cell(ATT, GENES, n=3, return_weights=True)
    assert list(names.columns) == ["top1", "top2", "top3"]
    assert list(names.iloc[0]) == ["CD3E", "CD8A", "NKG7"]
    assert list(names.iloc[1]) == ["MS4A1", None, None] and np.isnan(w.iloc[1, 1])
    assert list(names.iloc[2]) == ["CD14", "CD3E", "NKG7"]
    assert list(names.iloc[3][:2]) == ["CD3E", "CD8A"]
    np.testing.assert_allclose(w.iloc[0], [0.5, 0.3, 0.2])
    small = top_genes_per_cell(ATT, GENES, n=1, block_rows=1)
    assert list(small.top1) == ["CD3E", "MS4A1", "CD14", "CD3E"]


def test_group_mean_attention_and_minmax():
    groups = ["T", "B", "Mono", "T"]
    raw = group_mean_attention(ATT, GENES, groups, ["CD3E", "CD14", "MS4A1"], normalize=None)
    assert raw.loc["T", "CD3E"] == pytest.approx(0.45)
    assert raw.loc["Mono", "CD14"] == pytest.approx(0.4)
    norm = group_mean_attention(ATT, GENES, groups, ["CD3E", "CD14", "MS4A1"])
    assert norm.loc["T", "CD3E"] == 1.0 and norm.loc["B", "CD3E"] == 0.0
    assert norm.to_numpy().min() >= 0 and norm.to_numpy().max() <= 1
    with pytest.warns(UserWarning, match="dropped"):
        out = group_mean_attention(ATT, GENES, groups, ["CD3E", "FOO"])
    assert list(out.columns) == ["CD3E"]


def test_per_modality_dict():
    prot = sp.csr_matrix(np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [1.0, 0.0]]))
    res = group_mean_attention({"rna": ATT, "protein": prot},
                               {"rna": GENES, "protein": ["CD8", "CD19"]},
                               ["T", "B", "Mono", "T"], {"rna": ["CD3E"], "protein": ["CD8", "CD19"]})
    assert set(res) == {"rna", "protein"}
    assert res["protein"].loc["T", "CD8"] == 1.0
    tops = top_genes_per_cell({"rna": ATT, "protein": prot}, {"rna": GENES, "protein": ["CD8", "CD19"]}, n=1)
    assert list(tops["protein"].top1) == ["CD8", "CD19", "CD8", "CD8"]
