from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""One competitor in a child process; always writes the embedding file (status inside)."""
from concerto_workflow.methods.runner import run_isolated

sm = snakemake  # noqa: F821
task = "integration" if sm.rule == "integrate_competitor" else "mapping"
status = run_isolated(sm.wildcards.competitor, task, list(sm.input), sm.output[0],
                      params=dict(sm.params.method_params), batch_key="batch",
                      n_comps=sm.params.n_comps, seed=sm.params.seed, threads=sm.threads,
                      log=sm.log[0])
print(f"status: {status}", flush=True)
