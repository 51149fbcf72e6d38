"""Adapter smoke tests of the Fig 4 mapping peers (Symphony, Seurat v4, scArches) on tiny data, and
the rule that the query never enters reference fitting. Each skips, naming what is missing, where
its tool is not installed."""
import numpy as np
import pandas as pd
import pytest

from concerto_workflow import preprocessing as pp
from concerto_workflow.columns import ROLE, TEST, TRAIN
from concerto_workflow.methods import REGISTRY, RunContext, missing_dependencies


def _skip_unless_installed(method):
    missing = missing_dependencies(method)
    if missing:
        pytest.skip(f"{method} not installed here: {', '.join(missing)}")


@pytest.fixture
def ref_query(raw_adata):
    raw = raw_adata
    test = (raw.obs["tech"] == "inD").to_numpy()
    roles = pd.Series(np.where(test, TEST, TRAIN), index=raw.obs_names)
    a = pp.preprocess_fold([("d", raw, roles)], min_genes=1, min_cells=3, target_sum=1e4, n_top_genes=None,
                           flavor="seurat")
    train = a.obs[ROLE].astype(str).to_numpy() == TRAIN
    ref, query = a[train].copy(), a[~train].copy()
    rng = np.random.default_rng(0)
    # a second modality that follows the cell type: 3 "proteins"
    levels = {t: rng.uniform(1, 40, 3) for t in sorted(set(a.obs["cell_type"].astype(str)))}
    for x in (ref, query):   # ADT-like counts
        x.obsm["protein"] = rng.poisson(np.stack([levels[t] for t in x.obs["cell_type"].astype(str)])).astype(np.float32)
    return ref, query


CTX = RunContext(n_comps=10, seed=0)


def _knn_accuracy(ref_emb, ref, query_emb, query):
    from concerto_workflow.methods.shared import vote

    probs, classes = vote(ref_emb, ref.obs["cell_type"], query_emb, k=5)
    return float((np.asarray(classes)[probs.argmax(1)] == query.obs["cell_type"].astype(str).to_numpy()).mean())


def _check_map(fn, ref, query, **params):
    ref_emb, query_emb = fn(ref, query, CTX, **params)
    assert ref_emb.shape[0] == ref.n_obs and query_emb.shape == (query.n_obs, ref_emb.shape[1])
    assert np.isfinite(ref_emb).all() and np.isfinite(query_emb).all()
    assert _knn_accuracy(ref_emb, ref, query_emb, query) > 0.6
    return ref_emb, query_emb


def test_registry_entries():
    assert set(REGISTRY["seurat_v4"].functions) == {"map", "annotate", "impute"}
    assert set(REGISTRY["symphony"].functions) == {"map"}
    assert set(REGISTRY["scarches"].functions) == {"map", "embed"}
    assert set(REGISTRY["concerto_query_ft"].functions) == {"map"} and REGISTRY["concerto_query_ft"].needs_model


def test_symphony_maps_the_query(ref_query):
    _skip_unless_installed("symphony")
    from concerto_workflow.methods.mapping import symphony_map

    _check_map(symphony_map, *ref_query, max_iter_harmony=3)


def test_symphony_maps_onto_a_one_batch_reference(ref_query):
    """A reference of one batch (e.g. a single 10x run) has no Harmony step: its PCA is the space."""
    _skip_unless_installed("symphony")
    from concerto_workflow.methods.mapping import symphony_map

    ref, query = (x.copy() for x in ref_query)
    for x in (ref, query):
        x.obs["batch"] = "run1"
    ref_emb, query_emb = symphony_map(ref, query, CTX)
    assert ref_emb.shape == (ref.n_obs, query_emb.shape[1]) and np.isfinite(query_emb).all()
    # no batch correction here, so below _check_map's 0.6 (the query technology differs), yet far
    # above the 0.25 of chance over the 4 types
    assert _knn_accuracy(ref_emb, ref, query_emb, query) > 0.4


@pytest.mark.parametrize("method", ["pca", "symphony"])
def test_reference_is_fitted_on_reference_cells_only(ref_query, method):
    """Changing every query value (and the query's size) leaves the reference embedding as it was:
    the query never enters the reference's PCA, scaling or Harmony (Symphony's reference)."""
    _skip_unless_installed(method)
    ref, query = ref_query
    fn = REGISTRY[method].functions["map"]
    params = {"max_iter_harmony": 3} if method == "symphony" else {}
    other = query[: query.n_obs // 2].copy()
    other.X = other.X * 3.0
    e1, q1 = fn(ref, query, CTX, **params)
    e2, q2 = fn(ref, other, CTX, **params)
    np.testing.assert_allclose(e1, e2, rtol=1e-5, atol=1e-6)
    assert q2.shape[0] == other.n_obs and not np.allclose(q1[: other.n_obs], q2)
    if method == "symphony":
        from concerto_workflow.methods.mapping import symphony_reference

        r = symphony_reference(ref, CTX, max_iter_harmony=3)
        assert r.n_obs == ref.n_obs and "harmony" in r.uns


def test_seurat_v4_map_annotate_impute(ref_query):
    _skip_unless_installed("seurat_v4")
    from concerto_workflow.methods.mapping import seurat_v4_annotate, seurat_v4_impute, seurat_v4_map

    ref, query = ref_query
    _check_map(seurat_v4_map, ref, query, n_features=100)
    probs, classes = seurat_v4_annotate(ref, query, CTX, n_features=100)
    assert probs.shape == (query.n_obs, len(classes)) and classes == sorted(set(ref.obs["cell_type"].astype(str)))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    acc = (np.asarray(classes)[probs.argmax(1)] == query.obs["cell_type"].astype(str).to_numpy()).mean()
    assert acc > 0.6
    imp = seurat_v4_impute(ref, query, RunContext(n_comps=10, feature_key="protein"), n_features=100)
    assert imp.shape == (query.n_obs, 3)
    r = [np.corrcoef(imp[:, j], query.obsm["protein"][:, j])[0, 1] for j in range(3)]
    assert min(r) > 0.5


def test_seurat_v4_wnn_annotates_from_a_bimodal_reference(ref_query):
    from concerto_workflow.methods.mapping import seurat_v4_wnn_annotate

    ref, query = ref_query
    with pytest.raises(ValueError, match="needs RNA and protein features side by side"):
        seurat_v4_wnn_annotate(ref, query, CTX)                      # RNA only: refused before R starts
    _skip_unless_installed("seurat_v4_wnn")
    ref, query = (pp.select_features(x, "rna+protein") for x in (ref, query))
    probs, classes = seurat_v4_wnn_annotate(ref, query, CTX, n_features=100)
    assert probs.shape == (query.n_obs, len(classes))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    acc = (np.asarray(classes)[probs.argmax(1)] == query.obs["cell_type"].astype(str).to_numpy()).mean()
    assert acc > 0.6


@pytest.mark.slow
def test_scarches_trvae_surgery_maps_the_query(ref_query):
    _skip_unless_installed("scarches")
    from concerto_workflow.methods.mapping import scarches_map

    _check_map(scarches_map, *ref_query, epochs=40, query_epochs=10)


@pytest.mark.slow
def test_scarches_trvae_integration_embeds_every_cell(ref_query):
    """trVAE as an integration method (Fig 3e/3g): one model on all cells, batch as condition;
    the latent means keep the cell types apart (5-NN accuracy of held-out technology's cells)."""
    _skip_unless_installed("scarches")
    import anndata as ad

    from concerto_workflow.methods.mapping import scarches_embed

    ref, query = ref_query
    cells = ad.concat([ref, query], merge="same")
    # 400 cells give trVAE ~3 steps per epoch: at 30-40 epochs its latent space is still collapsed
    # (5-NN accuracy 0.5-0.6, PCA 0.98); 100 epochs give 0.73
    emb = scarches_embed(cells, CTX, epochs=100, latent_dim=10)
    assert emb.shape == (cells.n_obs, 10) and np.isfinite(emb).all()
    assert _knn_accuracy(emb[:ref.n_obs], ref, emb[ref.n_obs:], query) > 0.6


@pytest.mark.slow
def test_concerto_query_finetuning_maps_without_touching_the_reference_model(ref_query, tmp_path):
    """Mapping mode (b) of Fig 4a: the reference model directory is unchanged (same files, same
    bytes) after the query fine-tuning, the query's labels are never read, and the fine-tuned
    embedding still maps the query by the 5-NN vote."""
    import hashlib
    import anndata as ad

    from concerto_workflow.methods import concerto

    ref, query = ref_query
    model = tmp_path / "model"
    concerto.train(ref, str(model), seed=0, threads=1, epochs=2, batch_size=32)
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model.rglob("*")) if p.is_file()}
    before = digest()
    ctx = RunContext(seed=0, model_dir=str(model))
    ref_emb, query_emb = concerto.map_query_finetuned(ref, query, ctx, finetune_epochs=1)
    assert digest() == before
    assert ref_emb.shape[0] == ref.n_obs and query_emb.shape == (query.n_obs, ref_emb.shape[1])
    assert _knn_accuracy(ref_emb, ref, query_emb, query) > 0.6
    shuffled = query.copy()
    shuffled.obs["cell_type"] = np.random.default_rng(1).permutation(shuffled.obs["cell_type"].to_numpy())
    np.testing.assert_allclose(concerto.map_query_finetuned(ref, shuffled, ctx, finetune_epochs=1)[1],
                               query_emb, atol=1e-5)
    assert not np.allclose(concerto.map_query(ref, query, ctx)[1], query_emb, atol=1e-3)   # it did train


@pytest.mark.slow
def test_concerto_protein_inference_from_bimodal_reference_never_reads_query_protein(ref_query, tmp_path):
    """Concerto's impute: model trained on RNA + protein of the reference; the query's measured
    proteins (here replaced by NaN) cannot change the inferred values."""
    import anndata as ad

    from concerto_workflow.methods import concerto

    ref, query = ref_query
    cells = ad.concat([ref, query], merge="same")
    cells.uns["protein_names"] = ["P0", "P1", "P2"]
    ref.uns["protein_names"] = cells.uns["protein_names"]
    concerto.train(cells, str(tmp_path / "model"), seed=0, threads=1, epochs=2, batch_size=32,
                   second_modality="protein")
    ctx = RunContext(seed=0, feature_key="protein", model_dir=str(tmp_path / "model"))
    imp, (ref_emb, query_emb) = concerto.impute(ref, query, ctx)
    assert imp.shape == (query.n_obs, 3) and np.isfinite(imp).all()
    assert len(ref_emb) == ref.n_obs and len(query_emb) == query.n_obs   # the space, for UMAPs
    blind = query.copy()
    blind.obsm["protein"] = np.full(blind.obsm["protein"].shape, np.nan)
    np.testing.assert_allclose(concerto.impute(ref, blind, ctx)[0], imp, rtol=1e-5)
    r = [np.corrcoef(imp[:, j], query.obsm["protein"][:, j])[0, 1] for j in range(3)]
    assert np.median(r) > 0.3


def test_second_modality_log1p_only_for_counts():
    """ADT counts are log1p-transformed like the RNA; already normalised values are kept, features
    with negative entries (CLR-scaled ADTs, as in the real CBMC file) shifted to a minimum of 0
    (never made NaN, as log1p would)."""
    import anndata as ad

    from concerto_workflow.methods import concerto

    counts = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    counts.obsm["protein"] = np.array([[0, 3], [7, 1]], dtype=np.float32)
    concerto.reference_modalities(counts, "protein")
    np.testing.assert_allclose(counts.obsm["protein"], np.log1p([[0, 3], [7, 1]]), rtol=1e-6)
    clr = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    clr.obsm["protein"] = np.array([[-1.5, 0.2], [2.0, -0.3]], dtype=np.float32)
    concerto.reference_modalities(clr, "protein")
    np.testing.assert_allclose(clr.obsm["protein"], [[0.0, 0.5], [3.5, 0.0]], rtol=1e-6)


def test_held_out_second_modality_gets_the_training_cells_transform():
    """Multimodal annotation (Fig 2e): the test cells' CLR proteins are shifted by the training
    cells' minimum (fitted there only), not by their own; values below it become 0."""
    import anndata as ad

    from concerto_workflow.methods import concerto

    train = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    train.obsm["protein"] = np.array([[-1.5, 0.2], [2.0, -0.3]], dtype=np.float32)
    test = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    test.obsm["protein"] = np.array([[-2.0, 1.0], [0.5, 0.0]], dtype=np.float32)
    fitted: dict = {}
    concerto.reference_modalities(train, "protein", fitted)
    concerto.reference_modalities(test, "protein", fitted)
    np.testing.assert_allclose(fitted["shift"], [1.5, 0.3], rtol=1e-6)
    np.testing.assert_allclose(test.obsm["protein"], [[0.0, 1.3], [2.0, 0.3]], rtol=1e-6)

