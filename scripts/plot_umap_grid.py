from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""UMAP grid (one row per method) from the UMAP coordinate tables."""
from concerto_workflow import figures

sm = snakemake  # noqa: F821
f = sm.params.figure
tabs = figures.read_umap_tables(sm.input[0], f["umap_methods"])
tabs.update(figures.not_configured_table(f["paper_methods"], tabs))
figures.plot_umap_grid(tabs, sm.output[0], color_by=f["color_by"], title=f["title"])
