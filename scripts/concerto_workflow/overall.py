"""Overall comparison of tools from a run's collected score tables (paper Fig 4h).

The paper's Fig 4h scores Concerto, Seurat, Harmony/Symphony and scArches by hand; here every
entry is computed from the measured rows of this run. A *tool* is a group of registry methods
(Seurat = ``seurat`` for integration + ``seurat_v4`` for mapping; Harmony/Symphony = ``harmony``
+ ``symphony``). Criteria, one row each:

* every (dataset, split, quality metric) the tools ran: the tool's mean value over folds, seeds,
  preprocessings and settings (its best method when a group has several there), ranked among the
  tools (1 = best, in the metric's direction from :mod:`.scoring`). Experiments on the same
  dataset and split score the same test cells, so Seurat v4's label transfer (an annotate
  experiment) is ranked with the other tools' k-NN labels of the map experiment;
* wall time and peak memory of the method jobs (Snakemake benchmark files, Concerto's
  pretraining job included: :mod:`.scalability`): the tool's rank within each experiment,
  averaged over experiments;
* capabilities the run demonstrates (not ranked): ran on all genes (an experiment's
  preprocessing keeps every gene) and ran with a second modality as input;
* overall: the mean of the tool's ranks over the ranked criteria it took part in.

A tool that never ran a criterion gets no rank there (drawn "not run"), never a guessed value.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import OK
from .scoring import METRICS, higher_is_better

RESOURCES = {"total_s": "wall time incl. reference building (mean rank over experiments)",
             "max_rss_mb": "peak memory (mean rank over experiments)"}
OVERALL = "overall (mean rank)"
COLUMNS = ["criterion", "kind", "tool", "value", "rank"]


def _tool_of(groups: dict[str, list[str]]) -> dict[str, str]:
    out = {}
    for tool, methods in groups.items():
        for m in methods:
            if m in out:
                raise ValueError(f"method {m!r} is in two tools: {out[m]!r} and {tool!r}")
            out[m] = tool
    return out


def _ranks(values: pd.Series, higher: bool) -> pd.Series:
    return values.rank(ascending=not higher, method="average")


def overall_table(scores: pd.DataFrame, groups: dict[str, list[str]], *, resources: pd.DataFrame | None = None,
                  all_gene_preps=(), multimodal_runs=()) -> pd.DataFrame:
    """Long table (:data:`COLUMNS`): kind is quality / resource / capability / overall.

    ``scores``: collected score rows (:mod:`.tables`); ``resources``: the jobs' measured times
    (:func:`concerto_workflow.scalability.scalability_table` of the same experiments; None = no
    resource rows); ``all_gene_preps``: preprocessing ids that keep every gene;
    ``multimodal_runs``: (experiment, method) pairs run with a second modality.
    """
    tool_of = _tool_of(groups)
    tools = list(groups)
    d = scores[scores["method"].isin(tool_of)].assign(tool=lambda t: t["method"].map(tool_of))
    ok = d[d["status"] == OK].dropna(subset=["value"])
    rows = []
    quality = ok[ok["metric"].isin(METRICS)]
    for (dataset, split, metric), g in quality.groupby(["dataset", "split", "metric"], sort=False):
        higher = higher_is_better(metric)
        per_method = g.groupby(["tool", "method"])["value"].mean()
        best = per_method.groupby(level="tool").max() if higher else per_method.groupby(level="tool").min()
        if len(best) < 2:   # nothing to compare
            continue
        r = _ranks(best, higher)
        rows += [(f"{dataset} / {split}: {metric}", "quality", t, float(best[t]), float(r[t])) for t in best.index]
    res = pd.DataFrame(columns=["experiment", "method", "tool", "status", *RESOURCES])
    if resources is not None:
        res = resources[resources["method"].isin(tool_of) & (resources["status"] == OK)].assign(
            tool=lambda t: t["method"].map(tool_of))
    for metric, label in RESOURCES.items():
        per_exp = []
        for _, g in res.groupby("experiment"):
            v = g.groupby("tool")[metric].mean()
            if len(v) >= 2:
                per_exp.append(_ranks(v, higher=False))
        if per_exp:
            mean_rank = pd.concat(per_exp, axis=1).mean(axis=1)
            rows += [(label, "resource", t, float(mean_rank[t]), float(mean_rank[t])) for t in mean_rank.index]
    ran = ok.drop_duplicates(["experiment", "preprocessing", "method"])
    all_genes = set(ran.loc[ran["preprocessing"].isin(all_gene_preps), "tool"])
    multimodal = {tool_of[m] for e, m in multimodal_runs if m in tool_of and
                  ((ran["experiment"] == e) & (ran["method"] == m)).any()}
    for label, have in (("ran on all genes", all_genes), ("ran with a second modality", multimodal)):
        rows += [(label, "capability", t, float(t in have), np.nan) for t in tools]
    out = pd.DataFrame(rows, columns=COLUMNS)
    ranked = out[out["kind"].isin(["quality", "resource"])]
    mean = ranked.groupby("tool")["rank"].mean()
    out = pd.concat([out, pd.DataFrame([(OVERALL, "overall", t, float(mean[t]), float(mean[t])) for t in mean.index],
                                       columns=COLUMNS)], ignore_index=True)
    return out
