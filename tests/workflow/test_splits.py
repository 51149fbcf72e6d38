"""Split constructions: each kind keeps training and test cells apart the way it promises."""
import numpy as np
import pandas as pd
import pytest

from concerto_workflow import splits
from concerto_workflow.columns import TEST, TRAIN, VALID


@pytest.fixture
def obs(raw_adata):
    return raw_adata.obs


def _fold(table, fold, role):
    t = table[(table["fold"] == fold) & (table["role"] == role)]
    return set(t["cell"])


def test_kfold_stratified_disjoint_and_covering(obs):
    t = splits.make_split({"kind": "kfold", "k": 4}, obs, "d", seed=0)
    folds = sorted(set(t["fold"]))
    assert folds == splits.fold_names({"kind": "kfold", "k": 4}) == ["f0", "f1", "f2", "f3"]
    tests = [_fold(t, f, TEST) for f in folds]
    assert set().union(*tests) == set(obs.index)                       # every cell tested once ...
    assert sum(len(s) for s in tests) == len(obs)                      # ... and only once
    for f in folds:
        assert not _fold(t, f, TRAIN) & _fold(t, f, TEST)
        assert _fold(t, f, TRAIN) | _fold(t, f, TEST) == set(obs.index)
    overall = obs["cell_type"].value_counts(normalize=True)
    for s in tests:                                                    # stratified by label
        frac = obs.loc[sorted(s), "cell_type"].value_counts(normalize=True).reindex(overall.index)
        assert np.abs(frac - overall).max() < 0.05


def test_kfold_within_group_never_mixes_groups(obs):
    t = splits.make_split({"kind": "kfold", "k": 2, "group": "batch"}, obs, "d", seed=0)
    assert splits.fold_names({"kind": "kfold", "k": 2, "group": "batch"}) is None
    assert len(set(t["fold"])) == 2 * obs["batch"].nunique()
    for fold, rows in t.groupby("fold"):
        assert obs.loc[rows["cell"], "batch"].nunique() == 1, fold


def test_leave_one_out_never_trains_on_the_held_out_group(obs):
    spec = {"kind": "leave_one_out", "key": "tech", "bootstraps": 3}
    t = splits.make_split(spec, obs, "d", seed=0)
    assert len(set(t["fold"])) == obs["tech"].nunique() * 3
    for fold, rows in t.groupby("fold"):
        train = rows.loc[rows["role"] == TRAIN, "cell"]
        test = rows.loc[rows["role"] == TEST, "cell"]
        held = set(obs.loc[test, "tech"].astype(str))
        assert len(held) == 1 and not held & set(obs.loc[train, "tech"].astype(str))
        assert train.is_unique
        others = (obs["tech"].astype(str) != held.pop()).sum()
        assert 0.5 * others < len(train) < 0.75 * others               # a bootstrap's distinct cells
    b0, b1 = (set(t.loc[(t["fold"] == f) & (t["role"] == TRAIN), "cell"]) for f in ("tA_b0", "tA_b1"))
    assert b0 != b1


def test_label_mask_keeps_masked_labels_out_of_training(obs):
    spec = {"kind": "label_mask", "remove": ["type1"], "valid_fraction": 0.2}
    t = splits.make_split(spec, obs, "d", seed=0)
    labels = obs["cell_type"].astype(str)
    train, valid, test = (_fold(t, "mask", r) for r in (TRAIN, VALID, TEST))
    assert set(labels[sorted(test)]) == {"type1"}
    assert "type1" not in set(labels[sorted(train | valid)])
    known = (labels != "type1").sum()
    assert abs(len(valid) - 0.2 * known) <= 1
    assert set(labels[sorted(valid)]) == set(labels[sorted(train)])    # stratified validation


def test_holdout_and_errors_name_the_values(obs):
    t = splits.make_split({"kind": "holdout", "key": "tech", "values": ["inD"]}, obs, "d", seed=0)
    assert set(obs.loc[sorted(_fold(t, "holdout", TEST)), "tech"]) == {"inD"}
    with pytest.raises(splits.SplitError, match="nope"):
        splits.make_split({"kind": "holdout", "key": "tech", "values": ["nope"]}, obs, "d", seed=0)
    with pytest.raises(splits.SplitError, match="'donor' not in the data"):
        splits.make_split({"kind": "leave_one_out", "key": "donor"}, obs, "d", seed=0)


def test_cross_dataset_marks_the_query_dataset_as_test(obs):
    q = pd.DataFrame(index=["m1", "m2"])
    t = splits.make_split({"kind": "cross_dataset", "query_dataset": "mouse"}, obs, "human", seed=0,
                          query_obs=q)
    assert set(t.loc[t["dataset"] == "mouse", "role"]) == {TEST}
    assert set(t.loc[t["dataset"] == "human", "role"]) == {TRAIN}


def test_safe_fold_names():
    assert splits.safe_name("10x Chromium (v2) A") == "10x_Chromium_v2_A"


def test_kfold_within_listed_groups_only(obs):
    spec = {"kind": "kfold", "k": 2, "group": "batch", "values": ["b2", "b4"]}
    t = splits.make_split(spec, obs, "d", seed=0)
    assert sorted(set(t["fold"])) == ["b2_f0", "b2_f1", "b4_f0", "b4_f1"]
    assert set(obs.loc[t["cell"], "batch"].astype(str)) == {"b2", "b4"}
    with pytest.raises(splits.SplitError, match="nope"):
        splits.make_split({**spec, "values": ["nope"]}, obs, "d", seed=0)
    with pytest.raises(splits.SplitError, match="group"):
        splits.split_kfold(obs, "d", k=2, seed=0, values=["b2"])


def test_splits_are_reproducible_so_every_method_sees_the_same_folds(obs):
    spec = {"kind": "kfold", "k": 3, "group": "batch"}
    a, b = (splits.make_split(spec, obs, "d", seed=0) for _ in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert not splits.make_split(spec, obs, "d", seed=1).equals(a)


def test_fold_group_strips_the_repeat():
    assert splits.fold_group("Drop-seq_b2") == "Drop-seq"
    assert splits.fold_group("10x_Chromium_v2_A_f4") == "10x_Chromium_v2_A"
    assert splits.fold_group("f0") == "f0" and splits.fold_group("mask") == "mask"


@pytest.fixture(scope="module")
def pancreas_obs():
    from concerto_workflow.simulate.standins import make_pancreas

    return make_pancreas(n_cells=400, n_genes=200, seed=0).obs


def test_cells_filter_keeps_beta_in_exactly_one_technology(pancreas_obs):
    """Paper Fig 3f: beta cells removed from every technology but CEL-seq2."""
    obs = pancreas_obs
    split = {"kind": "all", "cells": {"drop": {"values": ["beta"], "except_key": "tech",
                                               "except_values": ["CEL-seq2"]}}}
    table = splits.make_split(split, obs, "pancreas", seed=0)
    kept = obs.loc[table["cell"]]
    assert set(kept.loc[kept["cell_type"] == "beta", "tech"].astype(str)) == {"CEL-seq2"}
    assert (kept["cell_type"] == "beta").sum() == ((obs["cell_type"] == "beta") & (obs["tech"] == "CEL-seq2")).sum()
    others = obs[obs["cell_type"] != "beta"]
    assert set(others.index) <= set(table["cell"])          # nothing else is dropped


def test_cells_filter_keep_subset_and_errors(pancreas_obs):
    obs = pancreas_obs
    split = {"kind": "holdout", "key": "tech", "values": ["inDrop"],
             "cells": {"keep": {"key": "tech", "values": ["inDrop", "CEL-seq2"]}}}
    table = splits.make_split(split, obs, "pancreas", seed=0)
    assert set(obs.loc[table["cell"], "tech"].astype(str)) == {"inDrop", "CEL-seq2"}
    with pytest.raises(splits.SplitError, match="10x"):
        splits.make_split({"kind": "all", "cells": {"keep": {"key": "tech", "values": ["10x"]}}}, obs, "p", seed=0)
    with pytest.raises(splits.SplitError, match="no cells"):
        splits.make_split({"kind": "all", "cells": {"drop": {"values": sorted(set(obs["cell_type"].astype(str)))}}},
                          obs, "p", seed=0)


def test_kfold_max_folds_runs_the_first_folds_of_k(obs):
    """k 5 with max_folds 1: one split whose test set is 1/5 of the cells (an 80/20 split)."""
    split = {"kind": "kfold", "k": 5, "max_folds": 2}
    t = splits.make_split(split, obs, "d", seed=0)
    assert sorted(set(t["fold"])) == splits.fold_names(split) == ["f0", "f1"]
    full = splits.make_split({"kind": "kfold", "k": 5}, obs, "d", seed=0)
    for f in ("f0", "f1"):                                 # the same folds as the full 5-fold split
        assert _fold(t, f, TEST) == _fold(full, f, TEST)
        assert abs(len(_fold(t, f, TEST)) - len(obs) / 5) <= 5
    with pytest.raises(splits.SplitError, match="max_folds"):
        splits.fold_names({"kind": "kfold", "k": 2, "max_folds": 3})
