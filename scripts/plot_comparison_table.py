from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Comparison table (figure type 'table') from the collected score tables: .tsv, .md and .png."""
from concerto_workflow import comparison, figures, tables

sm = snakemake  # noqa: F821
f = sm.params.figure
df = figures.with_paper_methods(tables.concat(list(sm.input.scores)), f["paper_methods"])
long = comparison.comparison(df, f["metrics"], focus=f["method"])
long.to_csv(sm.output.table, sep="\t", index=False)
with open(sm.output.markdown, "w") as fh:
    fh.write(comparison.to_markdown(long) + "\n")
comparison.draw(long, sm.output.figure, title=f["title"])
print(comparison.to_markdown(long), flush=True)
