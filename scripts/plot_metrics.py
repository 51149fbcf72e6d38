from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Figure 3g (integration metrics) or 4a (mapping accuracy) from a tidy metrics table."""
from concerto_workflow import plotting, tables

sm = snakemake  # noqa: F821
df = tables.read(sm.input[0])
panel = "Fig 3g" if sm.rule == "fig3g_batch_metrics" else "Fig 4a"
plotting.plot_metric_bars(df, sm.output[0], x="hvg", metrics=list(sm.params.metrics),
                          title=f"{sm.wildcards.dataset}: {df['split'].iloc[0]} (cf. paper {panel})")
