"""MARS adapter (methods/mars.py): without a checkout named by MARS_HOME it is a not_installed
row with the reason; its pieces that need no MARS; a smoke run through the engine's runner when
MARS_HOME points at an importable checkout (skipped with the reason otherwise)."""
import numpy as np
import pandas as pd
import pytest

from concerto_workflow import methods, outputs, preprocessing as pp
from concerto_workflow.columns import CLASSES, NOT_INSTALLED, OK, PREDICTED, PROBABILITIES, ROLE, TEST, TRAIN
from concerto_workflow.methods import RunContext, mars
from concerto_workflow.methods.runner import run_method
from concerto_workflow.scoring import ari_labels


@pytest.fixture
def cells_path(tmp_path, raw_adata):
    """Batch b4 held out as the unannotated experiment, b1-b3 the annotated ones."""
    roles = pd.Series(np.where(raw_adata.obs["batch"] == "b4", TEST, TRAIN), index=raw_adata.obs_names)
    a = pp.preprocess_fold([("d", raw_adata, roles)], min_genes=1, min_cells=3, target_sum=1e4,
                           n_top_genes=None, flavor="seurat")
    path = tmp_path / "cells.h5ad"
    a.write_h5ad(path)
    return str(path)


def _run(tmp_path, cells_path, params=None):
    out = str(tmp_path / "mars.h5ad")
    status = run_method(method="mars", task="annotate", cells_path=cells_path, output=out,
                        provenance=dict(experiment="e", dataset="d", split="s", fold="f", preprocessing="p",
                                        log="the.log"),
                        params=params or {}, ctx=RunContext(n_comps=10))
    return status, outputs.read_output(out, "annotate")


@pytest.fixture
def mars_home(monkeypatch):
    def set_home(value):
        if value is None:
            monkeypatch.delenv(mars.ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(mars.ENV_VAR, str(value))
        methods.missing_dependencies.cache_clear()   # it is cached per process
    yield set_home
    methods.missing_dependencies.cache_clear()


def test_without_mars_home_it_is_not_installed_with_the_reason(tmp_path, cells_path, mars_home):
    mars_home(None)
    status, a = _run(tmp_path, cells_path)
    assert status == NOT_INSTALLED and mars.WHY in a.uns["reason"]
    assert "github.com/snap-stanford/mars" in a.uns["reason"] and PREDICTED not in a.obs


def test_mars_home_without_the_source_names_the_directory(tmp_path, mars_home):
    mars_home(tmp_path)
    assert methods.missing_dependencies("mars")[-1] == f"{mars.ENV_VAR}={tmp_path} has no model/mars.py; {mars.WHY}"


def test_single_type_experiments_are_pooled():
    groups = np.array(["a", "a", "b", "b", "c", "c", "d"])
    labels = np.array(["x", "y", "x", "x", "y", "y", "x"])
    assert list(mars.experiments(groups, labels)) == ["a", "a"] + [mars.POOLED] * 5
    # a pool with one type joins the largest multi-type experiment
    assert list(mars.experiments(np.array(["a", "a", "a", "b"]), np.array(["x", "y", "x", "x"]))) == ["a"] * 4
    with pytest.raises(ValueError, match="2 training cell types"):
        mars.experiments(np.array(["a", "b"]), np.array(["x", "x"]))


def test_cluster_names_become_probabilities_and_unassigned_is_uniform():
    names = {0: [("t2", 0.1), ("t0", 0.3), ("t1", 0.6)], 2: ["unassigned"], 3: [("t0", float("nan"))]}
    p = mars.cluster_probabilities(names, 4, ["t0", "t1", "t2"])
    assert np.allclose(p[0], [0.3, 0.6, 0.1])
    assert np.allclose(p[1:], 1 / 3)          # never named, unassigned, non-finite: uniform


def test_mars_smoke(tmp_path, cells_path, mars_home):
    import os

    mars_home(os.environ.get(mars.ENV_VAR))
    missing = methods.missing_dependencies("mars")
    if missing:
        pytest.skip(f"MARS not available here: {', '.join(missing)}")
    # 10 + 10 full-batch steps (MARS: 30 + 25); naming in the embedding skips the UMAP's compile time
    params = dict(epochs=10, epochs_pretrain=10, n_clusters=4, name_in_umap=False)
    status, a = _run(tmp_path, cells_path, params)
    assert status == OK, a.uns["reason"]
    held = (a.obs[ROLE] == TEST).to_numpy()
    assert set(a.uns[CLASSES]) == {f"type{i}" for i in range(4)}
    assert np.allclose(a.obsm[PROBABILITIES][held].sum(axis=1), 1)
    # 4 types in 4 MARS clusters: the named labels agree with the truth well above chance (ARI 0)
    # (0.56 here; 1 epoch without pretraining gives 0.27)
    assert ari_labels(a, {}) > 0.35
