"""Figure types, drawn only from result tables and method outputs (never recomputing results).

One function per figure type of the config (``figures.<name>.type``). Every method an
experiment lists appears: a method that is not installed or failed is drawn as "not run" with
its reason; controls are hatched so they read as bounds, not competitors; repeats (seeds,
folds) are drawn as mean with a standard-deviation error bar; axis labels say which
direction is better.
"""
from __future__ import annotations

import textwrap
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .columns import (BATCH, CELL_TYPE, CLUSTER_SETTINGS, CLUSTERS, CONFIDENCE, EMBEDDING, OK,  # noqa: E402
                      OVER_BUDGET, PREDICTED, ROLE, TEST, VALID)
from .scoring import axis_label  # noqa: E402

UMAP_COLUMNS = ["cell", "umap1", "umap2", "status", "reason", "log"]
CONTROL_KINDS = ("negative_control", "positive_control")
NOT_CONFIGURED = "not configured"
NOT_CONFIGURED_REASON = "compared in the paper's panel; not run by this study (no adapter configured yet)"


def with_paper_methods(df: pd.DataFrame, paper_methods) -> pd.DataFrame:
    """Score rows plus 'not configured' rows (one per experiment, preprocessing and metric) for each
    method the paper compares in the panel that this study did not run."""
    missing = [m for m in paper_methods if m not in set(df["method"])]
    if not missing:
        return df
    base = df.drop_duplicates(["experiment", "preprocessing", "metric"])
    rows = pd.concat([base.assign(method=m, kind="method", fold="", seed="", setting="", value=np.nan,
                                  status=NOT_CONFIGURED, reason=NOT_CONFIGURED_REASON, log="")
                      for m in missing], ignore_index=True)
    return pd.concat([df, rows], ignore_index=True)


def _title_and_note(fig, title: str, df: pd.DataFrame, n_legend_rows: int) -> None:
    """Title wrapped above the panels; the not-run reasons below the legend (never over the axes)."""
    fig.suptitle(textwrap.fill(title, 140), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97 - 0.03 * title.count("\n")))
    note = _not_run_note(df)
    if note:
        fig.text(0.5, -0.06 - 0.05 * n_legend_rows, note, ha="center", va="top", fontsize=7, color="0.25")


def not_configured_table(paper_methods, present) -> dict[str, pd.DataFrame]:
    """'Not run' UMAP tables for the paper's methods that this study does not run."""
    return {m: pd.DataFrame([{"cell": "", "umap1": np.nan, "umap2": np.nan, "status": NOT_CONFIGURED,
                              "reason": NOT_CONFIGURED_REASON, "log": ""}])
            for m in paper_methods if m not in present}


def _save(fig, out: str) -> None:
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _palette(values) -> dict:
    """A distinct colour per category: tab10 up to 10, tab20 up to 20, then tab20 + tab20b +
    tab20c (60 colours; Fig 2h's 24 cell types repeated colours with tab20 alone)."""
    cats = list(dict.fromkeys(values))
    if len(cats) <= 20:
        cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
        return {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
    colours = [plt.get_cmap(n)(i) for n in ("tab20", "tab20b", "tab20c") for i in range(20)]
    return {c: colours[i % len(colours)] for i, c in enumerate(cats)}


def _not_run_note(df: pd.DataFrame) -> str:
    bad = df[df["status"] != OK].drop_duplicates("method")
    return "\n".join(f"{r.method}: not run ({r.status}) — {textwrap.shorten(str(r.reason), 90)}"
                     for r in bad.itertuples())


def _not_run(ax, status: str, reason: str) -> None:
    ax.text(0.5, 0.5, "not run\n" + status + "\n" + "\n".join(textwrap.wrap(str(reason), 40)[:4]),
            ha="center", va="center", fontsize=7, transform=ax.transAxes, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def method_order(df: pd.DataFrame) -> list[str]:
    """Methods first, then controls, each in table order."""
    kinds = df.drop_duplicates("method").set_index("method")["kind"]
    return [m for m in kinds.index if kinds[m] not in CONTROL_KINDS] + \
           [m for m in kinds.index if kinds[m] in CONTROL_KINDS]


# ----------------------------------------------------------------------------- bars / box / heatmap
def bar_panels(df: pd.DataFrame, metrics: list[str], x: str) -> list[tuple[str, str | None]]:
    """(metric, setting) per panel: one per metric, or, when bars are not grouped by setting, one
    per setting of a metric that has settings (e.g. the label pairs of asw_label_pairs), so
    different settings are never averaged into one bar."""
    panels = []
    for metric in metrics:
        settings = [] if x == "setting" or "setting" not in df else list(dict.fromkeys(
            s for s in df.loc[(df["metric"] == metric) & (df["status"] == OK), "setting"].astype(str) if s))
        panels += [(metric, s) for s in settings] or [(metric, None)]
    return panels
def gain_over(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each method's value minus ``baseline``'s on the same experiment, preprocessing, metric, fold,
    seed and setting (the paper's per-tissue gain over SciBet). The baseline's own rows leave the
    table; a row whose baseline did not run keeps its status with a NaN value."""
    keys = ["experiment", "preprocessing", "metric", "fold", "seed", "setting"]
    base = df[(df["method"] == baseline) & (df["status"] == OK)]
    if base.empty:
        raise ValueError(f"relative_to: method {baseline!r} has no successful score rows "
                         f"(methods: {sorted(set(df['method']))})")
    ref = base.drop_duplicates(keys).set_index(keys)["value"].astype(float)
    out = df[df["method"] != baseline].copy()
    matched = ref.reindex(pd.MultiIndex.from_frame(out[keys].astype(object))).to_numpy()
    out["value"] = out["value"].astype(float) - matched
    return out


def panel_columns(n_panels: int, panel_width: float, max_width: float = 20.0) -> int:
    """Panels per row so that a figure stays readable (at most ``max_width`` inches wide); metrics
    listed in pairs (e.g. pegasus kBET beside scib's per-type kBET) keep their pairs on a row."""
    fit = max(1, int(max_width // panel_width))
    if fit >= n_panels:
        return n_panels
    return fit - fit % 2 if fit > 1 and n_panels % 2 == 0 else fit


def plot_bars(df: pd.DataFrame, out: str, *, metrics: list[str], x: str, title: str) -> None:
    """One panel per metric (and setting, see :func:`bar_panels`); bars per method grouped by
    ``x``; mean +- sd over seeds and folds."""
    methods = method_order(df)
    groups = list(dict.fromkeys(df[x].astype(str)))
    kinds = df.drop_duplicates("method").set_index("method")["kind"]
    colors = _palette(methods)
    width = 0.8 / max(1, len(methods))
    panels = bar_panels(df, metrics, x)
    panel_width = max(3.2, 0.35 * len(groups) * len(methods) + 1.2)
    ncols = panel_columns(len(panels), panel_width)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(panel_width * ncols, 3.8 * nrows))
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (metric, setting) in zip(axes.flat, panels):
        d = df[df["metric"] == metric]
        if setting is not None:  # that setting's values; rows of methods that did not run stay
            d = d[(d["setting"].astype(str) == setting) | (d["status"] != OK)]
            ax.set_title(setting, fontsize=9)
        for k, m in enumerate(methods):
            for gi, g in enumerate(groups):
                r = d[(d["method"] == m) & (d[x].astype(str) == g)]
                pos = gi + (k - (len(methods) - 1) / 2) * width
                if r.empty:
                    continue
                if (r["status"] == OK).any():
                    v = r.loc[r["status"] == OK, "value"].astype(float)
                    ax.bar(pos, v.mean(), width, yerr=v.std(ddof=1) if len(v) > 1 else None, capsize=2,
                           color=colors[m], hatch="//" if kinds[m] in CONTROL_KINDS else None,
                           edgecolor="white", linewidth=0)
                else:
                    ax.text(pos, 0.02, f"{m}: not run", rotation=90, fontsize=6, ha="center", va="bottom",
                            color="0.3", transform=ax.get_xaxis_transform())
        ax.set_xticks(range(len(groups)))
        long = max(map(len, groups)) > 12        # e.g. experiment names: slanted, not overlapping
        ax.set_xticklabels(groups, fontsize=8, rotation=25 if long else 0, ha="right" if long else "center")
        ax.set_xlabel(x)
        ax.set_ylabel(axis_label(metric), fontsize=8)
        ax.axhline(0, color="0.5", lw=0.5)
    _legend(fig, methods, colors, kinds)
    _title_and_note(fig, title, df, -(-len(methods) // 5))
    _save(fig, out)


def _legend(fig, methods, colors, kinds) -> None:
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=colors[m], hatch="//" if kinds[m] in CONTROL_KINDS else None,
                             edgecolor="white") for m in methods]
    labels = [m + (" (control)" if kinds[m] in CONTROL_KINDS else "") for m in methods]
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(methods), 5),
               fontsize=7, frameon=False)


def plot_box(df: pd.DataFrame, out: str, *, metrics: list[str], title: str) -> None:
    """One panel per metric: the per-fold (and seed) values of each method as a box with points."""
    methods = method_order(df)
    colors = _palette(methods)
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, figsize=(max(3.5, 0.6 * len(methods) + 1) * len(metrics), 3.8))
    for ax, metric in zip(axes[0], metrics):
        d = df[df["metric"] == metric]
        for i, m in enumerate(methods):
            r = d[d["method"] == m]
            v = r.loc[r["status"] == OK, "value"].dropna().astype(float).to_numpy()
            if len(v):
                ax.boxplot([v], positions=[i], widths=0.6, showfliers=False,
                           medianprops={"color": "black"}, patch_artist=True,
                           boxprops={"facecolor": colors[m], "alpha": 0.6})
                ax.scatter(np.full(len(v), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(v)), v,
                           s=6, color="0.2", zorder=3)
            else:
                ax.text(i, 0.02, "not run", rotation=90, fontsize=7, ha="center", va="bottom", color="0.3",
                        transform=ax.get_xaxis_transform())
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(axis_label(metric), fontsize=8)
    _title_and_note(fig, title, df, 0)
    _save(fig, out)


def plot_heatmap(df: pd.DataFrame, out: str, *, metrics: list[str], x: str, title: str) -> None:
    """Method x ``x`` grid of the mean value of each metric, numbers printed in the cells."""
    methods = method_order(df)
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, figsize=(4 + 0.5 * df[x].nunique(), 0.4 * len(methods) + 1.8))
    for ax, metric in zip(axes[0], metrics):
        d = df[(df["metric"] == metric) & (df["status"] == OK)]
        grid = d.groupby(["method", x])["value"].mean().unstack().reindex(methods)
        im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels([m if m in d["method"].values else f"{m} (not run)" for m in methods], fontsize=7)
        ax.set_xticks(range(grid.shape[1]))
        ax.set_xticklabels(grid.columns, rotation=45, ha="right", fontsize=7)
        for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white")
        fig.colorbar(im, ax=ax, label=axis_label(metric))
    _title_and_note(fig, title, df, 0)
    _save(fig, out)


def setting_positions(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{method: {setting: x}} for one experiment's cluster rows: x = the resolution; a method with
    its own settings (config cluster_settings, e.g. scDeepCluster's numbers of clusters) placed
    by position on the resolutions most methods share, as the paper's Fig 3a pairs them."""
    setting = df["setting"].astype(str).str.strip()
    with_setting = df[df["setting"].notna() & ~setting.isin(["", "nan"])]   # not runtime / memory rows
    own = {m: sorted(set(s.astype(str)), key=float) for m, s in with_setting.groupby("method")["setting"]}
    if not own:
        return {}
    shared = Counter(tuple(s) for s in own.values()).most_common(1)[0][0]
    return {m: dict(zip(s, map(float, shared))) if len(s) == len(shared) and not set(s) <= set(shared)
            else {v: float(v) for v in s} for m, s in own.items()}


def plot_lines(df: pd.DataFrame, out: str, *, metrics: list[str], title: str) -> None:
    """Cluster metrics against resolution: one row of panels per experiment (e.g. Leiden, Louvain),
    one column per metric, one line per method (mean +- sd over seeds and folds); controls dashed.
    A method with its own settings is drawn at the resolutions' positions (:func:`setting_positions`)
    and its legend entry names them."""
    methods = method_order(df)
    kinds = df.drop_duplicates("method").set_index("method")["kind"]
    colors = _palette(methods)
    exps = list(dict.fromkeys(df["experiment"]))
    fig, axes = plt.subplots(len(exps), len(metrics), squeeze=False, sharex=True,
                             figsize=(3.6 * len(metrics), 2.9 * len(exps)))
    paired = {}
    for i, x in enumerate(exps):
        pos = setting_positions(df[(df["experiment"] == x) & (df["status"] == OK)])
        paired.update({m: ", ".join(p) for m, p in pos.items() if any(float(s) != v for s, v in p.items())})
        for ax, metric in zip(axes[i], metrics):
            d = df[(df["experiment"] == x) & (df["metric"] == metric) & (df["status"] == OK)]
            for m in methods:
                r = d[d["method"] == m].assign(res=lambda t: t["setting"].map(pos.get(m, {})))
                if r.empty:
                    continue
                g = r.groupby("res")["value"].agg(["mean", "std"]).reset_index()
                ax.errorbar(g["res"], g["mean"], yerr=g["std"].fillna(0), color=colors[m], marker="o", ms=3,
                            lw=1.2, capsize=2, ls="--" if kinds[m] in CONTROL_KINDS else "-")
            ax.set_title(x, fontsize=8)
            ax.set_ylabel(axis_label(metric), fontsize=8)
            ax.set_xlabel("resolution", fontsize=8)
    _line_legend(fig, df, methods, colors, kinds, {m: f" ({p} at the resolutions)" for m, p in paired.items()})
    _title_and_note(fig, title, df, -(-len(methods) // 5))
    _save(fig, out)


def _line_legend(fig, df: pd.DataFrame, methods, colors, kinds, notes=None) -> None:
    """Legend under a line figure: controls dashed, methods without an ok row marked '(not run)';
    ``notes`` {method: text} appended to its entry."""
    notes = notes or {}
    handles = [plt.Line2D([], [], color=colors[m], marker="o", ls="--" if kinds[m] in CONTROL_KINDS else "-")
               for m in methods]
    ran = set(df.loc[df["status"] == OK, "method"])
    fig.legend(handles, [m + (" (control)" if kinds[m] in CONTROL_KINDS else "") + notes.get(m, "")
                         + ("" if m in ran else " (not run)") for m in methods],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(methods), 5), fontsize=7, frameon=False)


def sweep_table(df: pd.DataFrame, sweeps: dict[str, dict[str, float]], metric: str) -> pd.DataFrame:
    """Tidy rows (sweep, x, method, mean, sd, n) of ``metric``: each experiment's ok values placed at
    the x value its sweep gives it (an experiment may sit in several sweeps, e.g. a shared point)."""
    rows = []
    d = df[(df["metric"] == metric) & (df["status"] == OK)]
    for label, points in sweeps.items():
        for exp, x in points.items():
            for m, v in d[d["experiment"] == exp].groupby("method")["value"]:
                rows.append(dict(sweep=label, x=float(x), method=m, mean=v.mean(), sd=v.std(ddof=1) if len(v) > 1 else 0.0,
                                 n=len(v)))
    return pd.DataFrame(rows, columns=["sweep", "x", "method", "mean", "sd", "n"]).sort_values(["sweep", "method", "x"])


def plot_sweep(df: pd.DataFrame, out: str, *, metrics: list[str], sweeps: dict[str, dict[str, float]],
               title: str) -> None:
    """A metric against the value each experiment stands for (e.g. Splat's de.facScale): one column of
    panels per sweep, one row per metric, one line per method (mean +- sd over folds); controls dashed;
    methods that never ran listed as '(not run)' in the legend, with the reasons in the note."""
    methods = method_order(df)
    kinds = df.drop_duplicates("method").set_index("method")["kind"]
    colors = _palette(methods)
    fig, axes = plt.subplots(len(metrics), len(sweeps), squeeze=False, figsize=(3.8 * len(sweeps), 3.0 * len(metrics)))
    for i, metric in enumerate(metrics):
        t = sweep_table(df, sweeps, metric)
        for ax, label in zip(axes[i], sweeps):
            for m in methods:
                r = t[(t["sweep"] == label) & (t["method"] == m)]
                if not r.empty:
                    ax.errorbar(r["x"], r["mean"], yerr=r["sd"], color=colors[m], marker="o", ms=3, lw=1.2, capsize=2,
                                ls="--" if kinds[m] in CONTROL_KINDS else "-")
            ax.set_xticks(sorted(set(sweeps[label].values())))
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel(axis_label(metric), fontsize=8)
    _line_legend(fig, df, methods, colors, kinds)
    _title_and_note(fig, title, df, -(-len(methods) // 5))
    _save(fig, out)


# ------------------------------------------------------------------------------------- UMAPs
def umap_table(a, *, n_neighbors: int, seed: int) -> pd.DataFrame:
    """2-d UMAP of an output's embedding (scanpy, n_neighbors=15 as in the paper) with its obs."""
    import scanpy as sc

    st, reason = a.uns["status"], a.uns["reason"]
    if st == OK and EMBEDDING not in a.obsm:  # a clustering control, a classifier without a space
        st, reason = "no embedding", "this output has no embedding to draw"
    if st != OK:
        return pd.DataFrame([{"cell": "", "umap1": np.nan, "umap2": np.nan, "status": st,
                              "reason": reason, "log": a.uns["log"]}])
    b = a.copy()
    sc.pp.neighbors(b, n_neighbors=n_neighbors, use_rep=EMBEDDING, random_state=seed)
    sc.tl.umap(b, random_state=seed)
    xy = b.obsm["X_umap"]
    out = pd.DataFrame({"cell": b.obs_names, "umap1": xy[:, 0], "umap2": xy[:, 1], "status": OK, "reason": "",
                        "log": a.uns["log"]})
    for c, v in obs_strings(b.obs).items():
        out[c] = v.to_numpy()
    if CLUSTERS in b.obsm:  # cluster outputs: one column per setting, e.g. clusters_0.4
        for j, s in enumerate(b.uns[CLUSTER_SETTINGS]):
            out[f"clusters_{s}"] = np.asarray(b.obsm[CLUSTERS])[:, j].astype(str)
    return out


_UMAP_CORE = ["cell", "umap1", "umap2", "status", "reason", "log"]


def umap_tables(outputs: list, *, n_neighbors: int, seed: int) -> pd.DataFrame:
    """:func:`umap_table` of several method outputs of one fold in one table (column 'method')."""
    frames = [umap_table(a, n_neighbors=n_neighbors, seed=seed).assign(method=a.uns["method"]) for a in outputs]
    if not frames:
        raise ValueError("umap_tables: no method outputs given (no figure draws a UMAP of this fold)")
    out = pd.concat(frames, ignore_index=True)
    return out[["method"] + [c for c in out.columns if c != "method"]]


def read_umap_tables(path: str, methods: list[str]) -> dict[str, pd.DataFrame]:
    """{method: its UMAP table}, in the order of ``methods``, from a :func:`umap_tables` file;
    the obs columns another method's output had but this one's did not are dropped again."""
    t = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [m for m in methods if m not in set(t["method"])]
    if missing:
        raise KeyError(f"{path} has no UMAP of {missing}; it has {sorted(set(t['method']))}")
    out = {}
    for m in methods:
        one = t[t["method"] == m].drop(columns="method").reset_index(drop=True)
        extra = [c for c in one.columns if c not in _UMAP_CORE and (one[c] == "").all()]
        one = one.drop(columns=extra)
        one[["umap1", "umap2"]] = one[["umap1", "umap2"]].apply(pd.to_numeric, errors="coerce")
        out[m] = one
    return out


#: umap_table's label of the cells a map / annotate output does not predict (the training cells)
NOT_PREDICTED = "(training cell)"


def obs_strings(obs: pd.DataFrame) -> pd.DataFrame:
    """The obs columns as strings for colouring; the predicted label of the cells a map / annotate
    output does not predict (the training cells) reads :data:`NOT_PREDICTED`."""
    out = obs.astype(str)
    if PREDICTED in obs:
        out[PREDICTED] = obs[PREDICTED].astype(object).where(obs[PREDICTED].notna(), NOT_PREDICTED).astype(str)
    return out


def highlight_column(t: pd.DataFrame, spec: str) -> pd.Series:
    """'cell_type=beta' -> 'beta' for those cells, 'other' for the rest (a UMAP colour column)."""
    col, value = spec.split("=", 1)
    return pd.Series(np.where(t[col].astype(str) == value, value, "other"), index=t.index)


def first_column(t: pd.DataFrame, spec: str) -> str:
    """'clusters_0.4|clusters_9' -> the first of these columns ``t`` has (a method with its own cluster
    settings, e.g. scDeepCluster's k = 9 next to the resolution 0.4 of the others)."""
    found = [c for c in spec.split("|") if c in t]
    if not found:
        raise ValueError(f"umap_grid color_by {spec!r}: no such column in this method's UMAP table; it has "
                         f"{[c for c in t.columns if c not in _UMAP_CORE]}")
    return found[0]


def plot_umap_grid(tables: dict[str, pd.DataFrame], out: str, *, color_by: list[str], title: str) -> None:
    """One row per method, one column per obs column coloured ('column=value': that value
    highlighted in red against grey, drawn on top; 'a|b': column a, or b where a table lacks a)."""
    chosen = {m: {c: first_column(t, c) for c in color_by if "|" in c} for m, t in tables.items()
              if (t["status"] == OK).all()}
    tables = {m: t.assign(**{c: highlight_column(t, c) for c in color_by if "=" in c},
                          **{c: t[col] for c, col in chosen[m].items()})
              if m in chosen else t for m, t in tables.items()}
    methods = list(tables)
    fig, axes = plt.subplots(len(methods), len(color_by), figsize=(4 * len(color_by), 3.2 * len(methods)),
                             squeeze=False)
    ok = [t for t in tables.values() if (t["status"] == OK).all()]
    pals = {c: _palette(sorted(set(np.concatenate([t[c].to_numpy() for t in ok if c in t])))) if ok else {}
            for c in color_by}
    for c in color_by:
        if "=" in c:
            pals[c] = {"other": "0.85", c.split("=", 1)[1]: "tab:red"}
        elif NOT_PREDICTED in pals[c]:
            pals[c][NOT_PREDICTED] = "0.85"
    for i, m in enumerate(methods):
        t = tables[m]
        for j, col in enumerate(color_by):
            ax = axes[i, j]
            if not (t["status"] == OK).all():
                _not_run(ax, t["status"].iloc[0], t["reason"].iloc[0])
            else:
                order = np.random.default_rng(0).permutation(len(t))  # no group drawn on top
                if "=" in col:  # ... except the highlighted cells
                    order = order[np.argsort(t[col].to_numpy()[order] != "other", kind="stable")]
                ax.scatter(t["umap1"].to_numpy()[order], t["umap2"].to_numpy()[order], s=2,
                           c=[pals[col][v] for v in t[col].to_numpy()[order]], linewidths=0, rasterized=True)
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{m} — {chosen.get(m, {}).get(col, col).replace('_', ' ')}", fontsize=9)
    for j, col in enumerate(color_by):
        handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in pals[col].items()]
        axes[-1, j].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=2,
                           fontsize=6, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out)


# ----------------------------------------------------------------------------- attention (Fig 3d)
def plot_attention(markers: pd.DataFrame, overlap: pd.DataFrame, out: str, *, title: str) -> None:
    """One heatmap per modality: groups x markers, the mean attention scaled per marker to [0, 1]
    across groups (grey = a marker the model does not have); then, per group, how many of its
    top-attention genes are among its top DE genes, against the overlap of two random sets."""
    mods = list(dict.fromkeys(markers["modality"]))
    widths = [max(2.5, 0.32 * markers.loc[markers["modality"] == m, "marker"].nunique() + 1.5) for m in mods]
    fig, axes = plt.subplots(1, len(mods) + 1, squeeze=False, figsize=(sum(widths) + 4.5, 4.2),
                             gridspec_kw={"width_ratios": widths + [4]})
    cmap = plt.get_cmap("Reds").with_extremes(bad="0.85")
    for ax, m in zip(axes[0], mods):
        t = markers[markers["modality"] == m]
        grid = t.pivot(index="group", columns="marker", values="scaled")
        grid = grid.reindex(columns=list(dict.fromkeys(t["marker"])))
        im = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        missing = set(t.loc[~t["in_model"].astype(bool), "marker"])
        ax.set_xticks(range(grid.shape[1]))
        ax.set_xticklabels([g + (" (not in model)" if g in missing else "") for g in grid.columns],
                           rotation=90, fontsize=7)
        ax.set_yticks(range(grid.shape[0]))
        ax.set_yticklabels(grid.index, fontsize=7)
        raw = t["mean_attention"].astype(float)
        # min-max scaling hides how large the differences are: print the raw range
        ax.set_title(f"{m}: mean attention per group\n(raw means {raw.min():.2g} to {raw.max():.2g})", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05, label="scaled per marker (0 = lowest group, 1 = highest)")
    ax = axes[0, -1]
    if len(overlap):
        o = overlap.sort_values("group")
        y = np.arange(len(o))
        ax.barh(y, o["overlap"], color="tab:red", label="top attention ∩ top DE")
        ax.scatter(o["expected_by_chance"], y, marker="|", s=200, color="black", label="two random sets", zorder=3)
        ax.set_yticks(y)
        ax.set_yticklabels(o["group"], fontsize=7)
        n_top = int(o["n_top"].iloc[0])
        ax.set_xlim(0, n_top)
        ax.set_xlabel(f"shared genes of the top {n_top} (higher = attention agrees with DE)", fontsize=8)
        ax.set_title(f"{o['modality'].iloc[0]}: top-attention vs top DE genes", fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    else:
        _not_run(ax, "no groups", "no group had enough training cells for DE")
    fig.suptitle(textwrap.fill(title, 140), fontsize=9)
    fig.tight_layout()
    _save(fig, out)


# --------------------------------------------------------------------------------- predictions
def confusion_table(a) -> pd.DataFrame:
    """Tidy row-normalised confusion matrix of the test cells: true, predicted, fraction, n."""
    t = (a.obs[ROLE].astype(str) == TEST).to_numpy()
    ct = pd.crosstab(a.obs[CELL_TYPE].astype(str)[t], a.obs[PREDICTED].astype(str)[t])
    frac = ct.div(ct.sum(axis=1), axis=0)
    out = frac.stack().rename("fraction").reset_index()
    out.columns = ["true", "predicted", "fraction"]
    out["n"] = ct.stack().to_numpy()
    return out


def plot_confusion(a, out: str, *, title: str) -> None:
    """Row-normalised confusion matrix with each true class's size on its label."""
    fig, ax = plt.subplots(figsize=(6, 5))
    if a.uns["status"] != OK:
        _not_run(ax, a.uns["status"], a.uns["reason"])
        ax.set_title(title, fontsize=9)
        _save(fig, out)
        return
    conf = confusion_table(a)
    sizes = conf.groupby("true")["n"].sum()
    m = conf.pivot(index="true", columns="predicted", values="fraction").fillna(0.0)
    labels = sorted(set(m.index) | set(m.columns))
    m = m.reindex(index=labels, columns=labels, fill_value=0.0)
    fig.set_size_inches(1.5 + 0.45 * len(labels), 1 + 0.4 * len(labels))
    im = ax.imshow(m.to_numpy(), cmap="YlGnBu", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([f"{lab} (n={int(sizes.get(lab, 0))})" for lab in labels], fontsize=7)
    for (i, j), v in np.ndenumerate(m.to_numpy()):
        if v >= 0.005:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5, color="white" if v > 0.6 else "black")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label (test cells)")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    ax.set_title(title, fontsize=9)
    _save(fig, out)


def plot_densities(outputs: dict, out: str, *, title: str) -> None:
    """Confidence of validation cells (known types) vs test cells (unseen types) per method."""
    methods = list(outputs)
    fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3), squeeze=False, sharey=False)
    bins = np.linspace(0, 1, 26)
    for ax, m in zip(axes[0], methods):
        a = outputs[m]
        if a is None:
            _not_run(ax, NOT_CONFIGURED, NOT_CONFIGURED_REASON)
        elif a.uns["status"] != OK:
            _not_run(ax, a.uns["status"], a.uns["reason"])
        else:
            role = a.obs[ROLE].astype(str).to_numpy()
            conf = a.obs[CONFIDENCE].to_numpy(dtype=float)
            for r, color, label in ((VALID, "tab:blue", "validation (known types)"),
                                    (TEST, "tab:red", "test (unseen types)")):
                if (role == r).any():
                    ax.hist(conf[role == r], bins=bins, density=True, alpha=0.5, color=color, label=label)
            ax.set_xlabel("confidence score")
        ax.set_title(m, fontsize=9)
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend(fontsize=6, frameon=False)
    fig.suptitle(title, fontsize=10, y=1.04)
    _save(fig, out)


# ------------------------------------------------------------------------------------ runtimes
def plot_runtimes(rules: pd.DataFrame, methods: pd.DataFrame, out: str) -> None:
    """Left: wall time per rule (summed over jobs). Right: each method's own compute time
    (seconds inside the method, mean over folds and seeds) per experiment."""
    s = rules.groupby("rule")["s"].sum().sort_values()
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3, 0.3 * max(len(s), methods["method"].nunique() if len(methods) else 1) + 1.5)))
    axes[0].barh(s.index, s.to_numpy(), color="0.4")
    axes[0].set_xlabel("wall time (s, summed over jobs; lower is better)")
    axes[0].set_title("Workflow steps", fontsize=9)
    if len(methods):
        t = methods.groupby(["method", "experiment"])["value"].mean().unstack()
        t.plot.barh(ax=axes[1], width=0.8)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("method compute time (s, log scale; lower is better)")
        axes[1].legend(fontsize=6, frameon=False)
    axes[1].set_title("Methods (their own time, without loading and scoring)", fontsize=9)
    fig.suptitle("Run time of the workflow on this machine", fontsize=10)
    fig.tight_layout()
    _save(fig, out)


# -------------------------------------------------------------------------------------- Sankey
def sankey_table(a) -> pd.DataFrame:
    """Flows of the test cells from true to predicted label: true, predicted, n (n > 0 only)."""
    conf = confusion_table(a)
    return conf.loc[conf["n"] > 0, ["true", "predicted", "n"]].reset_index(drop=True)


def _stack(sizes: pd.Series, gap: float) -> dict:
    """Bottom position of each category in a column of stacked blocks (largest on top)."""
    pos, y = {}, 0.0
    for cat in sizes.sort_values().index:
        pos[cat] = y
        y += sizes[cat] + gap
    return pos


def plot_sankey(a, out: str, *, title: str) -> None:
    """Truth (left) to prediction (right) of one method's test cells; ribbon width = cells."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.set_title(title, fontsize=9)
    if a.uns["status"] != OK:
        _not_run(ax, a.uns["status"], a.uns["reason"])
        _save(fig, out)
        return
    flows = sankey_table(a)
    total = flows["n"].sum()
    gap = 0.02 * total
    left_sizes = flows.groupby("true")["n"].sum()
    right_sizes = flows.groupby("predicted")["n"].sum()
    left, right = _stack(left_sizes, gap), _stack(right_sizes, gap)
    colors = _palette(sorted(set(left_sizes.index) | set(right_sizes.index)))
    left_used = {k: 0.0 for k in left}
    right_used = {k: 0.0 for k in right}
    xs = np.linspace(0.1, 0.9, 60)
    ease = (1 - np.cos(np.pi * (xs - 0.1) / 0.8)) / 2            # smooth S-shaped ribbon
    for r in flows.sort_values(["true", "predicted"]).itertuples():
        y0 = left[r.true] + left_used[r.true]
        y1 = right[r.predicted] + right_used[r.predicted]
        left_used[r.true] += r.n
        right_used[r.predicted] += r.n
        lower = y0 + (y1 - y0) * ease
        ax.fill_between(xs, lower, lower + r.n, color=colors[r.true], alpha=0.45, linewidth=0)
    for side, sizes, pos, x in (("true", left_sizes, left, 0.1), ("predicted", right_sizes, right, 0.9)):
        for cat, n in sizes.items():
            ax.add_patch(plt.Rectangle((x - 0.02 if side == "true" else x, pos[cat]), 0.02, n,
                                       color=colors[cat]))
            ax.text(x - 0.03 if side == "true" else x + 0.03, pos[cat] + n / 2, f"{cat} ({int(n)})",
                    ha="right" if side == "true" else "left", va="center", fontsize=7)
    ax.text(0.1, -0.04, "true label", ha="center", va="top", fontsize=8, transform=ax.transAxes)
    ax.text(0.9, -0.04, "predicted label", ha="center", va="top", fontsize=8, transform=ax.transAxes)
    ax.set_xlim(-0.35, 1.35)
    ax.set_ylim(-gap, max(sum(left_sizes) + gap * len(left_sizes), sum(right_sizes) + gap * len(right_sizes)))
    ax.axis("off")
    _save(fig, out)


# ------------------------------------------------------------------------------------- log-log
def scaling_exponents(df: pd.DataFrame, metric: str, *, size_metric: str = "n_cells") -> pd.Series:
    """Per method, the slope of log(metric) against log(cells): 1 = linear scaling."""
    ok = df[df["status"] == OK]
    keys = ["experiment", "fold", "preprocessing", "method", "seed"]
    wide = ok[ok["metric"].isin([metric, size_metric])].pivot_table(
        index=keys, columns="metric", values="value", aggfunc="first").dropna()
    slopes = {}
    for method, g in wide.groupby(level="method"):
        g = g[(g[metric] > 0) & (g[size_metric] > 0)]
        if g[size_metric].nunique() >= 2:
            slopes[method] = float(np.polyfit(np.log(g[size_metric]), np.log(g[metric]), 1)[0])
    return pd.Series(slopes, name=f"{metric} exponent", dtype=float)


def over_budget_sizes(df: pd.DataFrame, *, size_metric: str = "n_cells") -> dict[str, list[float]]:
    """method -> the sizes (cells of the fold: any row giving them, e.g. the methods that finished
    there) at which it was stopped at the experiment's time budget."""
    ok = df[(df["metric"] == size_metric) & df["value"].notna()]
    size = ok.groupby(["experiment", "fold", "preprocessing"])["value"].max()
    over = df[df["status"] == OVER_BUDGET].drop_duplicates(["experiment", "fold", "preprocessing", "method"])
    out: dict[str, list[float]] = {}
    for r in over.itertuples():
        key = (r.experiment, r.fold, r.preprocessing)
        if key in size.index:
            out.setdefault(r.method, []).append(float(size[key]))
    return out


def plot_loglog(df: pd.DataFrame, out: str, *, metrics: list[str], title: str,
                size_metric: str = "n_cells") -> None:
    """One panel per resource metric against the number of cells, log-log, a line per method
    (mean over seeds); the fitted scaling exponent is in the legend. A method stopped at the time
    budget is a triangle at the top of the panel marked '> budget' at that size."""
    methods = method_order(df)
    kinds = df.drop_duplicates("method").set_index("method")["kind"]
    colors = _palette(methods)
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, figsize=(4.2 * len(metrics), 3.8))
    ok = df[df["status"] == OK]
    keys = ["experiment", "fold", "preprocessing", "method", "seed"]
    for ax, metric in zip(axes[0], metrics):
        wide = ok[ok["metric"].isin([metric, size_metric])].pivot_table(
            index=keys, columns="metric", values="value", aggfunc="first").dropna().reset_index()
        slopes = scaling_exponents(df, metric, size_metric=size_metric)
        drawn = []
        for m in methods:
            g = wide[wide["method"] == m] if not wide.empty else wide
            if g.empty:
                continue
            line = g.groupby(size_metric)[metric].agg(["mean", "std"]).reset_index()
            drawn.append(m)
            label = m + (f" (slope {slopes[m]:.2f})" if m in slopes else "")
            ax.errorbar(line[size_metric], line["mean"], yerr=line["std"].fillna(0), marker="o", ms=3,
                        capsize=2, color=colors[m], ls="--" if kinds[m] in CONTROL_KINDS else "-", label=label)
        stopped = over_budget_sizes(df, size_metric=size_metric)
        if not drawn:   # no method finished: log axes need positive limits to show the marks
            ax.set_ylim(1, 1000)
            sizes = [x for v in stopped.values() for x in v] or [1.0]
            ax.set_xlim(min(sizes) / 2, max(sizes) * 2)
            ax.text(0.5, 0.5, "no method finished within the budget", transform=ax.transAxes, ha="center",
                    fontsize=7, color="0.3")
        for k, (m, sizes) in enumerate(stopped.items()):   # one label line per method, stacked
            ax.scatter(sizes, np.full(len(sizes), 0.96), marker="^", s=30, color=colors[m],
                       transform=ax.get_xaxis_transform(), clip_on=False)
            for x in sizes:
                ax.text(x, 0.9 - 0.05 * k, f"{m} > budget", transform=ax.get_xaxis_transform(), fontsize=5,
                        ha="center", va="top", color=colors[m])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells (log scale)")
        ax.set_ylabel(axis_label(metric) + " (log scale)", fontsize=8)
        ax.legend(fontsize=6, frameon=False)
    _title_and_note(fig, title, df, 0)
    _save(fig, out)


# ------------------------------------------------------------------------- marker maps (Fig 4d)
def plot_feature_umaps(tables: dict[str, pd.DataFrame], values: pd.DataFrame, out: str, *,
                       features: list[str], title: str, missing=()) -> None:
    """One row per method, one column per feature: the method's UMAP coloured by the feature's
    value (minimum dark to maximum yellow, as the paper's heatmaps). ``values``: cells x features
    (:func:`concerto_workflow.marker_maps.feature_values`), or {row: such a table} when the rows
    draw different values (measured vs inferred, Fig 4f; one colour scale per feature then); a
    feature absent from the fold is drawn as such."""
    methods = list(tables)
    per_row = isinstance(values, dict)
    shared = pd.concat(values.values()) if per_row else values
    limits = {f: (np.nanmin(v), np.nanmax(v)) if np.isfinite(v := shared[f].to_numpy(dtype=float)).any()
              else (None, None) for f in features}
    fig, axes = plt.subplots(len(methods), len(features), figsize=(3.3 * len(features), 3 * len(methods)),
                             squeeze=False)
    for i, m in enumerate(methods):
        t = tables[m]
        for j, f in enumerate(features):
            ax = axes[i, j]
            ax.set_title("\n".join(textwrap.wrap(f"{m} — {f}", 42)), fontsize=9)
            if not (t["status"] == OK).all():
                _not_run(ax, t["status"].iloc[0], t["reason"].iloc[0])
                continue
            if f in missing:
                _not_run(ax, "not in this fold", f"{f} is not among the fold's genes / proteins")
                continue
            v = (values[m] if per_row else values)[f].reindex(t["cell"]).to_numpy(dtype=float)
            order = np.argsort(np.nan_to_num(v, nan=-np.inf), kind="stable")  # high values on top
            sc = ax.scatter(t["umap1"].to_numpy()[order], t["umap2"].to_numpy()[order], c=v[order], s=2,
                            cmap="viridis", linewidths=0, rasterized=True,
                            **(dict(zip(("vmin", "vmax"), limits[f])) if per_row else {}))
            fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(textwrap.fill(title, 140), fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def plot_marker_distance(points: dict, correlations: dict, out: str, *, features: list[str], group: str,
                         target: str, title: str) -> None:
    """One row per method, one column per feature: each ``group`` query cell's distance to the
    ``target`` reference centroid (x) against the feature (y), Pearson r and p in the title.
    ``points`` / ``correlations``: method -> table of :mod:`concerto_workflow.marker_maps`, or
    (status, reason) for a method without a result."""
    methods = list(points)
    fig, axes = plt.subplots(len(methods), len(features), figsize=(3.2 * len(features), 2.9 * len(methods)),
                             squeeze=False)
    for i, m in enumerate(methods):
        for j, f in enumerate(features):
            ax = axes[i, j]
            if isinstance(points[m], tuple):
                _not_run(ax, *points[m])
                ax.set_title(f"{m} — {f}", fontsize=8)
                continue
            c = correlations[m].set_index("feature").loc[f]
            if c["missing"]:
                _not_run(ax, "not in this fold", f"{f} is not among the fold's genes / proteins")
                ax.set_title(f"{m} — {f}", fontsize=8)
                continue
            ax.scatter(points[m]["distance"], points[m][f], s=4, color="0.25", linewidths=0, rasterized=True)
            ax.set_title(f"{m} — {f}\nr = {c['r']:.3f}, p = {c['p']:.2g} (n = {int(c['n_cells'])})", fontsize=8)
            ax.set_xlabel(f"distance to {target} centroid", fontsize=7)
            ax.set_ylabel(f"{f} (log-normalised)", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(textwrap.fill(title + f" — {group} query cells", 140), fontsize=10)
    fig.tight_layout()
    _save(fig, out)


# -------------------------------------------------------------------------- overall (Fig 4h)
def plot_overall(table: pd.DataFrame, out: str, *, tools: list[str], title: str) -> None:
    """Criteria x tools from :func:`concerto_workflow.overall.overall_table`: ranked criteria
    coloured by rank (1 = best, dark) with the value printed; capabilities as yes / no; a tool
    without a value in a row is printed 'not run'."""
    criteria = list(dict.fromkeys(table["criterion"]))
    kinds = table.drop_duplicates("criterion").set_index("criterion")["kind"]
    n_tools = max(1, len(tools))
    grid = np.full((len(criteria), len(tools)), np.nan)
    fig, ax = plt.subplots(figsize=(2.2 + 1.5 * len(tools), 0.42 * len(criteria) + 1.6))
    for i, c in enumerate(criteria):
        for j, t in enumerate(tools):
            r = table[(table["criterion"] == c) & (table["tool"] == t)]
            if kinds[c] == "capability":
                text = "yes" if not r.empty and r["value"].iloc[0] > 0 else "no"
            elif r.empty or pd.isna(r["rank"].iloc[0]):
                text = "not run"
            else:
                grid[i, j] = r["rank"].iloc[0]
                v = r["value"].iloc[0]
                text = f"{v:.2f}" if kinds[c] in ("resource", "overall") else f"#{r['rank'].iloc[0]:g} ({v:.3g})"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(grid[i, j]) and grid[i, j] <= (n_tools + 1) / 2 else "black")
    ax.imshow(grid, cmap="viridis_r", vmin=1, vmax=n_tools, aspect="auto")
    ax.set_xticks(range(len(tools)))
    ax.set_xticklabels(tools, fontsize=8)
    ax.set_yticks(range(len(criteria)))
    ax.set_yticklabels(criteria, fontsize=7)
    ax.set_title("rank among the tools (1 = best, dark); resource and overall rows: mean rank", fontsize=8)
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout()
    _save(fig, out)
