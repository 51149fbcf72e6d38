"""Annotation competitors (methods/annotation.py): the SciBet re-implementation's algorithm,
SingleR's probabilities, and an adapter smoke test per competitor through the engine's runner
(skipped with the reason where the tool is absent)."""
import numpy as np
import pandas as pd
import pytest

from concerto_workflow import methods, outputs, preprocessing as pp
from concerto_workflow.columns import CLASSES, FAILED, NOT_INSTALLED, OK, PREDICTED, ROLE, TEST, TRAIN
from concerto_workflow.methods import REGISTRY, RunContext, annotation
from concerto_workflow.methods.runner import run_method


# ------------------------------------------------------------------------- SciBet re-implementation
def _planted(n_per_type=60, n_genes=200, n_types=4, seed=0):
    """Linear-scale expression: gene 10*i..10*i+4 is a marker of type i, the rest noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"t{i}" for i in range(n_types)], n_per_type)
    mu = np.full((n_types, n_genes), 5.0)
    markers = {f"t{i}": np.arange(10 * i, 10 * i + 5) for i in range(n_types)}
    for i in range(n_types):
        mu[i, markers[f"t{i}"]] = 60.0
    codes = np.repeat(np.arange(n_types), n_per_type)
    expr = rng.poisson(mu[codes] * rng.lognormal(0, 0.2, (len(codes), 1))).astype(float)
    return expr, labels, markers


def test_etest_ranks_planted_markers_first():
    expr, labels, markers = _planted()
    scores = annotation.etest_scores(expr, labels)
    planted = np.concatenate(list(markers.values()))
    assert set(np.argsort(-scores)[:len(planted)]) == set(planted)
    assert scores.min() >= -1e-12                         # Jensen: log of mean >= mean of logs
    flat = annotation.etest_scores(np.ones((10, 3)), ["a"] * 5 + ["b"] * 5)
    assert np.allclose(flat, 0)                           # same in every type -> no information


def test_scibet_classifies_a_separable_set_and_keeps_the_selected_genes():
    expr, labels, markers = _planted(seed=1)
    genes, log_p, classes = annotation.scibet_fit(expr, labels, n_genes=20)
    assert set(genes) == set(np.concatenate(list(markers.values())))
    assert np.allclose(np.exp(log_p).sum(axis=1), 1)     # multinomial per type
    test, truth, _ = _planted(n_per_type=30, seed=2)
    pred = np.asarray(classes)[annotation.scibet_log_likelihood(test, genes, log_p).argmax(axis=1)]
    assert (pred == truth).mean() > 0.95
    with pytest.raises(ValueError, match="n_genes"):
        annotation.scibet_fit(expr, labels, n_genes=0)


def test_scibet_is_not_better_than_chance_without_signal():
    rng = np.random.default_rng(3)
    expr = rng.poisson(5.0, (200, 50)).astype(float)
    labels = rng.choice(["a", "b"], 200)
    genes, log_p, classes = annotation.scibet_fit(expr[:100], labels[:100], n_genes=10)
    pred = np.asarray(classes)[annotation.scibet_log_likelihood(expr[100:], genes, log_p).argmax(axis=1)]
    assert 0.3 < (pred == labels[100:]).mean() < 0.7


# --------------------------------------------------------------------------------- SingleR probs
def test_singler_probabilities_follow_the_final_label():
    scores = np.array([[0.9, 0.5, 0.4], [0.6, 0.58, 0.1], [0.2, 0.3, 0.8]])
    probs = annotation.singler_probabilities(scores, ["a", "b", "c"], ["a", "b", "c"], temperature=0.05)
    assert np.allclose(probs.sum(axis=1), 1)
    assert list(probs.argmax(axis=1)) == [0, 1, 2]       # row 1: fine-tuning changed a -> b
    assert probs[0].max() > probs[1].max()               # a clear winner is more confident
    with pytest.raises(ValueError, match="temperature"):
        annotation.singler_probabilities(scores, ["a", "b", "c"], ["a", "b", "c"], temperature=0)


# ---------------------------------------------------------------------------------- smoke tests
@pytest.fixture
def cells_path(tmp_path, raw_adata):
    raw = raw_adata
    test = np.zeros(raw.n_obs, bool)
    test[::4] = True
    roles = pd.Series(np.where(test, TEST, TRAIN), index=raw.obs_names)
    a = pp.preprocess_fold([("d", raw, roles)], min_genes=1, min_cells=3, target_sum=1e4, n_top_genes=None,
                           flavor="seurat")
    path = tmp_path / "cells.h5ad"
    a.write_h5ad(path)
    return str(path)


def _run(tmp_path, method, cells_path, params=None):
    out = str(tmp_path / f"{method}.h5ad")
    status = run_method(method=method, task="annotate", cells_path=cells_path, output=out,
                        provenance=dict(experiment="e", dataset="d", split="s", fold="f", preprocessing="p",
                                        log="the.log"),
                        params=params or {}, ctx=RunContext(n_comps=10))
    return status, outputs.read_output(out, "annotate")


def _accuracy(a):
    held = (a.obs[ROLE] == TEST).to_numpy()
    return (a.obs.loc[held, PREDICTED].astype(str) == a.obs.loc[held, "cell_type"].astype(str)).mean()


@pytest.mark.parametrize("method,params", [("logreg_expr", {}), ("scibet_reimpl", {"n_genes": 50}),
                                           ("singler", {}), ("concerto_e2e", {"epochs": 2}),
                                           ("cell_blast", {"n_models": 1, "epochs": 8, "learning_rate": 0.01})])
def test_adapter_smoke(tmp_path, cells_path, method, params):
    missing = methods.missing_dependencies(method)
    if missing:
        pytest.skip(f"{method} not installed here: {', '.join(missing)}")
    status, a = _run(tmp_path, method, cells_path, params)
    assert status == OK, a.uns["reason"]
    # 4 separable types; chance is 0.25. Cell BLAST's 8 epochs on 300 cells (its tutorial: up to
    # 1,000, early-stopped) leave its autoencoder barely trained: better than chance is the check
    assert _accuracy(a) > (0.35 if method == "cell_blast" else 0.6), method
    assert set(a.uns[CLASSES]) == {f"type{i}" for i in range(4)}


def test_cell_blast_hit_fractions_vote_and_reject():
    from concerto_workflow.methods.cell_blast import hit_fractions

    p = hit_fractions([["a", "a", "b"], ["b"], []], ["a", "b", "c"], min_hits=2)
    assert np.allclose(p[0], [2 / 3, 1 / 3, 0])           # majority = Cell BLAST's label
    assert np.allclose(p[1], 1 / 3) and np.allclose(p[2], 1 / 3)  # too few hits: rejected, uniform


# ------------------------------------------------------------------------------------------ Moana
def test_moana_smoke_better_than_chance(tmp_path, cells_path):
    """Moana in its legacy interpreter through the engine's runner: 4 separable types (chance 0.25)."""
    missing = methods.missing_dependencies("moana")
    if missing:
        pytest.skip(f"moana not installed here: {', '.join(missing)}")
    status, a = _run(tmp_path, "moana", cells_path)
    assert status == OK, a.uns["reason"]
    assert _accuracy(a) > 0.6
    assert set(a.uns[CLASSES]) == {f"type{i}" for i in range(4)}


def test_moana_without_its_interpreter_is_not_installed(tmp_path, cells_path, monkeypatch):
    from concerto_workflow.methods import moana

    monkeypatch.setenv(moana.ENV_VAR, str(tmp_path / "no-such-venv" / "bin" / "python"))
    methods.missing_dependencies.cache_clear()
    try:
        status, a = _run(tmp_path, "moana", cells_path)
    finally:
        methods.missing_dependencies.cache_clear()
    assert status == NOT_INSTALLED
    assert "no-such-venv" in a.uns["reason"] and "install_moana.sh" in a.uns["reason"]


def test_moana_legacy_runner_imports_nothing_of_the_project():
    """The runner runs under numpy < 2: stdlib, numpy, pandas and moana only."""
    import ast
    import sys

    from concerto_workflow.methods import moana

    tree = ast.parse(moana.RUNNER.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names - set(sys.stdlib_module_names) <= {"numpy", "pandas", "moana", "pkg_resources"}


def test_moana_votes_become_probabilities_with_its_label_on_top():
    from concerto_workflow.methods.moana import ovo_scores

    # 3 classes, pairs (a,b), (a,c), (b,c); > 0 votes for the first of the pair
    decision = np.array([[2.0, 1.5, 0.3],      # a wins both of its pairs
                         [-0.2, 0.1, -0.1],    # b, a, c: one vote each, b the most confident
                         [-1.0, -1.0, -1.0]])  # b over a, c over a, c over b: c
    scores = ovo_scores(decision, 3)
    assert list(scores.argmax(axis=1)) == [0, 1, 2]
    assert np.allclose(np.floor(scores + 1 / 3), [[2, 1, 0], [1, 1, 1], [0, 1, 2]])  # the votes
    # libsvm breaks the tie of row 1 by class order (a): Moana's label goes on top
    probs = annotation.label_on_top(annotation._softmax(scores), ["a", "b", "c"], ["a", "a", "c"])
    assert np.allclose(probs.sum(axis=1), 1) and list(probs.argmax(axis=1)) == [0, 0, 2]
    with pytest.raises(ValueError, match="one-vs-one"):
        ovo_scores(np.zeros((2, 2)), 3)


def test_descriptions_say_reimplementation():
    assert "re-implementation" in REGISTRY["scibet_reimpl"].description


# ------------------------------------------------------------------- Concerto domain adaptation
def test_domain_adaptation_never_sees_target_labels(raw_adata, monkeypatch):
    """concerto_da hands the held-out cells to fine-tuning (eq 13 target) and prediction without
    their labels or any other obs column but the batch; the labelled cells are the training cells."""
    import concerto_core

    from concerto_workflow.methods import concerto as concerto_method

    seen = {}

    class Prediction:
        def __init__(self, n):
            self.probs, self.categories = np.full((n, 2), 0.5), ["a", "b"]

    class Model:
        def get_latent_representation(self, a):
            seen.setdefault("embedded_obs", []).append(list(a.obs.columns))
            return np.zeros((a.n_obs, 3), np.float32)

    class Classifier:
        model = Model()

        def predict(self, a):
            seen["predict_obs"] = list(a.obs.columns)
            seen["predict_obsm"] = list(a.obsm)
            return Prediction(a.n_obs)

    def fake_fine_tune(model, adata, label_key, target_adata=None, **kw):
        seen.update(train_n=adata.n_obs, label_key=label_key, target_obs=list(target_adata.obs.columns),
                    target_obsm=list(target_adata.obsm), target_n=target_adata.n_obs, lam=kw["consistency_weight"])
        return Classifier()

    monkeypatch.setattr(concerto_core, "fine_tune", fake_fine_tune)
    monkeypatch.setattr(concerto_method, "_load", lambda ctx: object())
    a = raw_adata.copy()
    a.obsm["protein"] = np.ones((a.n_obs, 2), np.float32)
    train, test = a[:30].copy(), a[30:].copy()
    assert "cell_type" in test.obs                       # the engine's held-out cells carry labels ...
    probs, classes, (train_emb, test_emb) = concerto_method.annotate_domain_adapted(
        train, test, RunContext(), consistency_weight=0.5)
    assert seen["target_obs"] == ["batch"] == seen["predict_obs"]   # ... the model never gets them
    assert seen["embedded_obs"][1] == ["batch"]                      # nor when the target is embedded
    assert train_emb.shape == (train.n_obs, 3) and test_emb.shape == (test.n_obs, 3)
    assert seen["target_obsm"] == [] == seen["predict_obsm"]
    assert seen["target_n"] == test.n_obs and seen["train_n"] == train.n_obs and seen["lam"] == 0.5
    assert probs.shape == (test.n_obs, 2) and "cell_type" in test.obs  # the caller's copy is untouched


def test_moana_legacy_environment_drops_library_paths(monkeypatch):
    """Once rpy2 has loaded R in a process it puts the system library directory on
    LD_LIBRARY_PATH; handed on, the legacy interpreter loaded the system's libpython3.11 and
    failed ("undefined symbol: _PyModule_Add"), so Moana looked not installed in CI."""
    from concerto_workflow.methods import moana

    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/lib/R/lib:/usr/lib/x86_64-linux-gnu")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = moana._legacy_env(threads=2)
    assert "LD_LIBRARY_PATH" not in env and "PYTHONPATH" not in env and env["OMP_NUM_THREADS"] == "2"
