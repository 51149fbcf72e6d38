"""Supplementary figure A1 (beyond the paper): Concerto's query accuracy on small real references
for each factor level of :mod:`concerto_workflow.ablation`, drawn from the study's score table
only, with kNN-on-PCA and logistic regression on PCA as reference lines."""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BASELINE_STYLE = {"knn_pca": ("#d62728", "--", "kNN (k=5) on PCA(50)"),
                  "logreg_pca": ("#9467bd", ":", "logistic regression on PCA(50)")}


def setting_order(scores: pd.DataFrame) -> list[str]:
    """Concerto settings in study order: the paper's first, then factor by factor."""
    c = scores[scores["method"] == "concerto"]
    return list(dict.fromkeys(["paper", *c["setting"]]))


def plot_ablation(scores: pd.DataFrame, out: str, *, metric: str = "accuracy", caption: str = "",
                  title: str = "") -> None:
    """One panel per task: per setting the query ``metric`` of every seed (dots), its mean (bar
    tick) and the mean validation score (open diamond, what settings are chosen on); vertical
    lines = the baselines' mean query score; the validation-selected setting is starred;
    settings that did not run are labelled with their status."""
    from .ablation import select_settings

    tasks = list(dict.fromkeys(scores["task"]))
    order = setting_order(scores)
    selected = select_settings(scores, metric)
    chosen = dict(zip(selected["task"], selected["setting"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 1.5, 0.32 * len(order) + 2.2),
                             sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        t = scores[(scores["task"] == task) & (scores["metric"] == metric)]
        for y, setting in enumerate(order):
            s = t[(t["method"] == "concerto") & (t["setting"] == setting)]
            q = s[(s["split"] == "query") & (s["status"] == "ok")]["value"].to_numpy()
            v = s[(s["split"] == "valid") & (s["status"] == "ok")]["value"].to_numpy()
            colour = "#1f77b4" if setting != "paper" else "black"
            if len(q):
                ax.scatter(q, np.full(len(q), y), s=12, color=colour, alpha=0.6, lw=0)
                ax.plot([q.mean()] * 2, [y - 0.3, y + 0.3], color=colour, lw=2)
            elif len(s):
                ax.text(0.02, y, f"{s['status'].iloc[0]}: {textwrap.shorten(str(s['reason'].iloc[0]), 50)}",
                        transform=ax.get_yaxis_transform(), va="center", fontsize=6, color="grey")
            if len(v):
                ax.scatter([v.mean()], [y], marker="D", facecolors="none", edgecolors="grey", s=18)
            if chosen.get(task) == setting:
                ax.text(1.0, y, " *", transform=ax.get_yaxis_transform(), va="center", fontsize=11,
                        color="darkgreen")
        for method, (colour, style, label) in BASELINE_STYLE.items():
            b = t[(t["method"] == method) & (t["split"] == "query") & (t["status"] == "ok")]["value"]
            if len(b):
                ax.axvline(b.mean(), color=colour, ls=style, lw=1.2, label=f"{label}: {b.mean():.3f}")
        paper = t[(t["setting"] == "paper") & (t["split"] == "query") & (t["status"] == "ok")]["value"]
        if len(paper):
            ax.axvline(paper.mean(), color="black", lw=0.6, alpha=0.5)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel(f"query {metric} (seeds as dots, mean as tick)", fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(order)))
    axes[0][0].set_yticklabels(order, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle(title or "Supp A1 (beyond the paper): Concerto on small real references, one factor at a time "
                 "around the paper's settings", fontsize=10)
    lines = textwrap.wrap(caption.replace("**", ""), 200) if caption else []
    if lines:
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=6.5, va="bottom")
    # the caption's height (6.5 pt text: ~0.12 in a line) plus the axis labels' room
    bottom = (0.12 * len(lines) + 0.1) / fig.get_figheight() if lines else 0
    fig.tight_layout(rect=(0, bottom, 1, 0.95))
    fig.savefig(out, dpi=130)
    plt.close(fig)
