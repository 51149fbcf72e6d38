from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Figure 4b from a tidy confusion table."""
import pandas as pd

from concerto_workflow import plotting

sm = snakemake  # noqa: F821
wc = sm.wildcards
plotting.plot_confusion(pd.read_csv(sm.input[0], sep="\t", dtype={"true": str, "predicted": str}),
                        sm.output[0], f"{wc.dataset}: {wc.method} label transfer, HVGs {wc.hvg} (cf. Fig 4b)")
