from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""COVID experiment, step 2: exhausted CD8 T / HLA-DR-low monocytes, percentages, tests, DE."""
import anndata as ad

from concerto_workflow import covid

sm = snakemake  # noqa: F821
p = sm.params.cfg
tables = covid.analyse(ad.read_h5ad(sm.input[0]), p)
for name, df in tables.items():
    df.to_csv(getattr(sm.output, name), sep="\t", index=False)
t = tables["tests"]
print(t[t["p"] < 0.05].to_string(), flush=True)
