"""Bring-your-own data: a local h5ad with its own keys is a dataset like any other, and an
embedding stored in its obsm stands in for a method (``precomputed``)."""
import numpy as np
import pandas as pd
import pytest

from concerto_workflow import datasets, preprocessing as pp
from concerto_workflow.columns import ROLE, TEST, TRAIN
from concerto_workflow.methods import RunContext, capability
from concerto_workflow.methods.runner import compute
from concerto_workflow.workflow_config import ConfigError, extend_config


@pytest.fixture
def own_h5ad(tmp_path, raw_adata):
    """A user's file: other column names, and an embedding of their own (one-hot labels + noise)."""
    a = raw_adata.copy()
    a.obs = a.obs.rename(columns={"cell_type": "my_label", "batch": "my_sample", "tech": "my_tech"})
    codes = a.obs["my_label"].cat.codes.to_numpy()
    emb = np.eye(4)[codes] + np.random.default_rng(0).normal(scale=0.1, size=(a.n_obs, 4))
    a.obsm["X_mine"] = emb
    a.obsm["unused"] = np.zeros((a.n_obs, 2))
    path = tmp_path / "own.h5ad"
    a.write_h5ad(path)
    return path


def _fold(raw):
    roles = pd.Series(np.where(raw.obs["tech"] == "inD", TEST, TRAIN), index=raw.obs_names)
    return pp.preprocess_fold([("own", raw, roles)], min_genes=1, min_cells=3, target_sum=1e4,
                              n_top_genes=None, flavor="seurat")


def test_local_h5ad_with_own_keys_and_precomputed_embedding(own_h5ad):
    raw = datasets.convert_real(str(own_h5ad), batch_col="my_sample", label_col="my_label", tech_col="my_tech",
                                keep_obsm=["X_mine"])
    assert set(raw.obsm) == {"X_mine"}                       # only what was asked for
    cells = _fold(raw)
    assert cells.obsm["X_mine"].shape == (raw.n_obs, 4)      # carried through preprocessing, row-aligned
    np.testing.assert_allclose(cells[raw.obs_names[:5]].obsm["X_mine"], raw[raw.obs_names[:5]].obsm["X_mine"])
    ctx = RunContext(n_comps=4)
    out = compute("precomputed", "embed", cells, ctx, {"obsm_key": "X_mine"})
    np.testing.assert_array_equal(out["emb"], cells.obsm["X_mine"])
    # map -> the shared k-NN vote on the user's embedding: near-perfect labels from one-hot + noise
    assert capability("precomputed", "annotate")[0] == "via_map"
    out = compute("precomputed", "annotate", cells, ctx, {"obsm_key": "X_mine"})
    held = cells.obs[ROLE].astype(str) != TRAIN
    predicted = np.asarray(out["classes"])[out["probs"].argmax(1)]
    assert (predicted == cells.obs.loc[held, "cell_type"].astype(str).to_numpy()).mean() > 0.95


def test_missing_keys_are_named(own_h5ad):
    with pytest.raises(KeyError, match="keep_obsm: 'X_other' not in the obsm"):
        datasets.convert_real(str(own_h5ad), batch_col="my_sample", label_col="my_label", keep_obsm=["X_other"])
    raw = datasets.convert_real(str(own_h5ad), batch_col="my_sample", label_col="my_label", tech_col="my_tech")
    with pytest.raises(KeyError, match=r"obsm\['X_mine'\] is not in the dataset.*keep_obsm"):
        compute("precomputed", "embed", _fold(raw), RunContext(), {"obsm_key": "X_mine"})


def test_extends_replaces_named_entries_whole(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "seed: 0\ndatasets:\n  a: {source: standin, standin: {n_cells: 10}}\n  b: {source: standin}\n"
        "experiments:\n  e: {task: embed, dataset: a}\n")
    derived = {"extends": "base.yaml", "seed": 3, "datasets": {"a": {"source": "local", "local": {"path": "x.h5ad"}}}}
    out = extend_config(derived, repo=str(tmp_path))
    assert out["seed"] == 3 and out["extends"] == ""
    assert out["datasets"]["a"] == {"source": "local", "local": {"path": "x.h5ad"}}   # no stand-in keys left
    assert out["datasets"]["b"] == {"source": "standin"} and out["experiments"]["e"]["dataset"] == "a"
    with pytest.raises(ConfigError, match="extends.*no file 'nope.yaml'"):
        extend_config({"extends": "nope.yaml"}, repo=str(tmp_path))
