from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""COVID experiment, step 1: reference model -> query fine-tuning -> hierarchical mapping; joint UMAP."""
import anndata as ad
import pandas as pd
import scanpy as sc

from concerto_workflow import covid

sm = snakemake  # noqa: F821
p = sm.params.cfg
seed = int(sm.params.seed)
ref = covid.log_normalise(ad.read_h5ad(sm.input.reference))
query = covid.log_normalise(ad.read_h5ad(sm.input.query))
covid.check_query(query, p, f"dataset {p['query']}")   # before the expensive mapping
joint, cache = covid.hierarchical_mapping(ref, query, sm.output.models, level_keys=p["reference_levels"],
                                          batch_key=p["batch_key"], n_top_genes=p["n_top_genes"], k=p["k"],
                                          seed=seed, threads=sm.threads, train=p["train"], finetune=p["finetune"])
print(f"mapped {query.n_obs} query cells onto {ref.n_obs} reference cells; "
      f"{cache.n_built} neighbour indexes (whole reference + one per Level-1 group)", flush=True)
sc.pp.neighbors(joint, use_rep="X_concerto", n_neighbors=sm.params.n_neighbors, random_state=seed)
sc.tl.umap(joint, random_state=seed)
is_q = (joint.obs["dataset"] == covid.QUERY).to_numpy()
levels = [f"level{i}" for i in range(1, len(p["reference_levels"]) + 1)]
umap = pd.DataFrame({"cell": joint.obs["cell"].to_numpy(), "dataset": joint.obs["dataset"].astype(str).to_numpy(),
                     **{lv: joint.obs[lv].astype(str).to_numpy() for lv in levels},
                     "condition": "", "umap1": joint.obsm["X_umap"][:, 0], "umap2": joint.obsm["X_umap"][:, 1]})
umap.loc[is_q, "condition"] = query.obs[p["condition_key"]].astype(str).to_numpy()
umap.to_csv(sm.output.umap, sep="\t", index=False)
# the query on all its genes (log data) with its mapped labels, for the analysis
jq = joint[is_q]
for lv in levels:
    query.obs[lv] = pd.Categorical(jq.obs[lv].astype(str).to_numpy())
    query.obs[f"conf_score_{lv}"] = jq.obs[f"conf_score_{lv}"].to_numpy()
query.obsm["X_concerto"] = jq.obsm["X_concerto"]
query.obsm["X_umap"] = jq.obsm["X_umap"]
query.uns["covid_mapping"] = dict(joint.uns["covid_mapping"])
query.write_h5ad(sm.output.query)
acc = pd.DataFrame(columns=["level", "truth", "n_cells", "accuracy", "n_unseen"])
if p["query_truth"]:
    obs = query.obs.copy()
    for i, key in enumerate(p["reference_levels"], start=1):
        obs.attrs[f"reference_labels_level{i}"] = set(ref.obs[key].astype(str))
    acc = covid.mapping_accuracy(obs, p["query_truth"], levels)
print(acc.to_string(), flush=True)
acc.to_csv(sm.output.accuracy, sep="\t", index=False)
