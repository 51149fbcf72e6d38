from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Supp A1 from the study's score table (concerto_workflow.ablation_figures)."""
from pathlib import Path

import pandas as pd

from concerto_workflow.ablation_figures import plot_ablation

sm = snakemake  # noqa: F821
plot_ablation(pd.read_csv(sm.input.scores), sm.output[0], caption=Path(sm.params.caption).read_text().strip())
