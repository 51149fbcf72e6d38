from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Overall comparison of tools (paper Fig 4h) computed from the collected score tables of the run
and the benchmark files of its jobs."""
from concerto_workflow import figures, overall, scalability, tables

sm = snakemake  # noqa: F821
f, facts = sm.params.figure, sm.params.facts
multimodal = [tuple(r) for r in facts["multimodal_runs"]]
scores = tables.concat(list(sm.input))
t = overall.overall_table(scores, f["tools"], resources=scalability.scalability_table(scores, sm.params.benchmark_dir),
                          all_gene_preps=facts["all_gene_preps"], multimodal_runs=multimodal)
t.to_csv(sm.output.table, sep="\t", index=False)
print(t.to_string(), flush=True)
figures.plot_overall(t, sm.output.figure, tools=list(f["tools"]), title=f["title"])
