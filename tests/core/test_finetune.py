"""Supervised fine-tuning, Concerto-E2E, domain adaptation, NOTA rejection, classifier
save/load and query fine-tuning (concerto_core.finetune)."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from concerto_core import Concerto, ConcertoConfig
from concerto_core import io as model_io
from concerto_core.finetune import (
    HEAD_NAME,
    HEAD_WEIGHTS,
    ConcertoClassifier,
    fine_tune,
    finetune_query,
    rejection_curves,
)

from synthetic_data import simulate_groups

CFG = ConcertoConfig(embedding_dim=32, batch_size=64, epochs=2, seed=3)


def _values(network):
    return {k: v.numpy().copy() for k, v in model_io.model_variables(network).items()}


def _accuracy(pred, adata, key="group"):
    return float(np.mean(pred.labels == adata.obs[key].astype(str).to_numpy()))


@pytest.fixture(scope="module")
def data():
    adata = simulate_groups(n_cells=400, n_genes=120, seed=1)
    return adata


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    model = Concerto(data, batch_key="batch", config=CFG, verbose=False)
    model.train()
    path = tmp_path_factory.mktemp("ref") / "reference"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def classifier(pretrained, data):
    model, _ = pretrained
    return fine_tune(model, data, "group", epochs=4, seed=0)


def test_head_outputs_probabilities(classifier, data):
    pred = classifier.predict(data)
    assert classifier.head.name == HEAD_NAME
    assert pred.probs.shape == (data.n_obs, 5)
    np.testing.assert_allclose(pred.probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pred.conf_score, pred.probs.max(1))
    assert list(pred.categories) == sorted(data.obs["group"].astype(str).unique())


def test_pretrained_and_end_to_end_learn(classifier, data):
    acc = _accuracy(classifier.predict(data), data)
    e2e = ConcertoClassifier.end_to_end(data, "group", batch_key="batch", config=CFG, epochs=4, seed=0)
    acc_e2e = _accuracy(e2e.predict(data), data)
    print(f"fine-tuned accuracy {acc:.3f}, E2E accuracy {acc_e2e:.3f} (chance 0.2)")
    assert acc > 0.6 and acc_e2e > 0.6
    assert e2e.params["kind"] == "end_to_end" and classifier.params["kind"] == "pretrained"


def test_fine_tune_leaves_input_model_alone_and_frozen_teacher_fixed(pretrained, data):
    model, _ = pretrained
    before = _values(model.network)
    clf = fine_tune(model, data, "group", epochs=1, freeze_teacher=True, seed=0)
    for k, v in _values(model.network).items():  # copy_model=True: the pretrained model is untouched
        np.testing.assert_array_equal(v, before[k])
    for k, v in _values(clf.model.network).items():  # frozen: every teacher (and BN) variable unchanged
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    kernel = clf.head.kernel.numpy()
    unfrozen = fine_tune(model, data, "group", epochs=1, freeze_teacher=False, seed=0)
    after = _values(unfrozen.model.network)
    assert not np.allclose(after["teacher_dense/kernel"], before["teacher_dense/kernel"])
    assert not np.allclose(unfrozen.head.kernel.numpy(), kernel)


def test_consistency_loss_reaches_the_gradient(pretrained, data):
    model, _ = pretrained
    source = data[data.obs["batch"] == "batch0"].copy()
    target = data[data.obs["batch"] == "batch1"].copy()
    target.obs["group"] = np.nan  # target labels are never used
    runs = {lam: fine_tune(model, source, "group", target_adata=target, consistency_weight=lam, epochs=1, seed=0)
            for lam in (0.0, 1.0)}
    again = fine_tune(model, source, "group", target_adata=target, consistency_weight=0.0, epochs=1, seed=0)
    np.testing.assert_array_equal(again.head.kernel.numpy(), runs[0.0].head.kernel.numpy())  # deterministic
    assert not np.allclose(runs[0.0].head.kernel.numpy(), runs[1.0].head.kernel.numpy())
    assert runs[1.0].history[0]["consistency_loss"] > 0
    assert runs[1.0].params["domain_adaptation"] and runs[1.0].params["n_target_cells"] == target.n_obs


def test_target_with_new_source_gets_its_own_slot(pretrained, data):
    model, _ = pretrained
    target = data[:100].copy()
    target.obs["batch"] = "lab3"
    clf = fine_tune(model, data, "group", target_adata=target, epochs=1, seed=0)
    assert clf.model.sources == ["batch0", "batch1", "lab3"] and model.sources == ["batch0", "batch1"]
    assert clf.predict(target).probs.shape == (100, 5)


def test_rejection_marks_exactly_low_confidence_cells(classifier, data):
    free = classifier.predict(data)
    t = float(np.median(free.conf_score))
    pred = classifier.predict(data, threshold=t)
    low = free.conf_score < t
    assert low.any() and (~low).any()
    assert (pred.labels[low] == "Unknown").all()
    np.testing.assert_array_equal(pred.labels[~low], free.labels[~low])
    assert (classifier.predict(data, threshold=0.0).labels != "Unknown").all()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            classifier.predict(data, threshold=bad)
    curves = rejection_curves(classifier, data[:50], data[50:100], bins=10)
    assert len(curves) == 10 and {"valid", "unseen", "valid_kept_frac"} <= set(curves.columns)


def test_annotate_writes_anndata_fields(classifier, data, tmp_path):
    out = classifier.annotate(data, threshold=0.5, copy=True)
    assert "predicted_label" not in data.obs
    assert set(out.obs["predicted_label"].cat.categories) <= set(classifier.categories) | {"Unknown"}
    assert out.obsm["concerto_label_probs"].shape == (data.n_obs, 5)
    info = out.uns["concerto"]
    assert info["label_categories"] == classifier.categories and info["threshold"] == 0.5
    assert json.loads(info["classifier_params"])["epochs"] == 4
    out.write_h5ad(tmp_path / "annotated.h5ad")  # everything written is h5ad-serialisable
    assert "conf_score" in ad.read_h5ad(tmp_path / "annotated.h5ad").obs


def test_classifier_save_load_identical(classifier, data, tmp_path):
    path = classifier.save(tmp_path / "clf")
    assert (path / HEAD_WEIGHTS).exists() and not list(path.glob("*.pkl"))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["classifier"]["categories"] == classifier.categories
    loaded = ConcertoClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(data).probs, classifier.predict(data).probs)
    assert Concerto.load(path, verbose=False).n_sources == 2  # also a plain (fine-tuned) Concerto model dir
    with pytest.raises(FileExistsError):
        classifier.save(path)
    with open(path / HEAD_WEIGHTS, "r+b") as fh:  # tampered head weights are refused
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    with pytest.raises(ValueError, match="sha256"):
        ConcertoClassifier.load(path)


def test_plain_model_dir_is_not_a_classifier(pretrained):
    with pytest.raises(ValueError, match="without a classifier"):
        ConcertoClassifier.load(pretrained[1])


def test_finetune_query_keeps_reference_and_writes_new_model(pretrained, data, tmp_path):
    model, ref_dir = pretrained
    before = {p.name: model_io.sha256_file(p) for p in ref_dir.iterdir()}
    query = simulate_groups(n_cells=150, n_genes=120, seed=7)
    query.obs["batch"] = "query_lab"
    out_dir = tmp_path / "query_model"
    tuned = finetune_query(ref_dir, query, out_dir, epochs=1)
    after = {p.name: model_io.sha256_file(p) for p in ref_dir.iterdir()}
    assert before == after
    loaded = Concerto.load(out_dir, verbose=False)
    assert loaded.sources == ["batch0", "batch1", "query_lab"]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["query_finetune"]["added_sources"] == ["query_lab"]
    z = loaded.get_latent_representation(query)
    assert z.shape == (150, 32) and np.isfinite(z).all()
    # reference sources keep their BatchNorm statistics; weights moved
    ref_stats = model.network.teacher_bn.moving_mean.numpy()[:2]
    np.testing.assert_array_equal(loaded.network.teacher_bn.moving_mean.numpy()[:2], ref_stats)
    assert not np.allclose(loaded.network.teacher_dense.kernel.numpy(), model.network.teacher_dense.kernel.numpy())
    assert tuned.epochs_trained == 1
    with pytest.raises(ValueError, match="differ"):
        Concerto.finetune_query(ref_dir, query, ref_dir)  # the classmethod delegates to finetune_query
    with pytest.raises(FileExistsError):
        finetune_query(ref_dir, query, out_dir)


def _mean_cosine_distance(a, b):
    return float(np.mean(1 - np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_finetune_query_default_learning_rate_trains(data, tmp_path):
    """With a reference on the paper's schedule (lr 1e-4 -> lr_end 1e-6) the default rate must
    still move the weights and the query embedding; the reference's lr_end (the old default)
    leaves both where they were."""
    paper = CFG.replace(batch_size=32, epochs=1, lr=1e-4, lr_end=1e-6)
    Concerto(data, batch_key="batch", config=paper, verbose=False).train().save(tmp_path / "ref")
    reference = Concerto.load(tmp_path / "ref", verbose=False)
    query = simulate_groups(n_cells=150, n_genes=120, seed=7)
    query.obs["batch"] = "query_lab"
    z_before = reference.get_latent_representation(query)
    w_before = reference.network.teacher_dense.kernel.numpy()

    def change(model):
        w = model.network.teacher_dense.kernel.numpy()
        return (_mean_cosine_distance(z_before, model.get_latent_representation(query)),
                float(np.linalg.norm(w - w_before) / np.linalg.norm(w_before)))

    tuned = finetune_query(tmp_path / "ref", query, tmp_path / "default")
    assert tuned.history[-1]["lr_end_of_epoch"] == pytest.approx(1e-3)
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())["query_finetune"]
    assert manifest["lr"] == manifest["lr_end"] == 1e-3
    embedding, weights = change(tuned)
    print(f"default lr: mean cosine distance {embedding:.4f}, relative weight change {weights:.2e}")
    assert embedding > 5e-3 and weights > 1e-3  # measured ~0.02 and ~0.016
    frozen = change(finetune_query(tmp_path / "ref", query, tmp_path / "lr_end", lr=reference.config.lr_end))
    print(f"lr = reference lr_end: mean cosine distance {frozen[0]:.2e}, relative weight change {frozen[1]:.2e}")
    assert frozen[0] < 5e-4 and frozen[1] < 1e-4  # explicit lr= is used as given


def test_add_sources_keeps_existing_outputs(pretrained, data):
    from concerto_core.finetune import clone_model

    model, _ = pretrained
    copy = clone_model(model)
    z0 = model.get_latent_representation(data)
    assert copy.add_sources(["batch1", "newlab", "newlab"]) == ["newlab"]
    np.testing.assert_allclose(copy.get_latent_representation(data), z0, atol=1e-6)
    mm = copy.network.teacher_bn.moving_mean.numpy()
    np.testing.assert_array_equal(mm[2], mm[3])  # new slot starts at the fallback statistics


@pytest.mark.parametrize("mutate,error,match", [
    (lambda a: a.obs.drop(columns="group", inplace=True), KeyError, "label_key 'group'"),
    (lambda a: a.obs.__setitem__("group", np.nan), ValueError, "all labels"),
    (lambda a: a.obs.__setitem__("group", "only"), ValueError, "at least 2"),
])
def test_bad_labels(pretrained, data, mutate, error, match):
    bad = data[:60].copy()
    mutate(bad)
    with pytest.raises(error, match=match):
        fine_tune(pretrained[0], bad, "group")


def test_nan_labels_are_excluded_with_warning(pretrained, data):
    part = data[:120].copy()
    labels = part.obs["group"].astype(object).to_numpy()
    labels[:20] = np.nan
    part.obs["group"] = pd.Categorical(labels)
    with pytest.warns(UserWarning, match="20 cells with a NaN label"):
        clf = fine_tune(pretrained[0], part, "group", epochs=1)
    assert clf.params["n_labelled_cells"] == 100
    with pytest.raises(ValueError, match="consistency_weight"):
        fine_tune(pretrained[0], part, "group", target_adata=part, consistency_weight=-1)
