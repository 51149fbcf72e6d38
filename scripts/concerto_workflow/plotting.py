"""Figures, drawn only from result tables (never recomputing results).

Methods whose status is not 'ok' are drawn as a "not run" panel / bar label with
the reason, so a missing competitor is visible rather than silently absent.
"""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

UMAP_COLUMNS = ["cell", "umap1", "umap2", "cell_type", "batch", "status", "reason", "log"]


def umap_table(a, *, n_neighbors: int, seed: int) -> pd.DataFrame:
    """2-d UMAP of an embedding file (scanpy, n_neighbors=15 as in the paper)."""
    import scanpy as sc

    from .embedding_io import EMB_KEY

    st = a.uns["status"]
    if st != "ok":
        return pd.DataFrame([{"cell": "", "umap1": np.nan, "umap2": np.nan, "cell_type": "",
                              "batch": "", "status": st, "reason": a.uns["reason"], "log": a.uns["log"]}],
                            columns=UMAP_COLUMNS)
    b = a.copy()
    sc.pp.neighbors(b, n_neighbors=n_neighbors, use_rep=EMB_KEY, random_state=seed)
    sc.tl.umap(b, random_state=seed)
    xy = b.obsm["X_umap"]
    return pd.DataFrame({"cell": b.obs_names, "umap1": xy[:, 0], "umap2": xy[:, 1],
                         "cell_type": b.obs["cell_type"].astype(str).values,
                         "batch": b.obs["batch"].astype(str).values, "status": "ok", "reason": "",
                         "log": a.uns["log"]}, columns=UMAP_COLUMNS)


def _not_run(ax, status: str, reason: str) -> None:
    ax.text(0.5, 0.5, "not run\n" + status + "\n" + "\n".join(textwrap.wrap(str(reason), 40)[:4]),
            ha="center", va="center", fontsize=7, transform=ax.transAxes, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def _palette(values) -> dict:
    cats = sorted(set(values))
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    return {c: cmap(i % cmap.N) for i, c in enumerate(cats)}


def plot_umap_grid(tables: dict[str, pd.DataFrame], out: str, title: str) -> None:
    """Fig 3e: one row per method, columns coloured by cell type and by batch."""
    methods = list(tables)
    fig, axes = plt.subplots(len(methods), 2, figsize=(8, 3.2 * len(methods)), squeeze=False)
    ok = [t for t in tables.values() if (t["status"] == "ok").all()]
    pals = {col: _palette(np.concatenate([t[col].to_numpy() for t in ok]) if ok else [])
            for col in ("cell_type", "batch")}
    for i, m in enumerate(methods):
        t = tables[m]
        for j, col in enumerate(("cell_type", "batch")):
            ax = axes[i, j]
            if not (t["status"] == "ok").all():
                _not_run(ax, t["status"].iloc[0], t["reason"].iloc[0])
            else:
                order = np.random.default_rng(0).permutation(len(t))  # no batch drawn on top
                ax.scatter(t["umap1"].to_numpy()[order], t["umap2"].to_numpy()[order], s=2,
                           c=[pals[col][v] for v in t[col].to_numpy()[order]], linewidths=0,
                           rasterized=True)
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{m} — {col.replace('_', ' ')}", fontsize=9)
    for j, col in enumerate(("cell_type", "batch")):
        handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in pals[col].items()]
        axes[-1, j].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.05),
                           ncol=2, fontsize=6, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_metric_bars(df: pd.DataFrame, out: str, *, x: str, title: str,
                     metrics: list[str] | None = None) -> None:
    """Fig 3g / 4a: one panel per metric, bars per method grouped by ``x`` (e.g. hvg);
    not-run methods get a labelled empty slot."""
    metrics = metrics or list(dict.fromkeys(df["metric"]))
    methods = list(dict.fromkeys(df["method"]))
    groups = list(dict.fromkeys(df[x].astype(str)))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4, 2 + 1.2 * len(groups) * len(methods) / 2) * len(metrics) / 1.5, 3.6),
                             squeeze=False)
    width = 0.8 / max(1, len(methods))
    colors = _palette(methods)
    for ax, metric in zip(axes[0], metrics):
        d = df[df["metric"] == metric]
        for k, m in enumerate(methods):
            for g_i, g in enumerate(groups):
                r = d[(d["method"] == m) & (d[x].astype(str) == g)]
                pos = g_i + (k - (len(methods) - 1) / 2) * width
                if r.empty:
                    continue
                if r["status"].iloc[0] == "ok":
                    ax.bar(pos, r["value"].iloc[0], width, color=colors[m], label=m if g_i == 0 else None)
                else:
                    ax.text(pos, 0.02, f"{m}: not run ({r['status'].iloc[0]})", rotation=90,
                            fontsize=6, ha="center", va="bottom", color="0.3",
                            transform=ax.get_xaxis_transform())
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{x}={g}" for g in groups], fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.axhline(0, color="0.5", lw=0.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in methods]
    # legend below the panels: a long title never runs under it
    fig.legend(handles, methods, loc="lower center", ncol=min(len(methods), 6), fontsize=7, frameon=False)
    reasons = df[df["status"] != "ok"].drop_duplicates("method")
    note = "; ".join(f"{r.method} not run: {textwrap.shorten(str(r.reason), 70)}" for r in reasons.itertuples())
    fig.suptitle(title + ("\n" + note if note else ""), fontsize=8)
    fig.tight_layout(rect=(0, 0.05 * (1 + (len(methods) - 1) // 6), 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_confusion(conf: pd.DataFrame, out: str, title: str) -> None:
    """Fig 4b: row-normalised confusion matrix (true x predicted)."""
    m = conf.pivot(index="true", columns="predicted", values="fraction").fillna(0.0)
    labels = sorted(set(m.index) | set(m.columns))
    m = m.reindex(index=labels, columns=labels, fill_value=0.0)
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(labels), 1 + 0.4 * len(labels)))
    im = ax.imshow(m.to_numpy(), cmap="YlGnBu", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, label="fraction of true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_runtimes(df: pd.DataFrame, out: str) -> None:
    """Wall time per rule (summed over wildcards) from Snakemake benchmark files."""
    s = df.groupby("rule")["s"].sum().sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(s) + 1))
    ax.barh(s.index, s.to_numpy(), color="0.4")
    ax.set_xlabel("wall time (s, summed over jobs)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
