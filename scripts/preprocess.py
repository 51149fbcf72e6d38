from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Integration: one training set of all cells. Mapping: reference/query split."""
import anndata as ad

from concerto_workflow import preprocessing as pp

sm = snakemake  # noqa: F821
cfg = sm.params.pp
common = dict(min_genes=cfg["min_genes"], min_cells=cfg["min_cells"], target_sum=cfg["target_sum"],
              n_top_genes=pp.parse_hvg(sm.wildcards.hvg), flavor=cfg["hvg_flavor"])
raw = ad.read_h5ad(sm.input[0])
if sm.rule == "preprocess_integration":
    out = pp.preprocess_integration(raw, **common)
    print(out, flush=True)
    out.write_h5ad(sm.output[0])
else:
    ref, query = pp.preprocess_mapping(raw, query_key=sm.params.query["key"],
                                       query_value=sm.params.query["value"], **common)
    print("reference:", ref, "\nquery:", query, flush=True)
    ref.write_h5ad(sm.output.reference)
    query.write_h5ad(sm.output.query)
