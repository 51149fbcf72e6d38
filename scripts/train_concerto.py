from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Pretrain Concerto on the fold's training cells (failures fail the run)."""
import anndata as ad

from concerto_workflow.methods import concerto

sm = snakemake  # noqa: F821
concerto.train(ad.read_h5ad(sm.input[0]), sm.output[0], seed=int(sm.wildcards.seed), threads=sm.threads,
               **dict(sm.params.train))
