from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Attention heatmaps and the top-attention vs top-DE overlap (paper Fig 3d) from their tables."""
import pandas as pd

from concerto_workflow import figures

sm = snakemake  # noqa: F821
read = lambda path: pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])  # noqa: E731
figures.plot_attention(read(sm.input.markers), read(sm.input.overlap), sm.output[0],
                       title=sm.params.figure["title"])
