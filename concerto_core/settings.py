"""Logging and verbosity of concerto_core: one logger, one handler, one place to configure them.

Every message goes through the ``concerto_core`` logger (never ``print``), which writes
``[concerto] <message>`` lines to stderr. ``set_verbosity`` chooses how much:

* ``"warning"`` (or 0): only warnings and errors;
* ``"info"`` (or 1, the default): what the model does (data, epochs with loss and cells/s,
  embedding throughput) and, on a terminal, a progress bar per epoch;
* ``"debug"`` (or 2): also internals (compiled kernels, BatchNorm statistics passes).

A model built with ``verbose=False`` stays silent whatever the verbosity. Warnings about the
data (unseen sources, value scale) are Python warnings, shown once per call site.
To route messages into your own logging set-up, remove the handler:
``logging.getLogger("concerto_core").handlers.clear()`` and set ``propagate = True``.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "concerto_core"
_LEVELS = {"warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG,
           0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}

log = logging.getLogger(LOGGER_NAME)


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr`` (so redirections and test capture see it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("[concerto] %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _install() -> None:
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
    log.propagate = False  # our handler prints it; the root logger would print it again
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def set_verbosity(level) -> None:
    """``"warning"``/0, ``"info"``/1 (default) or ``"debug"``/2; see the module docstring."""
    key = level.lower() if isinstance(level, str) else level
    if key not in _LEVELS:
        raise ValueError(f"verbosity {level!r}; use 'warning', 'info', 'debug' (or 0, 1, 2)")
    log.setLevel(_LEVELS[key])


def get_verbosity() -> str:
    return {logging.WARNING: "warning", logging.INFO: "info", logging.DEBUG: "debug"}.get(log.level, str(log.level))


def show_progress_bar(verbose: bool) -> bool:
    """A live progress bar only for a verbose model at info level or more on a terminal
    (log files get one line per epoch instead of carriage-return noise)."""
    return bool(verbose) and log.isEnabledFor(logging.INFO) and sys.stderr.isatty()


_install()
