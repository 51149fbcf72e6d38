from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Pretrain Concerto on the experiment's training cells (failures fail the run)."""
from concerto_workflow import concerto_runner

sm = snakemake  # noqa: F821
concerto_runner.train(sm.input[0], sm.output[0], batch_key=sm.params.batch_key,
                      epochs=sm.params.epochs, batch_size=sm.params.batch_size, seed=sm.params.seed,
                      threads=sm.threads)
