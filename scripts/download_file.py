from concerto_workflow.logs import redirect_output; redirect_output(snakemake.log[0])  # noqa: E702,F821
"""Download one file of a source; verified against its published or lock-recorded checksum."""
import logging

from concerto_workflow.download import fetch

logging.basicConfig(level=logging.INFO)
sm = snakemake  # noqa: F821
role, url, checksum = sm.params.spec
fetch(url, sm.output[0], name=sm.params.name, checksum=checksum, lock=sm.params.lock)
print(f"{url} -> {sm.output[0]} ({'published ' + checksum.algorithm if checksum else 'lock-file sha256'} verified)")
