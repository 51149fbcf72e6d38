from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Scale benchmark summary (benchmarks/bench_scale.py --output) -> one figure: seconds,
cells/s and peak RSS per phase, drawn as the tidy table the bar figure type takes."""
import json
from pathlib import Path

import pandas as pd

from concerto_workflow import figures

sm = snakemake  # noqa: F821
s = json.loads(Path(sm.input.summary).read_text())
# phase names without their parenthesised notes keep the legend clear of the title
rows = [dict(method=p["phase"].split(" (")[0], kind="method", metric=m, value=p[m], status="ok", reason="",
             cells=str(s["cells"]))
        for p in s["phases"] for m in ("seconds", "cells_per_s", "peak_rss_gib") if m in p]
figures.plot_bars(
    pd.DataFrame(rows), sm.output.figure, x="cells", metrics=["seconds", "cells_per_s", "peak_rss_gib"],
    title=(f"Scale benchmark: {s['cells']:,} reference cells x {s['genes']:,} genes, "
           f"{s['query_cells']:,} query cells\n{s['threads']} threads; "
           f"5-NN mapping accuracy {s['mapping_accuracy']:.3f}"))
print(pd.DataFrame(s["phases"]).to_string(), flush=True)
