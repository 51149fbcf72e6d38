from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""k-NN label transfer of the query cells, accuracy and confusion matrix of one method."""
import pandas as pd

from concerto_workflow import embedding_io, metrics, tables

sm = snakemake  # noqa: F821
wc = sm.wildcards
a = embedding_io.read_embedding(sm.input[0])
if a.uns["status"] == "ok":
    pred = metrics.transfer_labels(a, k=sm.params.k)
    df = tables.rows(wc.dataset, "mapping", wc.hvg, wc.method, metrics.mapping_metrics(pred),
                     log=a.uns["log"])
    conf = metrics.confusion(pred)
else:
    pred = pd.DataFrame(columns=["cell", "true", "predicted", "confidence"])
    conf = pd.DataFrame(columns=["true", "predicted", "fraction", "n"])
    df = tables.rows(wc.dataset, "mapping", wc.hvg, wc.method, {}, status=a.uns["status"],
                     log=a.uns["log"], reason=a.uns["reason"], metrics=["accuracy", "macro_f1"])
pred.to_csv(sm.output.predictions, sep="\t", index=False)
conf.to_csv(sm.output.confusion, sep="\t", index=False)
tables.write(df, sm.output.metrics)
print(df.to_string(), flush=True)
