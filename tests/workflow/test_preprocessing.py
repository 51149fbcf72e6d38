import numpy as np
import pandas as pd
import pytest

from concerto_workflow import preprocessing as pp
from concerto_workflow.columns import ROLE, TEST, TRAIN


def _fold(a, test_mask):
    roles = pd.Series(np.where(test_mask, TEST, TRAIN), index=a.obs_names)
    return [("d", a, roles)]


def _prep(parts, n_top_genes=None, **kw):
    return pp.preprocess_fold(parts, min_genes=1, min_cells=3, target_sum=1e4, n_top_genes=n_top_genes,
                              flavor="seurat", **kw)


def test_parse_hvg():
    assert pp.parse_hvg("all") is None
    assert pp.parse_hvg("2000") == 2000
    with pytest.raises(ValueError):
        pp.parse_hvg("0")


def test_normalised_csr_with_roles(raw_adata):
    out = _prep(_fold(raw_adata, np.zeros(raw_adata.n_obs, bool)), n_top_genes=50)
    assert out.n_vars == 50 and out.X.format == "csr" and out.X.dtype == np.float32
    # log1p of counts normalised to 1e4 over each cell's full profile
    assert np.expm1(out.X.toarray()).sum(axis=1).max() <= 1e4 + 1
    assert set(out.obs[ROLE]) == {TRAIN}


def test_min_genes_filters_cells(raw_adata):
    assert pp.filter_cells(raw_adata, min_genes=10_000).n_obs == 0


def test_genes_fitted_on_training_cells_only(raw_adata):
    a = raw_adata.copy()
    # G0 extremely variable, but only in test cells: it must not drive the HVG choice
    q = (a.obs["tech"] == "inD").to_numpy()
    X = a.X.tolil()
    X[np.flatnonzero(q)[::2], 0] = 500
    X[:, 0] = X[:, 0].multiply(q[:, None])
    a.X = X.tocsr()
    out = _prep(_fold(a, q), n_top_genes=40)
    assert "G0" not in out.var_names and out.n_vars == 40
    assert set(out.obs.loc[out.obs[ROLE] == TEST, "tech"]) == {"inD"}


def test_hvg_above_gene_count_is_refused(raw_adata):
    with pytest.raises(ValueError, match="n_top_genes=5000"):
        _prep(_fold(raw_adata, np.zeros(raw_adata.n_obs, bool)), n_top_genes=5000)


def test_align_genes_fills_missing_with_zero(raw_adata):
    genes = pd.Index(["G3", "NEW", "G1"])
    out = pp.align_genes(raw_adata, genes)
    assert list(out.var_names) == ["G3", "NEW", "G1"]
    dense = out.X.toarray()
    assert (dense[:, 1] == 0).all()
    np.testing.assert_array_equal(dense[:, 0], raw_adata[:, "G3"].X.toarray().ravel())


def test_cross_dataset_gene_map_one_to_one_and_unmatched_reported(raw_adata):
    ref = raw_adata[raw_adata.obs["tech"] != "inD"].copy()
    query = raw_adata[raw_adata.obs["tech"] == "inD"].copy()
    query.var_names = [g.lower() for g in query.var_names]          # "mouse" symbols
    table = pd.DataFrame({"human": [f"G{i}" for i in range(150)] + ["G1"],
                          "mouse": [f"g{i}" for i in range(150)] + ["g999"]})
    table = table[table["human"] != "G7"]                            # g7: no partner
    pairs = pp.one_to_one(table, "human", "mouse")
    assert "G1" not in set(pairs["reference"])                       # G1 is ambiguous: dropped
    parts = [("human", ref, pd.Series(TRAIN, index=ref.obs_names)),
             ("mouse", query, pd.Series(TEST, index=query.obs_names))]
    out = _prep(parts, gene_maps={"mouse": pairs})
    assert out.uns["gene_map"]["mouse"]["unmatched"] == 2           # g1 (ambiguous) and g7
    te = out[out.obs[ROLE] == TEST]
    assert te.n_obs == query.n_obs and list(te.var_names) == list(out.var_names)
    # a mapped gene carries the query's values under the reference name
    g = "G3"
    np.testing.assert_allclose(np.expm1(te[:, g].X.toarray()).ravel() > 0,
                               query[:, "g3"].X.toarray().ravel() > 0)
    assert (te[:, "G7"].X.toarray() == 0).all() if "G7" in te.var_names else True


def test_features_protein_and_both_put_log1p_adt_counts_in_x(raw_adata):
    a = raw_adata.copy()
    adt = np.random.default_rng(0).poisson(20, size=(a.n_obs, 3)).astype(np.float32)
    a.obsm["protein"], a.uns["protein_names"] = adt, ["CD3", "CD4", "CD8"]
    test = np.arange(a.n_obs) % 5 == 0
    rna = _prep(_fold(a, test), n_top_genes=50)
    prot = _prep(_fold(a, test), n_top_genes=50, features="protein")
    both = _prep(_fold(a, test), n_top_genes=50, features="rna+protein")
    assert list(prot.var_names) == ["ADT_CD3", "ADT_CD4", "ADT_CD8"]
    kept = a.obs_names.get_indexer(prot.obs_names)
    assert np.allclose(prot.X.toarray(), np.log1p(adt[kept]))
    assert list(both.var_names) == list(rna.var_names) + list(prot.var_names)
    assert np.allclose(both.X.toarray(), np.hstack([rna.X.toarray(), prot.X.toarray()]))
    assert (prot.obs["role"] == rna.obs["role"]).all() and "protein" in both.obsm
    with pytest.raises(ValueError, match="needs obsm"):
        _prep(_fold(raw_adata, test), n_top_genes=50, features="protein")


def test_features_protein_keeps_already_normalised_adts_as_they_are(raw_adata):
    """CLR-scaled ADTs (CBMC's file) are not counts: log1p would make NaN of the negative values."""
    a = raw_adata.copy()
    clr = np.random.default_rng(1).normal(0, 1, size=(a.n_obs, 2)).astype(np.float32)
    a.obsm["protein"], a.uns["protein_names"] = clr, ["CD3", "CD19"]
    prot = _prep(_fold(a, np.arange(a.n_obs) % 5 == 0), n_top_genes=50, features="protein")
    kept = a.obs_names.get_indexer(prot.obs_names)
    assert np.allclose(prot.X.toarray(), clr[kept]) and not np.isnan(prot.X.toarray()).any()


def test_cross_dataset_fold_keeps_the_shared_proteins_in_the_reference_order(raw_adata):
    """10x PBMC 5k (29 proteins) -> 10k (14): both keep the proteins they share, in one order, so
    methods infer and the scoring compares the same columns; log1p of the ADT counts on request."""
    ref, query = raw_adata[:60].copy(), raw_adata[60:].copy()
    rng = np.random.default_rng(0)
    ref.obsm["protein"] = rng.poisson(30, size=(ref.n_obs, 4)).astype(np.float32)
    ref.uns["protein_names"] = ["CD3", "CD4", "CD8", "CD19"]
    query.obsm["protein"] = rng.poisson(30, size=(query.n_obs, 3)).astype(np.float32)
    query.uns["protein_names"] = ["CD19", "CD3", "PD-1"]
    parts = [("ref", ref, pd.Series(TRAIN, index=ref.obs_names)), ("query", query, pd.Series(TEST, index=query.obs_names))]
    out = _prep(parts, proteins="log1p")
    assert list(out.uns["protein_names"]) == ["CD3", "CD19"] and out.obsm["protein"].shape == (out.n_obs, 2)
    is_query = (out.obs["source_dataset"] == "query").to_numpy()
    cells = [c.split(":", 1)[1] for c in out.obs_names[is_query]]
    expected = np.log1p(query[cells].obsm["protein"][:, [1, 0]])
    np.testing.assert_allclose(out.obsm["protein"][is_query], expected, rtol=1e-6)
    assert out.uns["preprocessing"]["protein_values"] == "log1p"
    # as_is keeps the counts; panels without a shared protein leave no protein slot
    assert pp.is_counts(_prep(parts).obsm["protein"])
    query.uns["protein_names"] = ["A", "B", "C"]
    assert "protein" not in _prep(parts).obsm


def test_protein_values_log1p_refuses_normalised_adts():
    np.testing.assert_allclose(pp.protein_values([[0, 3]], "log1p"), np.log1p([[0, 3]]), rtol=1e-6)
    with pytest.raises(ValueError, match="use as_is"):
        pp.protein_values([[-1.2, 0.4]], "log1p")
    with pytest.raises(ValueError, match="protein_values must be one of"):
        pp.protein_values([[1, 2]], "clr")
