from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Concatenate the experiment's per-job score tables."""
from concerto_workflow import tables

sm = snakemake  # noqa: F821
df = tables.concat(list(sm.input))
tables.write(df, sm.output[0])
print(df.groupby(["method", "metric"])["value"].mean().unstack().to_string(), flush=True)
