from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Stand-in simulation, or conversion of a downloaded / local / converted real h5ad, -> common schema."""
from concerto_workflow import datasets
from concerto_workflow.columns import COUNTS_LAYER

sm = snakemake  # noqa: F821
cfg = sm.params.cfg
if cfg["source"] == "standin":
    a = datasets.make_standin(sm.params.name, dict(cfg.get("standin", {})))
else:
    columns = {k: v for k, v in cfg[cfg["source"]].items() if k not in ("url", "path", "source_id")}
    if cfg["source"] == "download":   # converted by rules/download.smk: counts in layers['counts']
        columns["counts_layer"] = COUNTS_LAYER
    a = datasets.convert_real(sm.input[0], **columns)
print(a, flush=True)
print(a.obs["tech"].value_counts().to_string(), flush=True)
a.write_h5ad(sm.output[0])
