from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""One fold's cells, normalised, on the genes fitted on its training cells."""
import anndata as ad
import pandas as pd

from concerto_workflow import preprocessing as pp
from concerto_workflow.columns import ROLE

sm = snakemake  # noqa: F821
prep, split = sm.params.prep, dict(sm.params.split)
table = pd.read_csv(sm.input.table, sep="\t", dtype=str)
table = table[table["fold"] == sm.wildcards.fold]
if table.empty:
    raise ValueError(f"fold {sm.wildcards.fold!r} is not in {sm.input.table}")
names = [sm.params.dataset] + ([split["query_dataset"]] if "query_raw" in sm.input.keys() else [])
paths = [sm.input.raw] + ([sm.input.query_raw] if len(names) > 1 else [])
parts, gene_maps = [], {}
for name, path in zip(names, paths):
    raw = ad.read_h5ad(path)
    rows = table[table["dataset"] == name]
    parts.append((name, raw, pd.Series(rows[ROLE].to_numpy(), index=rows["cell"].to_numpy())))
    if name != names[0]:
        gene_maps.update(pp.gene_maps_for(name, raw, split.get("gene_map", {"source": "none"})))
out = pp.preprocess_fold(parts, min_genes=prep["min_genes"], min_cells=prep["min_cells"],
                         target_sum=prep["target_sum"], n_top_genes=pp.parse_hvg(prep["n_top_genes"]),
                         flavor=prep["flavor"], gene_maps=gene_maps, features=prep["features"],
                         proteins=prep["protein_values"])
print(out, flush=True)
out.write_h5ad(sm.output[0])
