"""The config describes the study: schema defaults, registry-checked names, and impossible
settings refused at the dry run with the offending key named."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from concerto_workflow.workflow_config import ConfigError, check_config, static_folds

REPO = Path(__file__).resolve().parents[2]
SCHEMA = str(REPO / "rules" / "config.schema.yaml")


@pytest.fixture
def cfg():
    c = yaml.safe_load(open(REPO / "config.yaml"))
    validate(c, SCHEMA)
    return c


def test_default_config_valid(cfg):
    check_config(cfg)
    assert static_folds(cfg, "pancreas_integration") == ["all"]
    assert static_folds(cfg, "pancreas_mapping") == ["holdout"]


def test_opt_in_study_switches_on_exactly_the_disabled_supplementary_experiments(cfg):
    from concerto_workflow.workflow_config import enabled_experiments, extend_config, figure_enabled

    robust = [n for n in cfg["experiments"] if n.startswith("splat_robust_")]
    assert len(robust) == 7
    opt_in = [n for n, x in cfg["experiments"].items() if not x.get("enabled", True)]
    assert set(opt_in) == {*robust, "tms_cross_tissue_spleen_brain"}
    study = extend_config(yaml.safe_load(open(REPO / "config" / "opt_in.yaml")))
    validate(study, SCHEMA)
    check_config(study)
    assert set(enabled_experiments(study)) - set(enabled_experiments(cfg)) == set(opt_in)
    for fig in ("supp08_robustness", "supp07_sankey_spleen"):
        assert figure_enabled(study, fig) and not figure_enabled(cfg, fig)
    for n in opt_in:   # the study file restates config.yaml's definitions: they must not drift apart
        assert {**study["experiments"][n], "enabled": False} == cfg["experiments"][n], n


def test_schema_fills_defaults():
    c = {"datasets": {"p": {"source": "standin"}}, "splits": {"s": {"kind": "kfold"}},
         "preprocessing": {"x": {}},
         "experiments": {"e": {"task": "annotate", "dataset": "p", "split": "s", "methods": ["pca"]}}}
    validate(c, SCHEMA)
    assert c["splits"]["s"]["k"] == 5 and c["preprocessing"]["x"]["n_top_genes"] == 2000
    e = c["experiments"]["e"]
    assert e["seeds"] == [0] and e["knn_k"] == 5 and e["preprocessing"] == ["hvg2000"]
    assert c["metric_params"]["kbet_k"] == 15


def _exp(c):
    return c["experiments"]["pancreas_mapping"]


@pytest.mark.parametrize("mutate, message", [
    (lambda c: _exp(c).update(methods=["concerto", "harmony"]), "'harmony' cannot run task 'map'"),
    (lambda c: _exp(c).update(methods=["concerto", "scvi"]), "unknown method 'scvi'"),
    (lambda c: _exp(c).update(metrics=["kbet_accept_rate", "ari"]), "'ari' is not a metric of task 'map'"),
    (lambda c: _exp(c).update(dataset="nope"), "experiments.pancreas_mapping.dataset"),
    (lambda c: _exp(c).update(preprocessing=["hvg4321"]), "unknown id 'hvg4321'"),
    (lambda c: c["preprocessing"]["hvg2000"].update(n_top_genes=4000), "exceeds the 3000 genes"),
    (lambda c: c["datasets"]["pancreas"]["standin"].update(n_celss=10), "does not take \\['n_celss'\\]"),
    (lambda c: c["method_params"]["harmony"].update(max_iter=3), "harmony does not accept \\['max_iter'\\]"),
    (lambda c: _exp(c).update(params={"pca": {"n_components": 3}}), "pca does not accept"),
    (lambda c: c["splits"]["indrop_query"].pop("values"), "splits.indrop_query.values"),
    (lambda c: c["datasets"]["pancreas"].update(source="real", real={}), "datasets.pancreas.real.url"),
    (lambda c: c["datasets"]["pancreas"].update(source="local", local={"path": "/no/such.h5ad"}),
     "does not exist"),
    (lambda c: c["figures"]["fig4b_confusion_concerto"].update(method="harmony"), "not run by experiment"),
    (lambda c: c["figures"]["fig3g_batch_metrics"].update(experiments=["nope"]), "unknown experiment 'nope'"),
    (lambda c: c["figures"]["fig3e_umap_hvg2000"].update(preprocessing="hvg10000"), "not among"),
    (lambda c: _exp(c).update(split="all_cells"), "needs test cells"),
    (lambda c: c["datasets"]["pancreas"].update(source="local", local={"path": str(REPO / "config.yaml"),
                                                                        "label_col": ""}),
     "task 'map' needs cell-type labels"),
    (lambda c: c["figures"]["fig4d_distance_to_nk"].update(features=[]), "fig4d_distance_to_nk.features"),
    (lambda c: c["figures"]["fig4d_distance_to_nk"].update(target=""), "needs the query cell type"),
    (lambda c: c["figures"]["fig4h_overall"].update(tools={"Concerto": ["concerto"]}), "at least 2 tools"),
    (lambda c: c["figures"]["fig4h_overall"]["tools"].update(scVI=["scvi"]), "unknown methods \\['scvi'\\]"),
    (lambda c: c["experiments"]["pbmc160k_multimodal_both"]["params"]["concerto"].pop("attention"),
     "params.concerto.attention: true"),
    (lambda c: c["figures"]["fig3d_attention"].update(markers={}), "figures.fig3d_attention.markers"),
    (lambda c: c["figures"]["fig3c_umap_rna"].update(methods=["harmony"]), "\\['harmony'\\] not run by experiment"),
    (lambda c: c["metric_params"].update(label_pairs=[]), "asw_label_pairs needs 'metric_params.label_pairs'"),
    (lambda c: c["experiments"]["pbmc_clustering_leiden"]["cluster_settings"].update(scdeepcluster=[7, 9]),
     "cluster_settings.scdeepcluster': 2 settings for the 5 resolutions"),
    (lambda c: c["experiments"]["pbmc_clustering_louvain"].update(cluster_settings={"scdeepcluster": [7]}),
     "only for methods of a cluster experiment that lists them"),
    (lambda c: c["figures"]["fig2c_accuracy_thymus_pbmc"].update(relative_to="seurat"), "relative_to"),
    (lambda c: c["figures"]["fig2i_sankey_limb_muscle"].update(fold="Spleen_b0"), "is not a fold of experiment"),
    (lambda c: c["figures"]["supp08_robustness"]["sweeps"].popitem(), "have no x value in any sweep"),
    (lambda c: c["figures"]["supp08_robustness"].update(sweeps={"x": {"nope": 1, "splat_robust_de0.2": 2}}),
     "\\['nope'\\] not in figures.supp08_robustness.experiments"),
])
def test_cross_field_errors_name_the_problem(cfg, mutate, message):
    c = copy.deepcopy(cfg)
    mutate(c)
    validate(c, SCHEMA)
    with pytest.raises(ConfigError, match=message):
        check_config(c)


def _dry_run(tmp_path, cfg, *extra):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path),
                           "--directory", str(tmp_path), "-s", str(REPO / "Snakefile"), *extra],
                          capture_output=True, text=True, cwd=REPO)


def test_wrong_key_fails_the_dry_run_with_its_name(tmp_path, cfg):
    cfg["preprocesing"] = {"min_genes": 1}  # typo
    r = _dry_run(tmp_path, cfg)
    assert r.returncode != 0 and "preprocesing" in r.stdout + r.stderr


def test_impossible_hvg_level_fails_the_dry_run(tmp_path, cfg):
    cfg["preprocessing"]["hvg2000"]["n_top_genes"] = 4000
    r = _dry_run(tmp_path, cfg)
    assert r.returncode != 0 and "exceeds the 3000 genes" in r.stdout + r.stderr


def test_unreplaced_slurm_placeholders_fail_the_dry_run(tmp_path, cfg):
    r = _dry_run(tmp_path, cfg, "--workflow-profile", str(REPO / "profiles" / "slurm"))
    assert r.returncode != 0
    assert "<your_account>" in r.stdout + r.stderr and "profiles/slurm" in r.stdout + r.stderr


def test_relative_data_paths_start_at_the_repository(tmp_path, monkeypatch):
    """A study in config/ names ../shared/data/... once; it resolves from any working directory."""
    from concerto_workflow.workflow_config import resolve_paths

    monkeypatch.chdir(tmp_path)
    c = {"datasets": {"x": {"source": "local", "local": {"path": "../shared/data/x.h5ad"}},
                      "y": {"source": "local", "local": {"path": "/abs/y.h5ad"}}},
         "splits": {"s": {"kind": "cross_dataset", "gene_map": {"source": "table", "path": "tables/o.csv"}}}}
    resolve_paths(c, "/repo")
    assert c["datasets"]["x"]["local"]["path"] == "/shared/data/x.h5ad"
    assert c["datasets"]["y"]["local"]["path"] == "/abs/y.h5ad"
    assert c["splits"]["s"]["gene_map"]["path"] == "/repo/tables/o.csv"


def test_kfold_max_folds_above_k_and_table_metrics_nobody_computes_are_refused(cfg):
    c = copy.deepcopy(cfg)
    c["splits"]["pbmc_cv_within_batch"]["max_folds"] = 3
    with pytest.raises(ConfigError, match="max_folds' = 3 exceeds"):
        check_config(c)
    c = copy.deepcopy(cfg)
    c["figures"]["t"] = {"type": "table", "panel": "4h", "experiments": ["pancreas_mapping"],
                         "metrics": ["accuracy", "ari"]}
    validate(c, SCHEMA)
    with pytest.raises(ConfigError, match="no experiment of the table computes \\['ari'\\]"):
        check_config(c)



def _concat_study(**mixed):
    """A tiny study: an annotation experiment on 'mixed', a concat of two pancreas stand-ins (sharing
    their genes and batch names) or of ``mixed``."""
    return {"datasets": {"pan": {"source": "standin", "standin": {"maker": "pancreas", "n_cells": 200, "n_genes": 150}},
                         "pan2": {"source": "standin", "standin": {"maker": "pancreas", "n_cells": 200, "n_genes": 150,
                                                                    "seed": 1}},
                         "mixed": {"source": "concat", "concat": mixed or {"datasets": ["pan", "pan2"]}}},
            "splits": {"cv": {"kind": "kfold", "k": 2, "max_folds": 1}},
            "preprocessing": {"hvg100": {"n_top_genes": 100, "min_genes": 10}},
            "experiments": {"e": {"task": "annotate", "dataset": "mixed", "split": "cv", "preprocessing": ["hvg100"],
                                  "methods": ["majority"], "metrics": ["accuracy"]}},
            "covid": {"enabled": False}}


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["datasets"]["mixed"]["concat"].update(datasets=["pan", "nope"]),
     "'datasets.mixed.concat.datasets': unknown dataset 'nope'"),
    (lambda c: c["datasets"]["mixed"]["concat"].update(datasets=["pan", "mixed"]), "'mixed' cannot contain itself"),
    (lambda c: c["datasets"]["mixed"]["concat"].update(datasets=["pan", "pan"]), "names a dataset twice"),
    (lambda c: c["datasets"]["mixed"]["concat"].update(datasets=["pan", "other"]) or c["datasets"].update(
        other={"source": "concat", "concat": {"datasets": ["pan2", "mixed"]}}),
     "'datasets.mixed.concat.datasets': a cycle of concat datasets mixed -> other -> mixed"),
    (lambda c: c["datasets"]["mixed"]["concat"].update(origin_col="tech"), "origin_col' = 'tech'"),
    (lambda c: c["datasets"].update(outer={"source": "concat", "concat": {"datasets": ["mixed", "pan2"]}}),
     "'datasets.outer.concat.origin_col' = 'origin' is also the origin_col of part 'mixed'"),
    (lambda c: c["datasets"]["mixed"].update(concat={}), "'datasets.mixed.concat.datasets' needs at least 2"),
])
def test_concat_dataset_errors_name_the_key(mutate, message):
    cfg = _concat_study()
    mutate(cfg)
    validate(cfg, SCHEMA)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_concat_of_two_standins_plans_their_preparation_first(tmp_path):
    """A dry run of a tiny study whose experiment uses a concat of two stand-ins: the parts are
    prepared before the concat, which is split; the caption names both parts."""
    from concerto_workflow.workflow_config import data_origin

    cfg = _concat_study()
    r = _dry_run(tmp_path, cfg, "--cores", "1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for name in ("pan", "pan2", "mixed"):
        assert f"results/data/{name}/raw.h5ad" in out, name
    assert "results/e/split.tsv" in out
    validate(cfg, SCHEMA)
    assert data_origin(cfg, ["e"]) == ("Data: mixed: the cells of [pan: simulated stand-in; pan2: simulated "
                                       "stand-in] concatenated on their shared genes.")
    assert not (tmp_path / "results").exists()
