from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Scalability (paper Fig 4g): the Snakemake benchmark files of the experiments' jobs -> the speed
table (TSV + Markdown) and the log-log figure of wall time and peak memory against cells."""
from concerto_workflow import figures, scalability, tables

sm = snakemake  # noqa: F821
f = sm.params.figure
t = scalability.scalability_table(tables.concat(list(sm.input)), sm.params.benchmark_dir, results_dir="results")
t.to_csv(sm.output.table, sep="\t", index=False)
md = scalability.speed_markdown(t)
with open(sm.output.markdown, "w") as fh:
    fh.write(md + "\n")
print(md, flush=True)
figures.plot_loglog(scalability.as_score_rows(t), sm.output.figure, metrics=["seconds", "peak_memory_mb"],
                    title=f["title"])
