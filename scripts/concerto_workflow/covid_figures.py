"""Figures of the COVID-19 experiment (paper Fig 5), drawn only from the tables that
:func:`concerto_workflow.covid.analyse` and the mapping rule write (never recomputing results).

``plot_mapping`` is panel 5a (joint UMAP with Level-1 labels, Level-1 composition of reference
and query); ``plot_compartment`` is panels 5b-5d (UMAP of the compartment's query cells per
disease status, marker heatmap, per-donor percentage boxplots with stars, and the DE table or
the HLA-DR / S100A scatter); ``plot_status_de`` is the per-status DE dot plot of 5c / 5d.
"""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _palette(labels):
    cmap = plt.get_cmap("tab20")
    return {lab: cmap(i % 20) for i, lab in enumerate(sorted(labels))}


def _scatter(ax, df, color_col, colors, title, s=3):
    ax.scatter(df["umap1"], df["umap2"], s=s, c="#dddddd", lw=0, rasterized=True) if "background" in df else None
    for lab, d in df.groupby(color_col, sort=True):
        ax.scatter(d["umap1"], d["umap2"], s=s, color=colors[lab], lw=0, label=lab, rasterized=True)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _footer(fig, caption):
    # about 18 characters of 7-pt text per inch; 16 leaves a margin
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(caption, int(16 * fig.get_figwidth()))), fontsize=7,
             va="bottom")


def plot_mapping(umap: pd.DataFrame, out: str, *, title: str, caption: str, conditions) -> None:
    """5a. umap: cell, dataset (reference/query), level1, condition, umap1, umap2."""
    colors = _palette(umap["level1"].unique())
    fig = plt.figure(figsize=(15, 5.6))
    gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1.1], left=0.02, right=0.98, bottom=0.2, top=0.86, wspace=0.25)
    for i, ds in enumerate(["reference", "query"]):
        ax = fig.add_subplot(gs[0, i])
        ax.scatter(umap["umap1"], umap["umap2"], s=2, c="#e5e5e5", lw=0, rasterized=True)
        d = umap[umap["dataset"] == ds]
        _scatter(ax, d, "level1", colors, f"{ds}: {'labels' if ds == 'reference' else 'mapped Level-1'} "
                                          f"({len(d)} cells)")
        if i == 1:
            ax.legend(fontsize=7, markerscale=3, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax = fig.add_subplot(gs[0, 2])
    q = umap[umap["dataset"] == "query"]
    groups = [("reference", umap[umap["dataset"] == "reference"])] + \
             [(f"query {c}", q[q["condition"] == c]) for c in conditions]
    comp = pd.DataFrame({name: d["level1"].value_counts(normalize=True) * 100 for name, d in groups}).fillna(0)
    bottom = np.zeros(comp.shape[1])
    for lab in sorted(comp.index):
        ax.bar(range(comp.shape[1]), comp.loc[lab], bottom=bottom, color=colors[lab], label=lab)
        bottom += comp.loc[lab].to_numpy()
    ax.set_xticks(range(comp.shape[1]), comp.columns, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% of cells (Level-1)")
    ax.set_title("Level-1 composition", fontsize=9)
    fig.suptitle(title, fontsize=11)
    _footer(fig, caption)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_compartment(umap: pd.DataFrame, states: pd.DataFrame, pct: pd.DataFrame, tests: pd.DataFrame,
                     markers: pd.DataFrame, out: str, *, title: str, caption: str, conditions,
                     de: pd.DataFrame | None = None, scatter: bool = False) -> None:
    """5b-5d for one compartment.

    umap: cell, umap1, umap2 (query cells); states: cell, condition, state, hla_dr, s100a;
    pct / tests / markers / de: the compartment's rows of the analysis tables.
    """
    cells = states.merge(umap[["cell", "umap1", "umap2"]], on="cell")
    subtypes = sorted(pct["subtype"].unique())
    colors = _palette(subtypes)
    fig = plt.figure(figsize=(16, 11))
    gs = fig.add_gridspec(3, max(len(conditions), 3) + 1, height_ratios=[1, 1, 1.05], left=0.1, right=0.98,
                          bottom=0.1, top=0.92, hspace=0.45, wspace=0.3)
    for i, c in enumerate(conditions):
        ax = fig.add_subplot(gs[0, i])
        ax.scatter(cells["umap1"], cells["umap2"], s=3, c="#e5e5e5", lw=0, rasterized=True)
        d = cells[cells["condition"] == c]
        _scatter(ax, d, "state", colors, f"{c} ({len(d)} cells)", s=5)
        if len(cells) > 20:   # frame the bulk of the compartment (a few mapped cells lie elsewhere)
            for setter, col in ((ax.set_xlim, "umap1"), (ax.set_ylim, "umap2")):
                lo, hi = np.nanpercentile(cells[col], [1, 99])
                pad = 0.1 * (hi - lo) + 1e-6
                setter(lo - pad, hi + pad)
    ax.legend(fontsize=7, markerscale=3, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    # marker heatmap, each gene scaled to [0, 1] across states (paper: minimum to maximum)
    ax = fig.add_subplot(gs[1, :2])
    h = markers.pivot(index="state", columns="gene", values="mean_expression")
    h = h[[g for g in dict.fromkeys(markers["gene"])]]
    span = (h.max() - h.min()).replace(0, 1)
    im = ax.imshow(((h - h.min()) / span).to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(h.shape[1]), h.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(h.shape[0]), h.index, fontsize=7)
    ax.set_title("mean log expression per state (scaled per gene)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax = fig.add_subplot(gs[1, 2:])
    if scatter:
        d = cells.dropna(subset=["hla_dr", "s100a"])
        for s, dd in d.groupby("state"):
            ax.scatter(dd["hla_dr"], dd["s100a"], s=4, color=colors.get(s, "grey"), label=s, lw=0)
        ax.set_xlabel("HLA-DR (mean log expression)")
        ax.set_ylabel("S100A8/9/12 (mean log expression)")
        ax.set_title("classical monocytes: HLA-DR-low S100A-high subset", fontsize=9)
        ax.legend(fontsize=7, markerscale=3, frameon=False)
    else:
        ax.axis("off")
        if de is not None and len(de):
            rows = []
            for _, r in de.iterrows():
                if isinstance(r.get("note"), str) and r["note"]:
                    rows.append([r["gene"], r["group"], r["reference"], "-", "-"])
                else:
                    rows.append([r["gene"], r["group"], r["reference"], f"{r['log2fc']:.2f}", f"{r['p_adj']:.2g}"])
            t = ax.table(cellText=rows, colLabels=["gene", "group", "vs", "log2FC", "adj. p"], loc="center",
                         cellLoc="center")
            t.auto_set_font_size(False)
            t.set_fontsize(8)
            ax.set_title("DE: Wilcoxon rank-sum, BH-adjusted (scanpy)", fontsize=9)
    # boxplots of per-donor percentages with stars vs healthy
    ax = fig.add_subplot(gs[2, :])
    width = 0.8 / len(conditions)
    ccol = dict(zip(conditions, ["#4c72b0", "#dd8452", "#c44e52", "#55a868"]))
    pair_tests = tests[tests["group2"] != ""]
    for j, c in enumerate(conditions):
        data = [pct[(pct["subtype"] == s) & (pct["condition"] == c)]["percent"].to_numpy() for s in subtypes]
        pos = np.arange(len(subtypes)) + (j - (len(conditions) - 1) / 2) * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
        for patch in bp["boxes"]:
            patch.set_facecolor(ccol[c])
            patch.set_alpha(0.6)
        for p, v in zip(pos, data):
            ax.scatter(np.full(v.size, p), v, s=8, color="k", zorder=3)
    top = pct["percent"].max() if len(pct) else 1
    for i, s in enumerate(subtypes):
        for k, c in enumerate(conditions[1:], start=1):
            r = pair_tests[(pair_tests["subtype"] == s) & (pair_tests["group1"] == conditions[0])
                           & (pair_tests["group2"] == c)]
            if len(r):
                ax.text(i + (k - (len(conditions) - 1) / 2) * width, top * (1.04 + 0.05 * k), r["stars"].iloc[0],
                        ha="center", fontsize=7)
    ax.set_xticks(range(len(subtypes)), subtypes, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, top * 1.25 + 1)
    ax.set_ylabel("% of compartment, per donor")
    ax.legend([plt.Rectangle((0, 0), 1, 1, color=ccol[c], alpha=0.6) for c in conditions], conditions,
              fontsize=8, frameon=False, loc="upper right")
    test_name = pair_tests["test"].iloc[0] if len(pair_tests) else ""
    ax.set_title(f"stars: {conditions[0]} vs each patient group, {test_name}", fontsize=9)
    fig.suptitle(title, fontsize=11)
    _footer(fig, caption)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_status_de(de: pd.DataFrame, out: str, *, title: str, caption: str, conditions) -> None:
    """5c / 5d per-status DE dot plot: one row per state x patient status, one column per gene.

    de: one compartment's rows of ``status_de.tsv`` (state, gene, group, log2fc, p_adj, note).
    Colour = log2 fold change vs the first condition (clipped at +-3), size = -log10 adjusted p
    (capped at 10), black edge = adjusted p < 0.05; comparisons not computed are grey crosses.
    """
    genes = list(dict.fromkeys(de["gene"]))
    rows = [(s, c) for s in sorted(de["state"].unique()) for c in conditions[1:]
            if ((de["state"] == s) & (de["group"] == c)).any()]
    fig, ax = plt.subplots(figsize=(max(11.0, 0.6 * len(genes) + 8), max(4.5, 0.42 * len(rows) + 3)))
    fig.subplots_adjust(left=0.3, right=0.8, bottom=0.32, top=0.9)
    norm = matplotlib.colors.Normalize(-3, 3)
    cmap = plt.get_cmap("RdBu_r")
    for i, (s, c) in enumerate(rows):
        d = de[(de["state"] == s) & (de["group"] == c)].set_index("gene")
        for j, g in enumerate(genes):
            if g not in d.index:
                continue
            r = d.loc[g]
            if not np.isfinite(pd.to_numeric(r.get("p_adj"), errors="coerce")):
                ax.scatter(j, i, marker="x", s=25, color="grey")
                continue
            size = 15 + 25 * min(10.0, -np.log10(max(float(r["p_adj"]), 1e-300)))
            ax.scatter(j, i, s=size, color=cmap(norm(np.clip(float(r["log2fc"]), -3, 3))),
                       edgecolors="k" if r["p_adj"] < 0.05 else "none", linewidths=0.8)
    ax.set_xticks(range(len(genes)), genes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{s} | {c} vs {conditions[0]}" for s, c in rows], fontsize=8)
    ax.set_xlim(-0.6, len(genes) - 0.4)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.04, pad=0.02, label="log2 fold change")
    for v in (1, 5, 10):
        ax.scatter([], [], s=15 + 25 * v, color="grey", label=f"adj. p 1e-{v}")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.15, 1.0), labelspacing=1.6)
    ax.set_title(title, fontsize=10)
    _footer(fig, caption)
    fig.savefig(out, dpi=110)
    plt.close(fig)
