from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""One source's downloaded (and local) files -> the standard schema (converters.convert)."""
import logging
import os

from concerto_workflow import converters
from concerto_workflow.sources import REPO

logging.basicConfig(level=logging.INFO)
sm = snakemake  # noqa: F821
missing = {role: p for role, p in sm.params.files.items() if not os.path.exists(p)}
if missing:   # files behind a sign-in or an access agreement: named before anything is read
    raise FileNotFoundError(f"source {sm.params.name!r} needs {missing}, which the workflow cannot "
                            f"download; see config/sources.yaml: {sm.params.notes}")
a = converters.convert(dict(sm.params.files), dict(sm.params.spec), name=sm.params.name,
                       workdir=os.path.join(os.path.dirname(sm.output[0]), "extracted"), repo=REPO)
print(a, flush=True)
a.write_h5ad(sm.output[0])
