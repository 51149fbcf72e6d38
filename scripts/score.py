from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""The experiment's metrics of one method output -> tidy rows (status rows when it did not run)."""
from concerto_workflow import outputs, scoring, tables
from concerto_workflow.columns import OK
from concerto_workflow.methods import REGISTRY

sm = snakemake  # noqa: F821
a = outputs.read_output(sm.input[0], sm.params.task)
kind = REGISTRY[a.uns["method"]].kind
names = list(sm.params.metrics)
if a.uns["status"] == OK:
    df = tables.rows(a.uns, kind, scoring.score(a, names, dict(sm.params.metric_params)), log=a.uns["log"])
else:
    df = tables.rows(a.uns, kind, {}, status=a.uns["status"], reason=a.uns["reason"], log=a.uns["log"],
                     metrics=names)
tables.write(df, sm.output[0])
print(df.to_string(), flush=True)
