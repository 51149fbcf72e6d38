from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""The experiment's metrics of every method output -> one tidy table (status rows when a method did not run)."""
from concerto_workflow import scoring, tables

sm = snakemake  # noqa: F821
df = scoring.score_outputs(list(sm.input), sm.params.task, list(sm.params.metrics), dict(sm.params.metric_params))
tables.write(df, sm.output[0])
print(df.groupby(["method", "metric"])["value"].mean().unstack().to_string(), flush=True)
