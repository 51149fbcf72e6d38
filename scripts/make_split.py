from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Assign each cell a role (train / valid / test) per fold of the experiment's split."""
import anndata as ad

from concerto_workflow import splits

sm = snakemake  # noqa: F821
split = dict(sm.params.split)
obs = ad.read_h5ad(sm.input.raw, backed="r").obs
query_obs = ad.read_h5ad(sm.input.query_raw, backed="r").obs if "query_raw" in sm.input.keys() else None
table = splits.make_split(split, obs, sm.params.dataset, seed=sm.params.seed, query_obs=query_obs,
                          query_dataset=split.get("query_dataset"))
print(splits.summary(table).to_string(), flush=True)
table.to_csv(sm.output.table, sep="\t", index=False)
