from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Figure 3e from the UMAP coordinate tables."""
import pandas as pd

from concerto_workflow import plotting

sm = snakemake  # noqa: F821
tabs = {m: pd.read_csv(p, sep="\t", dtype={"cell_type": str, "batch": str}, keep_default_na=False,
                       na_values={"umap1": [""], "umap2": [""]})
        for m, p in zip(sm.params.methods, sm.input)}
plotting.plot_umap_grid(tabs, sm.output[0],
                        f"{sm.wildcards.dataset}: integration, HVGs = {sm.wildcards.hvg} (cf. paper Fig 3e)")
