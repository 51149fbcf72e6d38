"""Fig 4h: the overall comparison is computed from score rows, never typed in."""
from pathlib import Path

import numpy as np
import pandas as pd

from concerto_workflow import overall, tables
from concerto_workflow.columns import OK

GROUPS = {"Concerto": ["concerto"], "Seurat": ["seurat", "seurat_v4"], "Harmony/Symphony": ["harmony", "symphony"],
          "scArches": ["scarches"]}


def _rows(experiment, split, prep, method, metric, values, status=OK):
    prov = dict(experiment=experiment, task="map", dataset="pancreas", split=split, fold="f", preprocessing=prep,
                method=method, seed="0")
    if status != OK:
        return tables.rows(prov, "method", {}, status=status, reason="not installed: x", metrics=[metric])
    return pd.concat([tables.rows(dict(prov, seed=str(i)), "method", {metric: v}) for i, v in enumerate(values)])


def _scores():
    return pd.concat([
        _rows("map", "q", "hvg", "concerto", "accuracy", [0.9, 0.8]),       # mean 0.85
        _rows("map", "q", "hvg", "symphony", "accuracy", [0.95]),
        _rows("map", "q", "hvg", "scarches", "accuracy", [], status="not_installed"),
        _rows("cls", "q", "hvg", "seurat_v4", "accuracy", [0.7]),           # same test cells, other experiment
        _rows("int", "all", "all_genes", "concerto", "asw_batch", [0.1]),    # lower is better
        _rows("int", "all", "all_genes", "harmony", "asw_batch", [0.2]),
        _rows("int", "all", "all_genes", "seurat", "asw_batch", [0.05]),
        _rows("int", "all", "all_genes", "random", "asw_batch", [0.0]),      # a control, not a tool
    ], ignore_index=True)


def _resources():
    # measured job times (scalability.scalability_table): Concerto's includes its training job
    return pd.DataFrame({"experiment": ["map", "map", "map", "int"], "method": ["concerto", "symphony", "scarches", "seurat"],
                         "status": [OK, OK, "not_installed", OK], "total_s": [30.0, 20.0, np.nan, 5.0],
                         "max_rss_mb": [900.0, 500.0, np.nan, 700.0]})


def test_overall_ranks_follow_metric_direction_and_shared_test_cells():
    t = overall.overall_table(_scores(), GROUPS, resources=_resources(), all_gene_preps=["all_genes"],
                              multimodal_runs=[("map", "concerto")])
    acc = t[t["criterion"] == "pancreas / q: accuracy"].set_index("tool")
    assert np.isclose(acc.loc["Concerto", "value"], 0.85)
    assert acc["rank"].to_dict() == {"Concerto": 2.0, "Harmony/Symphony": 1.0, "Seurat": 3.0}
    assert "scArches" not in acc.index                      # not installed: no rank, no made-up value
    asw = t[t["criterion"] == "pancreas / all: asw_batch"].set_index("tool")["rank"]
    assert asw.to_dict() == {"Concerto": 2.0, "Harmony/Symphony": 3.0, "Seurat": 1.0}
    res = t[t["kind"] == "resource"].set_index(["criterion", "tool"])["rank"]
    assert res[(overall.RESOURCES["total_s"], "Concerto")] == 2.0 and res[(overall.RESOURCES["total_s"], "Harmony/Symphony")] == 1.0
    assert ("Seurat" not in res.index.get_level_values("tool"))           # alone in its experiment: unranked
    cap = t[t["kind"] == "capability"].set_index(["criterion", "tool"])["value"]
    assert cap[("ran on all genes", "Seurat")] == 1 and cap[("ran on all genes", "Harmony/Symphony")] == 1
    assert cap[("ran on all genes", "scArches")] == 0
    assert cap[("ran with a second modality", "Concerto")] == 1 and cap[("ran with a second modality", "Seurat")] == 0
    mean = t[t["kind"] == "overall"].set_index("tool")["value"]
    assert np.isclose(mean["Concerto"], (2 + 2 + 2 + 2) / 4) and "scArches" not in mean.index


def test_a_method_in_two_tools_is_refused():
    import pytest

    with pytest.raises(ValueError, match="two tools"):
        overall.overall_table(_scores(), {"A": ["pca"], "B": ["pca"]})


def test_overall_study_facts_name_all_gene_preprocessing_and_multimodal_runs():
    import yaml

    from concerto_workflow.workflow_config import overall_study_facts

    cfg = yaml.safe_load(open(Path(__file__).resolve().parents[2] / "config.yaml"))
    facts = overall_study_facts(cfg, cfg["figures"]["fig4h_overall"]["experiments"])
    assert "all_genes" in facts["all_gene_preps"] and "hvg2000" not in facts["all_gene_preps"]
    assert ["pbmc_protein_inference", "concerto"] in facts["multimodal_runs"]
    assert all(m != "pca" for _, m in facts["multimodal_runs"])
