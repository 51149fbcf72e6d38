from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Bars, box, heatmap, lines, sweep or log-log figure from the collected score tables of its experiments."""
from concerto_workflow import figures, splits, tables

sm = snakemake  # noqa: F821
f = sm.params.figure
df = figures.with_paper_methods(tables.concat(list(sm.input)), f["paper_methods"])
df["fold_group"] = df["fold"].astype(str).map(splits.fold_group)
if f["relative_to"]:
    df = figures.gain_over(df, f["relative_to"])
draw = {"bars": figures.plot_bars, "box": figures.plot_box, "heatmap": figures.plot_heatmap,
        "lines": figures.plot_lines, "sweep": figures.plot_sweep, "loglog": figures.plot_loglog}[f["type"]]
kwargs = dict(metrics=f["metrics"], title=f["title"])
if f["type"] in ("bars", "heatmap"):
    kwargs["x"] = f["x"]
if f["type"] == "sweep":
    kwargs["sweeps"] = f["sweeps"]
draw(df, sm.output[0], **kwargs)
