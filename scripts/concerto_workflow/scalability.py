"""Scalability table (paper Fig 4g) from Snakemake ``benchmark:`` files (benchmark-as-data).

For each experiment of a size series and each method, the wall time and peak memory of
building the reference and mapping the query, as Snakemake measured the jobs:

* Concerto: reference building = rule ``train_concerto`` (pretraining on the reference cells),
  mapping = rule ``run_method`` (embedding reference and query + the 5-NN vote);
* every other method fits its reference and maps the query inside one ``run_method`` job, so its
  time is reported as one total (``build_s`` empty).

Status and reason come from the score tables: a method stopped at the experiment's time budget
(``over_budget``) keeps its row with the budget as a lower bound, shown as "> budget".
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .columns import OK, OVER_BUDGET

COLUMNS = ["experiment", "fold", "preprocessing", "method", "seed", "n_cells", "build_s", "map_s", "total_s",
           "max_rss_mb", "status", "reason", "cells_per_s", "time_vs_concerto"]
CONCERTO = "concerto"


def read_benchmark(path: str) -> dict | None:
    """The last row of a Snakemake benchmark file as {'s': seconds, 'max_rss': MB}; None if absent."""
    if not os.path.exists(path):
        return None
    d = pd.read_csv(path, sep="\t")
    if d.empty or "s" not in d:
        raise ValueError(f"{path} is not a Snakemake benchmark file (no 's' column or no rows)")
    last = d.iloc[-1]
    rss = pd.to_numeric(last.get("max_rss", np.nan), errors="coerce")
    return {"s": float(last["s"]), "max_rss": float(rss)}


def benchmark_paths(benchmark_dir: str, experiment: str, fold: str, prep: str, method: str, seed) -> dict:
    """Paths of the benchmark files rules/engine.smk writes for one method job (and Concerto's training)."""
    out = {"map": os.path.join(benchmark_dir, "run_method", f"{experiment}_{fold}_{prep}_{method}_seed{seed}.tsv")}
    if method == CONCERTO:
        out["build"] = os.path.join(benchmark_dir, "train_concerto", f"{experiment}_{fold}_{prep}_seed{seed}.tsv")
    return out


def split_size(results_dir: str, experiment: str, fold: str) -> float:
    """Cells of one fold in the experiment's split table (``<results_dir>/<experiment>/split.tsv``);
    the size of a fold where no method finished (so no score row carries n_cells). NaN if absent."""
    path = os.path.join(results_dir, experiment, "split.tsv")
    if not os.path.exists(path):
        return float("nan")
    t = pd.read_csv(path, sep="\t", usecols=["fold"], dtype=str)
    return float((t["fold"] == str(fold)).sum())


def scalability_table(scores: pd.DataFrame, benchmark_dir: str, results_dir: str | None = None) -> pd.DataFrame:
    """One row per (experiment, fold, preprocessing, method, seed) of ``scores`` (collected score
    rows: n_cells and status) with the measured times (:data:`COLUMNS`). ``n_cells`` comes from
    the methods that finished on the fold, else (``results_dir`` given) from its split table."""
    keys = ["experiment", "fold", "preprocessing", "method", "seed"]
    rows = []
    sizes = scores[(scores["metric"] == "n_cells") & (scores["status"] == OK)].groupby(
        ["experiment", "fold", "preprocessing"])["value"].max()
    for key, g in scores.groupby(keys, sort=False):
        exp, fold, prep, method, seed = key
        status, reason = g["status"].iloc[0], g["reason"].iloc[0]
        paths = benchmark_paths(benchmark_dir, exp, fold, prep, method, seed)
        bench = {k: read_benchmark(p) for k, p in paths.items()}
        if bench["map"] is None:
            raise FileNotFoundError(f"no benchmark file {paths['map']} for a job the score tables list")
        build = bench.get("build")
        total = bench["map"]["s"] + (build["s"] if build else 0.0)
        rss = max(bench["map"]["max_rss"], build["max_rss"] if build else -np.inf)
        rows.append({"experiment": exp, "fold": fold, "preprocessing": prep, "method": method, "seed": seed,
                     "n_cells": float(sizes.get((exp, fold, prep),
                                                split_size(results_dir, exp, fold) if results_dir else np.nan)),
                     "build_s": build["s"] if build else np.nan, "map_s": bench["map"]["s"], "total_s": total,
                     "max_rss_mb": rss, "status": status, "reason": reason})
    t = pd.DataFrame(rows, columns=COLUMNS[:-2])
    t["cells_per_s"] = np.where(t["status"] == OK, t["n_cells"] / t["total_s"], np.nan)
    ref = t[(t["method"] == CONCERTO) & (t["status"] == OK)].groupby(["experiment", "fold", "preprocessing", "seed"])[
        "total_s"].mean()
    idx = pd.MultiIndex.from_frame(t[["experiment", "fold", "preprocessing", "seed"]])
    t["time_vs_concerto"] = np.where(t["status"] == OK, t["total_s"].to_numpy() / ref.reindex(idx).to_numpy(), np.nan)
    return t[COLUMNS]


def as_score_rows(t: pd.DataFrame) -> pd.DataFrame:
    """The table as score-style rows (metrics seconds, peak_memory_mb, n_cells) for the log-log
    figure; over-budget and not-run methods keep their status and reason (and their size, where
    the '> budget' mark goes)."""
    recs = []
    for r in t.itertuples():
        base = {"experiment": r.experiment, "fold": r.fold, "preprocessing": r.preprocessing, "method": r.method,
                "seed": r.seed, "kind": "method", "setting": "", "status": r.status, "reason": r.reason, "log": ""}
        ok = r.status == OK
        for metric, v in (("seconds", r.total_s), ("peak_memory_mb", r.max_rss_mb), ("n_cells", r.n_cells)):
            recs.append({**base, "metric": metric, "value": float(v) if ok or metric == "n_cells" else np.nan})
    return pd.DataFrame(recs)


def speed_markdown(t: pd.DataFrame) -> str:
    """Markdown speed table: per size and method, seconds, cells/s and time relative to Concerto."""
    lines = ["| cells | method | build s | map s | total s | peak MB | cells/s | time / Concerto |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in t.sort_values(["n_cells", "method"]).itertuples():
        if r.status == OVER_BUDGET:
            lines.append(f"| {r.n_cells:,.0f} | {r.method} | | | > budget ({r.total_s:.0f}) | | | |")
        elif r.status != OK:
            lines.append(f"| {r.n_cells:,.0f} | {r.method} | not run ({r.status}) | | | | | |")
        else:
            build = "" if np.isnan(r.build_s) else f"{r.build_s:.1f}"
            lines.append(f"| {r.n_cells:,.0f} | {r.method} | {build} | {r.map_s:.1f} | {r.total_s:.1f} | "
                         f"{r.max_rss_mb:.0f} | {r.cells_per_s:.0f} | {r.time_vs_concerto:.2f} |")
    return "\n".join(lines)
