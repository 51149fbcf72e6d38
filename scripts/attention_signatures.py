from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Concerto's attention signatures of one embed output: marker attention per group and the
overlap of each group's top-attention genes with its top DE genes (training cells)."""
import anndata as ad

from concerto_workflow import attention, outputs

sm = snakemake  # noqa: F821
f = sm.params.figure
a = outputs.read_output(sm.input.output, "embed")
cells = ad.read_h5ad(sm.input.cells)
markers = attention.marker_table(a, f["group_by"], f["markers"])
overlap = attention.de_overlap_table(a, cells, f["group_by"], f["n_top"])
markers.to_csv(sm.output.markers, sep="\t", index=False)
overlap.to_csv(sm.output.overlap, sep="\t", index=False)
print(overlap.drop(columns=["attention_top", "de_top"]).to_string(), flush=True)
