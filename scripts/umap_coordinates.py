from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""2-d UMAP coordinates of the embeddings of several methods on one fold, one table (column
'method'; a 'not run' row for a method without an embedding)."""
from concerto_workflow import figures, outputs

sm = snakemake  # noqa: F821
tables = [outputs.read_output(p, sm.params.task) for p in sm.input]
figures.umap_tables(tables, n_neighbors=sm.params.n_neighbors, seed=sm.params.seed).to_csv(
    sm.output[0], sep="\t", index=False)
