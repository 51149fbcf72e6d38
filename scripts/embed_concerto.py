from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Embed the experiment's cells with the trained Concerto (teacher, direct inference)."""
from concerto_workflow import concerto_runner

sm = snakemake  # noqa: F821
if sm.rule == "embed_concerto_integration":
    concerto_runner.embed_integration(sm.input.model, sm.input.cells, sm.output[0], log_path=sm.log[0], threads=sm.threads)
else:
    concerto_runner.embed_mapping(sm.input.model, sm.input.reference, sm.input.query, sm.output[0],
                                  log_path=sm.log[0], threads=sm.threads)
