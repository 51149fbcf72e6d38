"""The real-reference ablation study (concerto_workflow.ablation): settings are chosen on reference
cells only, the reference's validation part never trains genes or baselines, the figure is drawn
from the score table. Tiny in-memory data; no Concerto training here (the study script does that)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_workflow import ablation as A
from concerto_workflow.columns import CELL_TYPE, ROLE, TEST, TRAIN, VALID


def _scores(query_values):
    rows = []
    for seed in (0, 1):
        for setting, valid, query in (("paper", 0.90, query_values[0]), ("k=15", 0.95, query_values[1]),
                                      ("dropout=0.4", 0.80, query_values[2])):
            factor, _, level = setting.partition("=")
            for split, value in (("valid", valid), ("query", query)):
                rows.append({"task": "t", "seed": seed, "method": "concerto", "factor": factor, "level": level,
                             "setting": setting, "split": split, "metric": "accuracy", "value": value, "status": "ok"})
        rows.append({"task": "t", "seed": seed, "method": "knn_pca", "factor": "baseline", "level": "k=5",
                     "setting": "knn_pca", "split": "valid", "metric": "accuracy", "value": 0.99, "status": "ok"})
    return pd.DataFrame(rows)


def test_selection_reads_only_validation_rows():
    chosen = A.select_settings(_scores([0.5, 0.4, 0.99]))
    assert chosen["setting"].tolist() == ["k=15"]            # best on validation, not on the query
    again = A.select_settings(_scores([0.1, 0.0, 0.2]))     # other query scores: same choice
    pd.testing.assert_frame_equal(chosen, again)
    no_query = _scores([0.5, 0.4, 0.99])
    pd.testing.assert_frame_equal(chosen, A.select_settings(no_query[no_query["split"] == "valid"]))


def test_selection_prefers_the_paper_setting_on_ties():
    s = _scores([0.5, 0.5, 0.5])
    s.loc[s["setting"] == "k=15", "value"] = 0.90
    assert A.select_settings(s)["setting"].tolist() == ["paper"]


def _cells(seed=0):
    rng = np.random.default_rng(seed)
    roles = np.array([TRAIN] * 40 + [VALID] * 10 + [TEST] * 30)
    labels = np.array(["a", "b"] * 40)
    emb = rng.normal(size=(80, 4)).astype(np.float32) + (labels == "a")[:, None] * 3
    obs = pd.DataFrame({CELL_TYPE: labels, ROLE: roles}, index=[f"c{i}" for i in range(80)])
    return ad.AnnData(np.zeros((80, 1), np.float32), obs=obs), emb


def test_validation_scores_do_not_depend_on_query_labels():
    cells, emb = _cells()
    before = pd.DataFrame(A.vote_rows(cells, emb, 5, {"method": "x"}))
    scrambled = cells.copy()
    query = scrambled.obs[ROLE] == TEST
    scrambled.obs.loc[query, CELL_TYPE] = "a"                 # every query label changed to one class
    after = pd.DataFrame(A.vote_rows(scrambled, emb, 5, {"method": "x"}))
    pd.testing.assert_frame_equal(before[before["split"] == "valid"], after[after["split"] == "valid"])
    assert not before[before["split"] == "query"]["value"].equals(after[after["split"] == "query"]["value"])
    assert set(before["n_reference"]) == {40}                 # only the training part votes


def test_reference_roles_split_only_reference_cells_stratified():
    obs = pd.DataFrame({CELL_TYPE: ["a"] * 50 + ["b"] * 30 + ["c"] * 2}, index=[f"r{i}" for i in range(82)])
    roles = A.reference_roles(obs, seed=0)
    assert set(roles.index) == set(obs.index) and set(roles) == {TRAIN, VALID}
    valid = obs.loc[roles[roles == VALID].index, CELL_TYPE].value_counts()
    assert valid["a"] == 10 and valid["b"] == 6


def test_genes_are_fitted_on_the_training_part_only():
    rng = np.random.default_rng(0)
    n_ref, n_query, genes = 60, 20, 30
    X = rng.poisson(2.0, size=(n_ref + n_query, genes)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": ["a", "b"] * 40, "batch": "b1", "tech": "t",
                        "is_query": [False] * n_ref + [True] * n_query}, index=[f"c{i}" for i in range(80)])
    roles = A.reference_roles(obs[~obs["is_query"]], seed=0)
    X[:, 0] = 0
    X[np.flatnonzero(obs["is_query"]), 0] = 50                # expressed in the query only
    X[:, 1] = 0
    X[[obs.index.get_loc(c) for c in roles[roles == VALID].index], 1] = 50   # in validation cells only
    a = ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(genes)]))
    cells = A.prepare_cells([("d", a, None)], {}, A.Task("t", "", min_genes=1), seed=0, genes="hvg10")
    assert "g0" not in cells.var_names and "g1" not in cells.var_names
    assert cells.n_vars <= 12 and cells.uns["preprocessing"]["fitted_on"] == f"{(roles == TRAIN).sum()} training cells"
    assert (cells.obs[ROLE] == TEST).sum() == n_query


def test_concerto_config_changes_one_factor():
    pytest.importorskip("tensorflow")
    cfg, train = A.concerto_config("paper", "", seed=2)
    assert (cfg.temperature, cfg.dropout, cfg.lr, cfg.lr_end, cfg.seed) == (0.1, 0.2, 1e-4, 1e-6, 2)
    assert train == {"epochs": 3, "batch_size": 32}
    cfg, train = A.concerto_config("temperature", 0.5, seed=0)
    assert cfg.temperature == 0.5 and train == {"epochs": 3, "batch_size": 32}
    cfg, train = A.concerto_config("schedule_rule", "package default", seed=0)
    assert train == {} and cfg.epochs is None and cfg.batch_size is None     # chosen from the cells
    cfg, train = A.concerto_config("schedule_rule", "rule + paper lr", seed=0)
    assert train == {} and (cfg.lr, cfg.lr_end) == (1e-4, 1e-6)
    assert A.concerto_config("batches", "source-pure", seed=0)[0].source_batches


def test_ablation_figure_from_the_score_table(tmp_path):
    from concerto_workflow.ablation_figures import plot_ablation

    s = _scores([0.5, 0.4, 0.99])
    s = pd.concat([s, s.assign(split="query", method="knn_pca", setting="knn_pca", value=0.9),
                   pd.DataFrame([{"task": "t", "seed": 0, "method": "concerto", "factor": "genes", "level": "all",
                                  "setting": "genes=all", "split": "query", "metric": "accuracy", "value": np.nan,
                                  "status": "not_run", "reason": "no HVG selection"}])], ignore_index=True)
    out = tmp_path / "suppA1.png"
    plot_ablation(s, str(out), caption="test caption")
    assert out.stat().st_size > 10_000


def test_cv_query_masks_partition_the_cells_stratified():
    obs = pd.DataFrame({CELL_TYPE: ["a"] * 50 + ["b"] * 25 + ["c"] * 3}, index=[f"c{i}" for i in range(78)])
    masks = A.cv_query_masks(obs, k=5, seed=0)
    assert list(masks) == [f"f{i}" for i in range(5)]
    assert (np.sum(list(masks.values()), axis=0) == 1).all()          # every cell is the query once
    for m in masks.values():
        counts = obs[m][CELL_TYPE].value_counts()
        assert counts["a"] == 10 and counts["b"] == 5
    assert list(A.cv_query_masks(obs, k=5, seed=0, max_folds=2)) == ["f0", "f1"]
    again = A.cv_query_masks(obs, k=5, seed=0)
    assert all((again[f] == masks[f]).all() for f in masks)            # seeded


def test_cv_fold_is_the_query_and_validation_comes_from_the_other_folds():
    rng = np.random.default_rng(1)
    obs = pd.DataFrame({"cell_type": ["a", "b"] * 50, "batch": "batch1", "tech": "t"},
                       index=[f"c{i}" for i in range(100)])
    a = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, size=(100, 20)).astype(np.float32)), obs=obs,
                   var=pd.DataFrame(index=[f"g{j}" for j in range(20)]))
    fold = A.cv_query_masks(a.obs, k=5, seed=0, max_folds=1)["f0"]
    a.obs["is_query"] = fold
    cells = A.prepare_cells([("d", a, None)], {}, A.Task("t", "", min_genes=1, cv_folds=5), seed=0)
    roles = cells.obs[ROLE].reindex(a.obs_names).to_numpy()
    assert (roles[fold] == TEST).all() and (roles[~fold] != TEST).all()
    assert (roles == VALID).sum() == 16                                 # 20 % of the 80 reference cells


def test_cv_tasks_skip_factors_as_not_run_rows():
    factors, skipped = A.task_factors(A.TASKS["cbmc_cv"])
    assert factors == ["lr_schedule", "query", "k"]
    assert ("temperature", 0.05) in skipped and not any(f in factors for f, _ in skipped)
    assert len(skipped) + 1 + 4 == len(A.settings_to_run())                # paper + lr + query + 2 k
    assert A.task_factors(A.TASKS["hp_to_mp"]) == (None, [])
    assert A.task_factors(A.TASKS["cbmc_cv"], ["k", "dropout"]) == (["k"], [("dropout", 0.1), ("dropout", 0.4)])


def test_join_kept_replaces_the_rerun_tasks_rows():
    new = pd.DataFrame({"task": ["cbmc_cv"], "seed": [0], "fold": ["f0"], "value": [0.9]})
    old = pd.DataFrame({"task": ["hp_to_mp", "cbmc_cv"], "seed": [0, 0], "value": [0.6, 0.1]})
    joined = A.join_kept(new, old)
    assert sorted(zip(joined["task"], joined["value"])) == [("cbmc_cv", 0.9), ("hp_to_mp", 0.6)]
    assert list(joined.columns) == list(new.columns)
