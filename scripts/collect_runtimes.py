from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Merge every Snakemake benchmark file into one table (benchmark-as-data) and plot it."""
from concerto_workflow import plotting, runtimes

sm = snakemake  # noqa: F821
df = runtimes.collect(sm.params.benchmark_dir)
df.to_csv(sm.output.table, sep="\t", index=False)
plotting.plot_runtimes(df, sm.output.figure)
print(df.to_string(), flush=True)
