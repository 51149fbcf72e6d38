from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Confusion matrix or Sankey diagram of one method, or confidence densities of every method,
from their outputs."""
from pathlib import Path

import anndata as ad

from concerto_workflow import figures

sm = snakemake  # noqa: F821
f = sm.params.figure
outs = {Path(p).parent.name: ad.read_h5ad(p) for p in sm.input}
if f["type"] in ("confusion", "sankey"):
    draw = figures.plot_confusion if f["type"] == "confusion" else figures.plot_sankey
    draw(outs[f["method"]], sm.output[0], title=f"{f['title']}: {f['method']}")
else:
    outs.update({m: None for m in f["paper_methods"] if m not in outs})
    figures.plot_densities(outs, sm.output[0], title=f["title"])
