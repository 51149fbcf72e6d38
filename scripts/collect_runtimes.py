from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Merge every Snakemake benchmark file into one table (benchmark-as-data) and plot it next to
each method's own compute time from the score tables."""
from concerto_workflow import figures, runtimes, tables

sm = snakemake  # noqa: F821
df = runtimes.collect(sm.params.benchmark_dir)
df.to_csv(sm.output.table, sep="\t", index=False)
scores = tables.concat(list(sm.input))
methods = scores[(scores["metric"] == "runtime_s") & (scores["status"] == "ok")]
figures.plot_runtimes(df, methods, sm.output.figure)
print(df.to_string(), flush=True)
