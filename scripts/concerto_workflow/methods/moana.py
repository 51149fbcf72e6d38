"""Moana (Wagner & Yanai 2018; ``moana`` 0.1.1 on PyPI): an annotation competitor of the
paper's Fig 2a / 2b.

Moana's ``CellTypeClassifier`` smooths the training cells (kNN-smoothing with ``k`` neighbours;
k = 1 smooths nothing), scales every cell to the training cells' median transcript count,
Freeman-Tukey transforms, projects on ``d`` principal components and trains a linear nu-SVM
(one-vs-one, classes oversampled to equal size). Query cells are smoothed with as many
neighbours as they need to reach ``min_transcript_frac`` of that median, then projected and
classified.

moana needs numpy < 2, so it runs in its own interpreter (``.venv-moana``, made by ``make
setup`` through ``envs/install_moana.sh``; another one through the environment variable
``MOANA_PYTHON``) on :mod:`.moana_legacy_runner`; the fold travels as an ``.npz`` file.

The fold's values are log-normalised (10,000 per cell, log1p); Moana models transcript counts,
so it is given ``expm1`` of them (counts scaled to 10,000 per cell, not integers; Moana rescales
every cell to the training median anyway). Moana gives labels, not probabilities: the adapter
turns its SVM's one-vs-one decision values into the one-vs-rest scores scikit-learn derives
from them (votes + a confidence in (-1/3, 1/3)) and reports their softmax, with Moana's own
label on top; the confidence thus grows with the winner's lead in pairwise votes.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .annotation import _labels, _softmax, label_on_top
from .shared import scaled_counts

ENV_VAR = "MOANA_PYTHON"
RUNNER = Path(__file__).with_name("moana_legacy_runner.py")
REPO = Path(__file__).resolve().parents[3]
INSTALL_HINT = "run `make setup` or `bash envs/install_moana.sh`, or set MOANA_PYTHON"


def interpreter() -> str:
    """The legacy interpreter that has moana: $MOANA_PYTHON, else <repo>/.venv-moana/bin/python."""
    return os.environ.get(ENV_VAR) or str(REPO / ".venv-moana" / "bin" / "python")


def _legacy_env(threads: int = 1) -> dict:
    """The environment of the legacy interpreter: no PYTHONPATH (the project's numpy 2 must not
    shadow its numpy < 2), no LD_LIBRARY_PATH (rpy2 puts the system library directory first once R
    is loaded in this process, and the interpreter then loads the system's libpython3.11 instead of
    its own: "undefined symbol: _PyModule_Add") and the fold's thread count."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH")}
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def unavailable() -> str | None:
    """None when the legacy interpreter imports moana (through the runner's shims), else what is
    missing and how to install it (the registry's not_installed reason)."""
    python = interpreter()
    if not os.path.exists(python):
        return f"moana's legacy interpreter {python} ({INSTALL_HINT})"
    try:
        proc = subprocess.run([python, str(RUNNER), "--check"], env=_legacy_env(), capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"moana's legacy interpreter {python} does not run: {e} ({INSTALL_HINT})"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"moana in {python} ({tail[0]}; {INSTALL_HINT})"
    return None


def ovo_scores(decision: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) one-vs-rest scores from (n, C(C-1)/2) one-vs-one decision values (pairs (i, j),
    i < j, in order; > 0 votes for i), as scikit-learn's ``decision_function_shape='ovr'``:
    each class's votes plus its summed confidence squashed into (-1/3, 1/3), so the votes decide
    and the confidence only breaks ties."""
    decision = np.asarray(decision, dtype=np.float64).reshape(len(decision), -1)
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    if decision.shape[1] != len(pairs):
        raise ValueError(f"{decision.shape[1]} decision values per cell for {n_classes} classes "
                         f"(one-vs-one needs {len(pairs)})")
    votes = np.zeros((len(decision), n_classes))
    confidence = np.zeros_like(votes)
    for col, (i, j) in enumerate(pairs):
        d = decision[:, col]
        votes[:, i] += d > 0
        votes[:, j] += d <= 0
        confidence[:, i] += d
        confidence[:, j] -= d
    return votes + confidence / (3 * (np.abs(confidence) + 1))


def annotate(train, test, ctx, *, k: int = 1, d: int = 20, nu: float = 0.02,
             min_transcript_frac: float = 0.9, smooth_min_transcripts: float = 500):
    """Moana's ``CellTypeClassifier`` with its own defaults (k, d, nu, min_transcript_frac,
    smooth_min_transcripts) trained on ``train``, ``predict`` on ``test``. Returns (n_test, C)
    probabilities (module docstring), the C classes and the cells in Moana's PC space."""
    params = dict(k=int(k), d=int(d), nu=float(nu), min_transcript_frac=float(min_transcript_frac),
                  smooth_min_transcripts=float(smooth_min_transcripts), seed=int(ctx.seed))
    python = interpreter()
    if not os.path.exists(python):
        raise RuntimeError(f"moana's legacy interpreter {python} is missing ({INSTALL_HINT})")
    with tempfile.TemporaryDirectory(prefix="moana_") as scratch:
        fold, result = os.path.join(scratch, "fold.npz"), os.path.join(scratch, "result.npz")
        np.savez(fold, train_x=scaled_counts(train.X), test_x=scaled_counts(test.X),
                 genes=np.asarray(train.var_names, dtype=str), labels=_labels(train, ctx).astype(str))
        proc = subprocess.run([python, str(RUNNER), fold, result, json.dumps(params)], env=_legacy_env(ctx.threads),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(proc.stdout, flush=True)   # Moana's log (smoothing k, PCA, SVM) into the method's log
        if proc.returncode != 0:
            tail = " | ".join(line for line in proc.stdout.strip().splitlines()[-3:])
            raise RuntimeError(f"moana runner exited with {proc.returncode}: {tail}")
        with np.load(result, allow_pickle=False) as z:
            out = {key: z[key] for key in z.files}
    classes = [str(c) for c in out["classes"]]
    probs = label_on_top(_softmax(ovo_scores(out["decision"], len(classes))), classes, out["predicted"])
    return probs, classes, (out["train_pcs"], out["test_pcs"])
