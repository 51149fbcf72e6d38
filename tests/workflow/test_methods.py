"""The method registry and the isolated runner: every outcome leaves a contract-conforming file."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from concerto_workflow import methods, outputs, preprocessing as pp
from concerto_workflow.columns import FAILED, NOT_INSTALLED, OK, OVER_BUDGET, PREDICTED, ROLE, TEST, TRAIN
from concerto_workflow.methods import REGISTRY, RunContext, capability
from concerto_workflow.methods.api import Method
from concerto_workflow.methods.runner import MethodFailed, run_method


def _cells(raw, path, test_tech=None):
    test = (raw.obs["tech"] == test_tech).to_numpy() if test_tech else np.zeros(raw.n_obs, bool)
    roles = pd.Series(np.where(test, TEST, TRAIN), index=raw.obs_names)
    a = pp.preprocess_fold([("d", raw, roles)], min_genes=1, min_cells=3, target_sum=1e4, n_top_genes=None,
                           flavor="seurat")
    a.write_h5ad(path)
    return a


def _run(tmp_path, method, task, cells, **kw):
    out = str(tmp_path / f"{method}_{task}.h5ad")
    status = run_method(method=method, task=task, cells_path=str(cells), output=out,
                        provenance=dict(experiment="e", dataset="d", split="s", fold="f", preprocessing="p",
                                        log="the.log"),
                        params=kw.pop("params", {}), ctx=RunContext(n_comps=10, **kw))
    return status, outputs.read_output(out, task)


def test_capabilities_by_task():
    assert capability("harmony", "embed")[0] == "own" and capability("harmony", "map") is None
    assert capability("pca", "annotate")[0] == "via_map"            # PCA + the shared k-NN vote
    assert capability("pca", "cluster")[0] == "via_embed"           # PCA + Leiden
    assert capability("logreg", "map") is None
    assert "majority" in methods.methods_for("annotate") and "majority" not in methods.methods_for("embed")


def test_embed_map_annotate_outputs_meet_contracts(tmp_path, raw_adata):
    a = _cells(raw_adata, tmp_path / "cells.h5ad", test_tech="inD")
    status, e = _run(tmp_path, "pca", "embed", tmp_path / "cells.h5ad")
    assert status == OK and e.obsm["X_emb"].shape == (a.n_obs, 10)
    assert e.uns["seconds"] > 0 and e.uns["peak_memory_mb"] > 0 and e.uns["fold"] == "f"
    status, m = _run(tmp_path, "pca", "map", tmp_path / "cells.h5ad")
    held = m.obs[ROLE] == TEST
    assert status == OK and m.obs.loc[held, PREDICTED].notna().all() and m.obs.loc[~held, PREDICTED].isna().all()
    status, an = _run(tmp_path, "logreg", "annotate", tmp_path / "cells.h5ad")
    acc = (an.obs.loc[held, PREDICTED].astype(str) == an.obs.loc[held, "cell_type"].astype(str)).mean()
    assert status == OK and acc > 0.5
    status, h = _run(tmp_path, "harmony", "embed", tmp_path / "cells.h5ad", params={"max_iter_harmony": 2})
    assert status == OK and h.obsm["X_emb"].shape == (a.n_obs, 10)
    status, cl = _run(tmp_path, "pca", "cluster", tmp_path / "cells.h5ad", settings=(0.2, 1.0))
    assert status == OK and cl.obsm["clusters"].shape == (a.n_obs, 2)
    assert len(np.unique(cl.obsm["clusters"][:, 1])) > len(np.unique(cl.obsm["clusters"][:, 0]))


def test_crash_becomes_failed_row(tmp_path, raw_adata):
    a = _cells(raw_adata, tmp_path / "cells.h5ad")
    a.X = a.X.toarray()
    a.X[0, 0] = np.nan  # PCA refuses NaN -> the child exits non-zero
    a.write_h5ad(tmp_path / "nan.h5ad")
    status, e = _run(tmp_path, "pca", "embed", tmp_path / "nan.h5ad")
    assert status == FAILED and "exit code" in e.uns["reason"] and e.uns["log"] == "the.log"
    assert "X_emb" not in e.obsm


def _fake(monkeypatch, **kw):
    spec = Method("fake", "test method", {"embed": REGISTRY["pca"].functions["embed"]}, **kw)
    monkeypatch.setitem(REGISTRY, "fake", spec)
    methods.missing_dependencies.cache_clear()


def test_signal_kill_becomes_failed_row_naming_the_signal(tmp_path, raw_adata, monkeypatch):
    _cells(raw_adata, tmp_path / "cells.h5ad")
    killer = tmp_path / "killed_child"
    killer.write_text("#!/bin/sh\nkill -9 $$\n")                 # a child the kernel kills (as the OOM killer)
    killer.chmod(0o755)
    monkeypatch.setattr("concerto_workflow.methods.runner.sys.executable", str(killer))
    status, e = _run(tmp_path, "pca", "embed", tmp_path / "cells.h5ad")
    assert status == FAILED and "SIGKILL" in e.uns["reason"] and "out of memory" in e.uns["reason"]
    # what the run_method rule's params read: a new failure makes the next run retry the job
    failure = outputs.recorded_failure(str(tmp_path / "pca_embed.h5ad"))
    assert failure.startswith("failed: killed by SIGKILL")
    # the retry succeeds: its output remembers the failure it retried, so the param (and with it
    # Snakemake's params trigger) keeps the value the retry ran with -- no third run
    monkeypatch.undo()
    out = str(tmp_path / "retry.h5ad")
    run_method(method="pca", task="embed", cells_path=str(tmp_path / "cells.h5ad"), output=out,
               provenance=dict(experiment="e", dataset="d", split="s", fold="f", preprocessing="p", log="l",
                               retry_of=failure), params={}, ctx=RunContext(n_comps=10))
    assert outputs.read_output(out, "embed").uns["status"] == OK and outputs.recorded_failure(out) == failure


def test_method_over_its_time_budget_is_stopped_and_recorded(tmp_path, raw_adata, monkeypatch):
    _cells(raw_adata, tmp_path / "cells.h5ad")
    slow = tmp_path / "slow_child"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setattr("concerto_workflow.methods.runner.sys.executable", str(slow))
    out = str(tmp_path / "slow.h5ad")
    status = run_method(method="pca", task="embed", cells_path=str(tmp_path / "cells.h5ad"), output=out,
                        provenance=dict(experiment="e", dataset="d", split="s", fold="f", preprocessing="p", log="l"),
                        params={}, ctx=RunContext(n_comps=10), time_budget_s=0.5)
    e = outputs.read_output(out, "embed")
    assert status == OVER_BUDGET and "time budget" in e.uns["reason"] and "X_emb" not in e.obsm


def test_missing_dependency_becomes_not_installed(tmp_path, raw_adata, monkeypatch):
    _cells(raw_adata, tmp_path / "cells.h5ad")
    _fake(monkeypatch, python_modules=("no_such_module_xyz",))
    status, e = _run(tmp_path, "fake", "embed", tmp_path / "cells.h5ad")
    assert status == NOT_INSTALLED and "no_such_module_xyz" in e.uns["reason"]


def test_r_packages_are_looked_up_without_loading_them():
    """One R start answers for a present and an absent package (no library() load)."""
    import shutil

    from concerto_workflow.methods import seurat

    if shutil.which("Rscript") is None:
        assert seurat.missing_r_packages(["stats"]) == ["R (Rscript not on PATH)"]
        return
    assert seurat.missing_r_packages(["stats", "no.such.package.xyz"]) == ["no.such.package.xyz"]


def test_required_method_failure_stops_the_run(tmp_path, raw_adata, monkeypatch):
    a = _cells(raw_adata, tmp_path / "cells.h5ad")
    a.X = a.X.toarray()
    a.X[0, 0] = np.nan
    a.write_h5ad(tmp_path / "nan.h5ad")
    monkeypatch.setitem(REGISTRY, "pca", dataclasses.replace(REGISTRY["pca"], required=True))
    with pytest.raises(MethodFailed, match="pca"):
        _run(tmp_path, "pca", "embed", tmp_path / "nan.h5ad")
    assert not (tmp_path / "pca_embed.h5ad").exists()


def test_contract_violations_are_named():
    import anndata as ad

    a = ad.AnnData(obs=pd.DataFrame({"cell_type": ["x"], "batch": ["b"], "tech": ["t"], ROLE: [TEST]},
                                    index=["c"]))
    a.uns.update(dict(experiment="e", task="map", dataset="d", split="s", fold="f", preprocessing="p",
                      method="m", seed=0, status=OK, reason="", seconds=0.0, peak_memory_mb=0.0, log="l"))
    with pytest.raises(outputs.ContractError, match=r"obsm\['X_emb'\] missing.*predicted_label"):
        outputs.check_output(a, "map")
    a.uns["status"] = FAILED
    with pytest.raises(outputs.ContractError, match="without a reason"):
        outputs.check_output(a, "map")


def test_annotate_output_keeps_the_space_it_classified_in_for_umaps():
    """An annotate function may also return (train, held-out) embeddings (fine-tuned Concerto,
    Fig 2h): stacked in the fold's cell order into an optional obsm['X_emb'] that meets the
    contract; UMAP colours mark the training cells as not predicted."""
    from concerto_workflow import figures
    from concerto_workflow.columns import PROVENANCE
    from concerto_workflow.methods.runner import build_output, stack_embedding

    train_mask = np.array([True, False, True, False, True, True, False, True, True, False, True, True])
    emb = stack_embedding(train_mask, np.full((8, 2), 1.0), np.arange(8, dtype=float).reshape(4, 2))
    assert emb.dtype == np.float32 and (emb[train_mask] == 1).all()
    np.testing.assert_array_equal(emb[~train_mask], np.arange(8).reshape(4, 2))   # held-out rows in order
    with pytest.raises(ValueError, match="do not match"):
        stack_embedding(train_mask, np.zeros((7, 2)), np.zeros((4, 2)))
    obs = pd.DataFrame({"cell_type": list("ab") * 6, "batch": "x", "tech": "x",
                        ROLE: np.where(train_mask, TRAIN, TEST)}, index=[f"c{i}" for i in range(12)])
    prov = {k: "" for k in PROVENANCE} | {"status": OK, "method": "m", "log": "l"}
    a = build_output("annotate", obs, {"probs": np.tile([[0.8, 0.2]], (4, 1)), "classes": np.array(["a", "b"]),
                                       "emb": emb}, prov)
    outputs.check_output(a, "annotate")
    np.testing.assert_array_equal(a.obsm["X_emb"], emb)
    colours = figures.obs_strings(a.obs)
    assert list(colours[PREDICTED]) == [figures.NOT_PREDICTED if m else "a" for m in train_mask]
    assert list(colours["cell_type"]) == list("ab") * 6
