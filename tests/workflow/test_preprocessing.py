import numpy as np
import pytest

from concerto_workflow import preprocessing as pp


def test_parse_hvg():
    assert pp.parse_hvg("all") is None
    assert pp.parse_hvg("2000") == 2000
    with pytest.raises(ValueError):
        pp.parse_hvg("0")


def test_integration_normalised_and_hvg(raw_adata):
    out = pp.preprocess_integration(raw_adata, min_genes=5, min_cells=3, target_sum=1e4,
                                    n_top_genes=50, flavor="seurat")
    assert out.n_vars == 50
    assert out.X.format == "csr" and out.X.dtype == np.float32
    # log1p of counts normalised to 1e4 over each cell's full profile: rows sum to < log1p(1e4)*genes
    assert np.expm1(out.X.toarray()).sum(axis=1).max() <= 1e4 + 1
    assert out.uns["preprocessing"]["fitted_on"] == "all cells"


def test_min_genes_filters_cells(raw_adata):
    out = pp.filter_cells(raw_adata, min_genes=10_000)
    assert out.n_obs == 0


def test_mapping_genes_fitted_on_reference_only(raw_adata):
    a = raw_adata.copy()
    # make G0 extremely variable but only in query cells: it must not drive the HVG choice
    q = (a.obs["tech"] == "inD").to_numpy()
    X = a.X.tolil()
    X[np.flatnonzero(q)[::2], 0] = 500
    X[:, 0] = X[:, 0].multiply(q[:, None])
    a.X = X.tocsr()
    ref, query = pp.preprocess_mapping(a, query_key="tech", query_value="inD", min_genes=1,
                                       min_cells=3, target_sum=1e4, n_top_genes=40, flavor="seurat")
    assert "G0" not in ref.var_names
    assert list(query.var_names) == list(ref.var_names)
    assert set(query.obs["tech"]) == {"inD"} and "inD" not in set(ref.obs["tech"])


def test_mapping_unknown_query_names_allowed_values(raw_adata):
    with pytest.raises(ValueError, match="allowed values"):
        pp.preprocess_mapping(raw_adata, query_key="tech", query_value="nope", min_genes=1,
                              min_cells=3, target_sum=1e4, n_top_genes=None, flavor="seurat")


def test_align_genes_fills_missing_with_zero(raw_adata):
    import pandas as pd

    genes = pd.Index(["G3", "NEW", "G1"])
    out = pp.align_genes(raw_adata, genes)
    assert list(out.var_names) == ["G3", "NEW", "G1"]
    dense = out.X.toarray()
    assert (dense[:, 1] == 0).all()
    np.testing.assert_array_equal(dense[:, 0], raw_adata[:, "G3"].X.toarray().ravel())
