from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""UMAP grid (one row per method) from the UMAP coordinate tables."""
from pathlib import Path

import pandas as pd

from concerto_workflow import figures

sm = snakemake  # noqa: F821
f = sm.params.figure
tabs = {Path(p).parent.name: pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False).astype(
    {"umap1": float, "umap2": float}, errors="ignore") for p in sm.input}
for t in tabs.values():
    t[["umap1", "umap2"]] = t[["umap1", "umap2"]].apply(pd.to_numeric, errors="coerce")
tabs.update(figures.not_configured_table(f["paper_methods"], tabs))
figures.plot_umap_grid(tabs, sm.output[0], color_by=f["color_by"], title=f["title"])
