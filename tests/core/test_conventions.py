"""scverse conventions of the model API (issue 11 item 2): batch_key semantics, return values,
provenance, no AnnData copies, train() arguments, logging/verbosity, no tf.function retracing."""

import logging
import warnings

import anndata as ad
import numpy as np
import pytest

import concerto_core as cc
from concerto_core import MODEL_BATCH_KEY, Concerto, ConcertoConfig, fine_tune, transfer_labels

from synthetic_data import simulate_groups

CFG = ConcertoConfig(embedding_dim=16, batch_size=64, epochs=1, seed=3)


@pytest.fixture(scope="module")
def trained():
    adata = simulate_groups(n_cells=300, n_genes=80, seed=1)
    return adata, Concerto(adata, batch_key="batch", config=CFG, verbose=False).train()


def test_batch_key_default_none_and_legacy_sentinel(trained):
    adata, model = trained
    default = model.get_latent_representation(adata)
    np.testing.assert_array_equal(model.get_latent_representation(adata, batch_key=MODEL_BATCH_KEY), default)
    np.testing.assert_array_equal(model.get_latent_representation(adata, batch_key="batch"), default)
    with pytest.warns(DeprecationWarning, match="__model__"):
        np.testing.assert_array_equal(model.get_latent_representation(adata, batch_key="__model__"), default)
    # None = no batch column (scanpy/scvi meaning): every cell one (new) source.
    with pytest.warns(UserWarning, match="not seen in training"):
        one = model.get_latent_representation(adata, batch_key=None)
    assert not np.allclose(one, default)
    # The default on a query without the model's column: one source, said so.
    no_column = adata.copy()
    del no_column.obs["batch"]
    with pytest.warns(UserWarning, match="has no obs\\['batch'\\]"):
        np.testing.assert_allclose(model.get_latent_representation(no_column), one, atol=1e-6)
    with pytest.raises(KeyError, match="batch_key 'batch'"):
        model.embed(no_column, batch_key="batch")


def test_latent_representation_does_not_copy_or_touch_adata(trained, monkeypatch):
    adata, model = trained
    monkeypatch.setattr(ad.AnnData, "copy", lambda self, *a, **k: pytest.fail("AnnData.copy called"))
    keys = (set(adata.obsm), set(adata.uns))
    z = model.get_latent_representation(adata)
    assert z.shape == (adata.n_obs, 16) and (set(adata.obsm), set(adata.uns)) == keys


def test_one_return_convention_and_provenance_under_key_added(trained):
    adata, model = trained
    query = adata.copy()
    z = model.embed(query, key_added="X_c")
    assert z is query.obsm["X_c"]
    info = query.uns["X_c"]
    assert info["key_added"] == "X_c" and info["seed"] == 3 and info["gene_overlap"]["rna"]["overlap"] == 1.0
    copied = model.embed(adata, key_added="X_c", copy=True)
    assert isinstance(copied, ad.AnnData) and "X_c" not in adata.obsm
    ref = model.embed(adata, key_added="X_c", copy=True)
    res = transfer_labels(ref, query, "group", use_rep="X_c", k=3)
    assert "group" in res and query.uns["predicted_label"]["k"] == 3
    out = transfer_labels(ref, query, "group", use_rep="X_c", k=3, key_added="label2", copy=True)
    assert isinstance(out, ad.AnnData) and "label2" in out.obs and "label2" not in query.obs
    clf = fine_tune(model, adata, "group", epochs=1, seed=0)
    pred = clf.annotate(query, key_added="clf_label")
    assert pred.labels.shape == (query.n_obs,) and query.uns["clf_label"]["label_key"] == "group"
    assert isinstance(clf.annotate(query, copy=True), ad.AnnData)


def test_train_arguments_do_not_rewrite_the_config(tmp_path):
    adata = simulate_groups(n_cells=120, n_genes=40, seed=2)
    model = Concerto(adata, config=CFG, verbose=False)
    model.train(epochs=2, batch_size=40, lr=5e-3, seed=9)
    assert model.config == CFG
    assert [h["batch_size"] for h in model.history] == [40, 40] and model.epochs_trained == 2
    model.save(tmp_path / "m")
    assert Concerto.load(tmp_path / "m", verbose=False).config == CFG


def test_messages_go_through_one_logger_once(capfd, caplog):
    adata = simulate_groups(n_cells=100, n_genes=30, seed=2)
    model = Concerto(adata, config=CFG.replace(precise_bn=False), verbose=True)
    model.train()
    err = capfd.readouterr().err
    assert err.count("epoch 1/1: loss") == 1  # not printed and logged twice
    assert "epoch 1/1: loss" in caplog.text or logging.getLogger("concerto_core").propagate is False
    try:
        cc.set_verbosity("warning")
        model.train()
        assert "loss" not in capfd.readouterr().err
    finally:
        cc.set_verbosity("info")
    with pytest.raises(ValueError, match="verbosity"):
        cc.set_verbosity("loud")


def test_data_warnings_are_warned_once_not_also_logged(trained, caplog, capfd):
    """warn_once emits one Python warning per call and no log line (it used to do both)."""
    adata, model = trained
    query = adata.copy()
    query.obs["batch"] = "new_lab"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.get_latent_representation(query)
    assert sum("not seen in training" in str(w.message) for w in caught) == 1
    assert "not seen in training" not in caplog.text and "not seen in training" not in capfd.readouterr().err


def _tracing_counts(model):
    """{function key: times traced} over every tf.function the model's network has made."""
    from concerto_core import engine
    counts = {}
    for key, made in engine.compiled(model.network)._cache.items():
        fn = made[0] if isinstance(made, tuple) else made
        counts[key] = fn.experimental_get_tracing_count()
    return counts


def test_no_tf_function_retracing_on_repeated_calls(trained):
    """Repeated inference, adaptation to unseen sources and attention trace each function once.

    Counted per function object: TensorFlow's own "retracing" warning pools every model's
    functions of one code object, so it depends on what ran earlier in the process.
    """
    adata, model = trained
    query = adata[:90].copy()
    query.obs["batch"] = np.repeat(["lab_a", "lab_b", "lab_c"], 30)

    def calls():
        model.attention(adata[:50].copy())  # one batch per call: a new trace each time would show
        model.get_latent_representation(query)
        model.get_latent_representation(adata)
        model.attention(query, top_k=3)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calls()
        after_first = _tracing_counts(model)
        for _ in range(5):
            calls()
    assert any(key[0] == "attention" for key in after_first) and any(key[0] == "embed" for key in after_first)
    assert _tracing_counts(model) == after_first
    assert set(after_first.values()) == {1}, after_first
