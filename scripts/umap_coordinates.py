from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""2-d UMAP coordinates of one method's embedding (a 'not run' row when it has none)."""
from concerto_workflow import figures, outputs

sm = snakemake  # noqa: F821
a = outputs.read_output(sm.input[0], sm.params.task)
figures.umap_table(a, n_neighbors=sm.params.n_neighbors, seed=sm.params.seed).to_csv(
    sm.output[0], sep="\t", index=False)
