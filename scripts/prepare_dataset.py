from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Stand-in simulation or conversion of the downloaded real data -> common schema."""
from concerto_workflow import datasets

sm = snakemake  # noqa: F821
cfg = sm.params.cfg
if cfg["source"] == "standin":
    a = datasets.make_standin(sm.params.name, dict(cfg.get("standin", {})))
else:
    r = cfg["real"]
    a = datasets.convert_real(sm.input[0], r["batch_col"], r["label_col"], r["counts_layer"] or None,
                              r["tech_pattern"])
print(a, flush=True)
print(a.obs["tech"].value_counts().to_string(), flush=True)
a.write_h5ad(sm.output[0])
