"""Route a rule script's output and log records into the rule's log file."""
from __future__ import annotations

import logging
import os
import sys


def redirect_output(log_path: str) -> None:
    """Send stdout and stderr of this process (and of its children and of C libraries such as
    TensorFlow, which write to fd 1/2 directly) to ``log_path``, and configure ``logging`` so
    every module's ``log.info`` lands there too.

    Called as the first line of every rule script, so a failing rule always leaves its
    traceback in the log Snakemake points at.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    fh = open(log_path, "a", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = fh
    sys.stderr = fh
    logging.basicConfig(level=logging.INFO, stream=fh, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
