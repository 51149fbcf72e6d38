from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Integration metrics (kBET, ASW) and UMAP coordinates of one method's embedding."""
from concerto_workflow import embedding_io, metrics, plotting, tables

sm = snakemake  # noqa: F821
wc, m = sm.wildcards, sm.params.metrics
a = embedding_io.read_embedding(sm.input[0])
names = list(m["integration"])
if a.uns["status"] == "ok":
    values = metrics.integration_metrics(a, names, dict(
        k=m["kbet_k"], alpha=m["kbet_alpha"], max_cells=m["asw_max_cells"] or None,
        n_jobs=1, seed=sm.params.seed))  # joblib workers would re-import pegasus: slower
    df = tables.rows(wc.dataset, "integration", wc.hvg, wc.method, values, log=a.uns["log"])
else:
    df = tables.rows(wc.dataset, "integration", wc.hvg, wc.method, {}, status=a.uns["status"],
                     log=a.uns["log"], reason=a.uns["reason"], metrics=names)
tables.write(df, sm.output.metrics)
plotting.umap_table(a, n_neighbors=sm.params.umap["n_neighbors"], seed=sm.params.seed).to_csv(
    sm.output.umap, sep="\t", index=False)
print(df.to_string(), flush=True)
