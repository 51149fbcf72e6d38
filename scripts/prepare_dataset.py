from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Stand-in simulation, conversion of a downloaded / local / converted real h5ad, or the
concatenation of other prepared datasets -> common schema."""
import anndata as ad

from concerto_workflow import datasets
from concerto_workflow.columns import COUNTS_LAYER

sm = snakemake  # noqa: F821
cfg = sm.params.cfg
if cfg["source"] == "standin":
    a = datasets.make_standin(sm.params.name, dict(cfg.get("standin", {})))
elif cfg["source"] == "concat":     # inputs: the parts' prepared files, in concat.datasets order
    parts = {name: ad.read_h5ad(path) for name, path in zip(cfg["concat"]["datasets"], sm.input)}
    a = datasets.concat_datasets(parts, origin_col=cfg["concat"].get("origin_col", "origin"))
else:
    columns = {k: v for k, v in cfg[cfg["source"]].items() if k not in ("url", "path", "source_id")}
    if cfg["source"] == "download":   # converted by rules/download.smk: counts in layers['counts']
        columns["counts_layer"] = COUNTS_LAYER
    a = datasets.convert_real(sm.input[0], **columns)
print(a, flush=True)
print(a.obs["tech"].value_counts().to_string(), flush=True)
if cfg["source"] == "concat":
    print(a.obs[cfg["concat"].get("origin_col", "origin")].value_counts().to_string(), flush=True)
a.write_h5ad(sm.output[0])
