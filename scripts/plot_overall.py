from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Overall comparison of tools (paper Fig 4h) computed from the collected score tables of the run
and the benchmark files of its jobs."""
from concerto_workflow import figures, overall, scalability, tables
from concerto_workflow.workflow_config import hvg_count, method_params

sm = snakemake  # noqa: F821
f, cfg = sm.params.figure, sm.config
all_gene_preps = [p for p, v in cfg["preprocessing"].items() if hvg_count(v) is None]
multimodal = [(x, m) for x in f["experiments"] for m in cfg["experiments"][x]["methods"]
              if method_params(cfg, x, m).get("second_modality")]
scores = tables.concat(list(sm.input))
t = overall.overall_table(scores, f["tools"], resources=scalability.scalability_table(scores, sm.params.benchmark_dir),
                          all_gene_preps=all_gene_preps, multimodal_runs=multimodal)
t.to_csv(sm.output.table, sep="\t", index=False)
print(t.to_string(), flush=True)
figures.plot_overall(t, sm.output.figure, tools=list(f["tools"]), title=f["title"])
