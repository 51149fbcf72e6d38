"""The method comparison table (figure type ``table``): one row per experiment and metric, one
column per method, every value computed from the run's score tables.

Experiments that share a dataset and a split form one row: a mapping experiment (Concerto,
Symphony, scArches, kNN on PCA through the shared k-NN vote) and the classifier experiment on
the same reference and query (Seurat v4, SingleR, logistic regression, ...) are one comparison.
A cell holds the mean over folds and seeds (± their standard deviation when there are several);
per-setting metrics are summarised per fold first: clustering metrics at each method's best
resolution, other per-setting metrics (per-feature Pearson r) by their mean. A method that did
not run shows ``not run`` with a numbered reason; a method the row's experiments do not list
shows ``–``. The best method of each row (controls excluded, direction from the metric
registry) is in bold.

``python -m concerto_workflow.comparison results/tables/<figure>.tsv --write README.md``
puts the table of a finished run into the README between the markers below.
"""
from __future__ import annotations

import argparse
import sys
import textwrap

import numpy as np
import pandas as pd

from .columns import OK
from .coverage import replace_block, write_block
from .figures import CONTROL_KINDS
from .scoring import higher_is_better

#: methods that are bounds rather than competitors (the paper-style linear / neighbour baselines)
BOUNDS = {"logreg": "logistic regression on PCA", "logreg_expr": "logistic regression on expression",
          "pca": "kNN on PCA (map/annotate); PCA (embed, cluster)"}
#: long-format columns of the comparison (the .tsv the workflow writes)
COLUMNS = ["row", "dataset", "split", "task", "metric", "summary", "method", "kind", "role", "n", "mean",
           "sd", "status", "reason"]
BEGIN, END = "<!-- real-data-comparison:begin -->", "<!-- real-data-comparison:end -->"


def _role(method: str, kind: str, focus: str) -> str:
    if method == focus:
        return "focus"
    if kind in CONTROL_KINDS:
        return "control"
    return "bound" if method in BOUNDS else "competitor"


def _summarise_settings(d: pd.DataFrame, task: str) -> tuple[pd.Series, str]:
    """One value per (experiment, fold, preprocessing, seed) of one method and metric."""
    keys = ["experiment", "fold", "preprocessing", "seed"]
    if (d["setting"].astype(str) == "").all():
        return d.groupby(keys)["value"].mean(), ""
    if task == "cluster":
        return d.groupby(keys)["value"].max(), "best resolution"
    return d.groupby(keys)["value"].mean(), "mean over settings"


def comparison(df: pd.DataFrame, metrics: list[str], *, focus: str = "concerto") -> pd.DataFrame:
    """Long table (:data:`COLUMNS`) from the concatenated score tables of the experiments."""
    out = []
    df = df.assign(setting=df["setting"].fillna("").astype(str))
    for (dataset, split), g in df.groupby(["dataset", "split"], sort=False):
        row = " + ".join(dict.fromkeys(g["experiment"]))
        for metric in metrics:
            m = g[g["metric"] == metric]
            if m.empty:
                continue
            for method, r in m.groupby("method", sort=False):
                ok = r[(r["status"] == OK) & r["value"].notna()]
                task = r["task"].iloc[0]
                rec = dict(row=row, dataset=dataset, split=split, task=task, metric=metric, summary="",
                           method=method, kind=r["kind"].iloc[0], role=_role(method, r["kind"].iloc[0], focus),
                           n=0, mean=np.nan, sd=np.nan, status=OK, reason="")
                bad = r[r["status"] != OK]
                if not bad.empty:
                    rec.update(status=bad["status"].iloc[0], reason=str(bad["reason"].iloc[0]))
                if not ok.empty:
                    values, rec["summary"] = _summarise_settings(ok, task)
                    rec.update(n=int(len(values)), mean=float(values.mean()),
                               sd=float(values.std(ddof=1)) if len(values) > 1 else np.nan)
                    if not bad.empty:      # some folds ran, others did not
                        rec["reason"] = f"{bad[['fold', 'seed']].drop_duplicates().shape[0]} runs not done: " \
                                        + rec["reason"]
                        rec["status"] = OK
                out.append(rec)
    return pd.DataFrame(out, columns=COLUMNS)


def method_columns(long: pd.DataFrame) -> list[str]:
    """Focus method, competitors, bounds, controls; each group in table order."""
    order = {"focus": 0, "competitor": 1, "bound": 2, "control": 3}
    first = long.drop_duplicates("method")[["method", "role"]]
    return sorted(first["method"], key=lambda m: order[first.set_index("method").loc[m, "role"]])


def _best(rows: pd.DataFrame, metric: str) -> set[str]:
    cand = rows[(rows["role"] != "control") & rows["mean"].notna()]
    if cand.empty or higher_is_better(metric) is None:
        return set()
    target = cand["mean"].max() if higher_is_better(metric) else cand["mean"].min()
    return set(cand.loc[np.isclose(cand["mean"], target), "method"])


def _cell(r, best: bool, notes: dict) -> str:
    if r.status == OK and not np.isfinite(r.mean):
        return "undefined"          # e.g. a silhouette with one label
    if r.status != OK and not np.isfinite(r.mean):
        key = f"{r.status}: {r.reason}"
        notes.setdefault(key, len(notes) + 1)
        return f"not run [{notes[key]}]"
    text = f"{r.mean:.3f}" + (f" ± {r.sd:.3f}" if np.isfinite(r.sd) else "")
    if r.reason:                    # ran on some folds only
        notes.setdefault(r.reason, len(notes) + 1)
        text += f" [{notes[r.reason]}]"
    return f"**{text}**" if best else text


def _metric_label(metric: str, summary: str) -> str:
    better = higher_is_better(metric)
    arrow = "" if better is None else (" ↑" if better else " ↓")
    return f"{metric}{arrow}" + (f" ({summary})" if summary else "")


def grid(long: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Wide table of cell texts (rows: experiment x metric; columns: methods) and the notes
    {reason: number} its cells refer to."""
    methods = method_columns(long)
    notes: dict = {}
    recs = []
    for (row, metric), r in long.groupby(["row", "metric"], sort=False):
        best = _best(r, metric)
        cells = {x.method: _cell(x, x.method in best, notes) for x in r.itertuples()}
        summary = next((s for s in r["summary"] if s), "")
        recs.append({"experiment": row, "metric": _metric_label(metric, summary),
                     **{m: cells.get(m, "–") for m in methods}})
    return pd.DataFrame(recs, columns=["experiment", "metric", *methods]), notes


def _header(m: str, role: str) -> str:
    return {"focus": f"**{m}**", "bound": f"{m} (bound)", "control": f"{m} (control)"}.get(role, m)


def to_markdown(long: pd.DataFrame, *, source: str = "") -> str:
    """The comparison as a markdown table plus its notes (reasons a method did not run)."""
    if long.empty:
        return "(no scores)"
    wide, notes = grid(long)
    roles = long.drop_duplicates("method").set_index("method")["role"]
    header = ["experiment", "metric", *(_header(m, roles[m]) for m in wide.columns[2:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in rec) + " |" for rec in wide.itertuples(index=False)]
    lines.append("")
    lines.append("Mean over folds (± sd when several); ↑ higher / ↓ lower is better; **bold** = best "
                 "non-control method of the row; – = not configured for that experiment. Bounds: "
                 + "; ".join(f"`{m}` = {d}" for m, d in BOUNDS.items() if m in roles.index) + ".")
    for reason, i in notes.items():
        lines.append(f"[{i}] {textwrap.shorten(reason, 220)}  ")
    if source:
        lines.append("")
        lines.append(source)
    return "\n".join(lines)


def draw(long: pd.DataFrame, out: str, *, title: str) -> None:
    """The comparison as a figure: per row, cells shaded by rank among the methods that ran
    (darker = better, direction-aware), the value printed; not-run cells grey with their note."""
    import matplotlib.pyplot as plt

    from .figures import _save

    wide, notes = grid(long)
    methods = list(wide.columns[2:])
    shade = np.full(wide.shape[0:1] + (len(methods),), np.nan)
    for i, ((row, metric), r) in enumerate(long.groupby(["row", "metric"], sort=False)):
        vals = r.set_index("method")["mean"].reindex(methods).to_numpy(dtype=float)
        ok = np.isfinite(vals)
        if ok.sum() > 1 and higher_is_better(metric) is not None:
            v = vals if higher_is_better(metric) else -vals
            lo, hi = np.nanmin(v), np.nanmax(v)
            shade[i, ok] = (v[ok] - lo) / (hi - lo) if hi > lo else 1.0
    fig, ax = plt.subplots(figsize=(2.0 + 1.25 * len(methods), 0.9 + 0.42 * len(wide)))
    ax.imshow(np.where(np.isfinite(shade), shade, np.nan), cmap="Greens", vmin=-0.3, vmax=1.3, aspect="auto")
    for (i, j), _ in np.ndenumerate(shade):
        text = str(wide.iloc[i, j + 2]).replace("**", "")
        ax.text(j, i, text.replace(" ± ", "\n± "), ha="center", va="center", fontsize=6.5,
                color="0.45" if text.startswith(("not run", "–")) else "black",
                fontweight="bold" if str(wide.iloc[i, j + 2]).startswith("**") else "normal")
    roles = long.drop_duplicates("method").set_index("method")["role"]
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([_header(m, roles[m]).replace("**", "") for m in methods], rotation=35, ha="right",
                       fontsize=7)
    ax.set_yticks(range(len(wide)))
    ax.set_yticklabels([f"{e}\n{m}" for e, m in zip(wide["experiment"], wide["metric"])], fontsize=6.5)
    ax.set_xticks(np.arange(len(methods)) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(wide)) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    fig.suptitle(textwrap.fill(title, 150), fontsize=9)
    note = "\n".join(f"[{i}] {textwrap.shorten(r, 160)}" for r, i in notes.items())
    if note:
        fig.text(0.01, -0.01, note, ha="left", va="top", fontsize=6, color="0.25")
    fig.tight_layout()
    _save(fig, out)


def read(path: str) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values={"mean": ["", "NaN", "nan"],
                                                                          "sd": ["", "NaN", "nan"]})


def update_readme(text: str, markdown: str) -> str:
    return replace_block(text, BEGIN, END, markdown)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Print a run's comparison table as markdown, or write it into the "
                                            "README's real-data-comparison block.")
    p.add_argument("table", help="results/tables/<figure>.tsv of a finished run")
    p.add_argument("--write", metavar="README", help="replace the comparison block of this file")
    p.add_argument("--note", default="", help="a line under the table (e.g. the command and wall time of the run)")
    a = p.parse_args(argv)
    md = to_markdown(read(a.table), source=a.note)
    if a.write:
        write_block(a.write, BEGIN, END, md)
    else:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
