from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""MGI homology report -> one-to-one ortholog table (columns human, mouse)."""
from concerto_workflow.converters import read_homology_report

sm = snakemake  # noqa: F821
table = read_homology_report(sm.input[0])
print(f"{len(table)} one-to-one human-mouse pairs", flush=True)
table.to_csv(sm.output[0], sep="\t", index=False)
