from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""One method on one fold in a child process; always writes the task's output (status inside)."""
import anndata as ad

from concerto_workflow.methods import RunContext
from concerto_workflow.methods.runner import run_method

sm = snakemake  # noqa: F821
wc, p = sm.wildcards, sm.params
feature_names = ()
if p.task == "impute":
    feature_names = tuple(ad.read_h5ad(sm.input.cells, backed="r").uns.get(f"{p.feature_key}_names", ()))
ctx = RunContext(seed=int(wc.seed), n_comps=p.n_comps, threads=sm.threads,
                 model_dir=sm.input.get("model"), settings=tuple(p.resolutions), feature_key=p.feature_key,
                 cluster_algorithm=p.cluster_algorithm,
                 feature_names=feature_names)
provenance = dict(experiment=wc.experiment, dataset=p.dataset, split=p.split, fold=wc.fold,
                  preprocessing=wc.prep, log=sm.log[0], retry_of=p.previous_failure)
status = run_method(method=wc.method, task=p.task, cells_path=sm.input.cells, output=sm.output[0],
                    provenance=provenance, params=dict(p.method_params), ctx=ctx, knn_k=p.knn_k,
                    time_budget_s=p.time_budget_s)
print(f"status: {status}", flush=True)
