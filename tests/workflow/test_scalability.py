"""Fig 4g: Snakemake benchmark files parsed into the scalability (speed) table; the scsim stand-in."""
import numpy as np
import pandas as pd

from concerto_workflow import scalability, tables
from concerto_workflow.simulate.standins import make_scsim_scale

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, s, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + f"{s}\t0:00:{int(s):02d}\t{rss}\t1\t1\t1\t0\t0\t90\t{s}\n")


def _score(exp, method, n, status="ok"):
    prov = dict(experiment=exp, task="map", dataset="d", split="s", fold="holdout", preprocessing="p",
                method=method, seed="0")
    if status != "ok":
        return tables.rows(prov, "method", {}, status=status, reason="over the time budget: stopped after 30 s",
                           metrics=["accuracy", "n_cells"])
    return tables.rows(prov, "method", {"accuracy": 0.9, "n_cells": n})


def test_benchmark_files_become_the_speed_table(tmp_path):
    b = tmp_path / "benchmarks"
    _bench(b / "train_concerto" / "scale_1k_holdout_p_seed0.tsv", 20.0, 900.0)
    _bench(b / "run_method" / "scale_1k_holdout_p_concerto_seed0.tsv", 10.0, 1000.0)
    _bench(b / "run_method" / "scale_1k_holdout_p_symphony_seed0.tsv", 15.0, 500.0)
    _bench(b / "run_method" / "scale_1k_holdout_p_scarches_seed0.tsv", 30.5, 1200.0)
    scores = pd.concat([_score("scale_1k", "concerto", 1000), _score("scale_1k", "symphony", 1000),
                        _score("scale_1k", "scarches", 1000, status="over_budget")], ignore_index=True)
    t = scalability.scalability_table(scores, str(b)).set_index("method")
    assert t.loc["concerto", "build_s"] == 20 and t.loc["concerto", "total_s"] == 30      # training + mapping
    assert t.loc["concerto", "max_rss_mb"] == 1000 and np.isnan(t.loc["symphony", "build_s"])
    assert t.loc["symphony", "cells_per_s"] == 1000 / 15 and t.loc["symphony", "time_vs_concerto"] == 0.5
    assert t.loc["scarches", "status"] == "over_budget" and t.loc["scarches", "n_cells"] == 1000
    assert np.isnan(t.loc["scarches", "cells_per_s"])
    md = scalability.speed_markdown(t.reset_index())
    assert "> budget" in md and "| 1,000 | symphony |" in md
    rows = scalability.as_score_rows(t.reset_index())
    assert set(rows["metric"]) == {"seconds", "peak_memory_mb", "n_cells"}
    stopped = rows[rows["method"] == "scarches"].set_index("metric")["value"]
    assert stopped[["seconds", "peak_memory_mb"]].isna().all() and stopped["n_cells"] == 1000


def test_size_of_a_fold_where_every_method_was_stopped_comes_from_the_split(tmp_path):
    _bench(tmp_path / "benchmarks" / "run_method" / "scale_1k_holdout_p_symphony_seed0.tsv", 31.0, 400.0)
    (tmp_path / "results" / "scale_1k").mkdir(parents=True)
    pd.DataFrame({"fold": ["holdout"] * 7, "dataset": "d", "cell": [f"c{i}" for i in range(7)],
                  "role": "train"}).to_csv(tmp_path / "results" / "scale_1k" / "split.tsv", sep="\t", index=False)
    scores = _score("scale_1k", "symphony", 0, status="over_budget")
    t = scalability.scalability_table(scores, str(tmp_path / "benchmarks"), results_dir=str(tmp_path / "results"))
    assert t["n_cells"].tolist() == [7.0] and t["status"].tolist() == ["over_budget"]


def test_a_job_without_its_benchmark_file_is_an_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="benchmark"):
        scalability.scalability_table(_score("scale_1k", "symphony", 1000), str(tmp_path))


def test_scsim_standin_splits_reference_and_query():
    a = make_scsim_scale(n_cells=200, n_genes=300, seed=0)
    assert a.shape == (200, 300) and a.obs["part"].value_counts().to_dict() == {"query": 100, "reference": 100}
    ref = a.obs["part"] == "reference"
    assert set(a.obs.loc[ref, "batch"].astype(str)) == {"ref1", "ref2"} and (a.obs.loc[~ref, "batch"] == "query").all()
    assert a.obs["cell_type"].nunique() == 5
    assert np.allclose(a.X.toarray(), make_scsim_scale(n_cells=200, n_genes=300, seed=0).X.toarray())
