"""Run one method on one fold in a child process and always leave a contract-conforming file.

The parent (``run_method``, called by the rule of the same name) checks the method's
dependencies, starts ``python -m concerto_workflow.methods.runner <spec.json>``, and turns the
child's outcome into the task's output file (:mod:`concerto_workflow.outputs`):

  dependency missing       -> status 'not_installed'
  exception / exit != 0    -> status 'failed', reason = last lines of the child's output
  killed by a signal       -> status 'failed', reason names the signal (SIGKILL: likely OOM)
  still running at the     -> status 'over_budget' (the child is killed), reason names the budget
  time budget

A ``required`` method (Concerto) raises instead, so the run stops with its log. The child
computes arrays only, including the engine's shared operations for derived tasks (k-NN vote
for ``map`` / ``annotate``, k-NN smoothing for ``impute``, Leiden for ``cluster``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd

from ..columns import (ATTENTION, ATTENTION_FEATURES, CLASSES, CLUSTER_SETTINGS, CLUSTERS, CONFIDENCE,
                       EMBEDDING, FAILED, FEATURES, IMPUTED, MEASURED, NOT_INSTALLED, OK, OVER_BUDGET,
                       PREDICTED, PROBABILITIES, ROLE, TRAIN)
from ..outputs import check_output
from .api import RunContext


class MethodFailed(RuntimeError):
    """A required method (Concerto) failed: the workflow must stop."""


# ------------------------------------------------------------------------------------ child
def compute(method: str, task: str, cells: ad.AnnData, ctx: RunContext, params: dict,
            knn_k: int = 5) -> dict[str, np.ndarray]:
    """The arrays of ``task``'s output for ``cells`` (obs order), in this process."""
    from . import capability
    from .shared import cluster_embedding, smooth, vote

    cap = capability(method, task)
    if cap is None:
        raise ValueError(f"method {method!r} cannot run task {task!r}")
    how, fn = cap
    train_mask = (cells.obs[ROLE].astype(str) == TRAIN).to_numpy()
    train, held = cells[train_mask].copy(), cells[~train_mask].copy()
    out: dict[str, np.ndarray] = {}
    if task == "embed":  # an embedding, or (embedding, attention signatures)
        res = fn(cells, ctx, **params)
        out["emb"], attention = res if isinstance(res, tuple) else (res, {})
        out.update(pack_attention(attention))
    elif task == "cluster":
        res = fn(cells, ctx, **params)
        if how == "own":  # clusters, or (clusters, the embedding they came from)
            out["clusters"], emb = res if isinstance(res, tuple) else (res, None)
        else:  # an embed function's embedding (attention signatures are not kept here)
            emb = res[0] if isinstance(res, tuple) else res
            out["clusters"] = cluster_embedding(emb, ctx.settings, seed=ctx.seed, algorithm=ctx.cluster_algorithm)
        if emb is not None:
            out["emb"] = np.asarray(emb)
    elif task == "annotate" and how == "own":  # (probs, classes) or (probs, classes, (train, held) space)
        res = fn(train, held, ctx, **params)
        out["probs"], classes = res[0], res[1]
        out["classes"] = np.asarray(classes, dtype=str)
        if len(res) > 2:
            out["emb"] = stack_embedding(train_mask, *res[2])
    elif task == "impute" and how == "own":  # values, or (values, (train, held) space)
        res = fn(train, held, ctx, **params)
        out["imputed"], space = res if isinstance(res, tuple) else (res, None)
        if space is not None:
            out["emb"] = stack_embedding(train_mask, *space)
    else:  # map, or annotate / impute through the method's map embedding (kept, for UMAPs)
        ref_emb, query_emb = fn(train, held, ctx, **params)
        ref_emb, query_emb = np.asarray(ref_emb), np.asarray(query_emb)
        if task in ("map", "annotate"):
            out["probs"], classes = vote(ref_emb, train.obs[ctx.label_key], query_emb, k=knn_k)
            out["classes"] = np.asarray(classes, dtype=str)
        else:
            out["imputed"] = smooth(ref_emb, train.obsm[ctx.feature_key], query_emb, k=knn_k)
        out["emb"] = stack_embedding(train_mask, ref_emb, query_emb)
    return out


def stack_embedding(train_mask: np.ndarray, train_emb, held_emb) -> np.ndarray:
    """(n_cells, d) float32 embedding in the fold's cell order from the training cells' (n_train, d)
    and the held-out cells' (n_held, d) rows; ``train_mask`` (n_cells,) bool marks the training cells."""
    train_emb, held_emb = np.asarray(train_emb), np.asarray(held_emb)
    if (len(train_emb), len(held_emb)) != (int(train_mask.sum()), int((~train_mask).sum())):
        raise ValueError(f"embedding rows {len(train_emb)} + {len(held_emb)} do not match the fold's "
                         f"{int(train_mask.sum())} training + {int((~train_mask).sum())} held-out cells")
    emb = np.empty((len(train_mask), train_emb.shape[1]), dtype=np.float32)
    emb[train_mask], emb[~train_mask] = train_emb, held_emb
    return emb


_ATTN = "attention::"


def pack_attention(attention: dict) -> dict[str, np.ndarray]:
    """{modality: ((n_cells, F) sparse weights, F names)} -> plain arrays for the child's npz."""
    import scipy.sparse as sp

    out = {}
    for m, (mat, names) in attention.items():
        A = sp.csr_matrix(mat, dtype=np.float32)
        out.update({f"{_ATTN}{m}::data": A.data, f"{_ATTN}{m}::indices": A.indices,
                    f"{_ATTN}{m}::indptr": A.indptr, f"{_ATTN}{m}::shape": np.asarray(A.shape),
                    f"{_ATTN}{m}::names": np.asarray([str(n) for n in names], dtype=str)})
    return out


def unpack_attention(arrays: dict) -> dict:
    """Inverse of :func:`pack_attention`: {modality: (CSR float32, list of names)}."""
    import scipy.sparse as sp

    mods = sorted({k.split("::")[1] for k in arrays if k.startswith(_ATTN)})
    part = lambda m, x: arrays[f"{_ATTN}{m}::{x}"]  # noqa: E731
    return {m: (sp.csr_matrix((part(m, "data"), part(m, "indices"), part(m, "indptr")),
                              shape=tuple(int(v) for v in part(m, "shape"))),
                [str(n) for n in part(m, "names")]) for m in mods}


def _child(spec_path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(open(spec_path).read())
    ctx = RunContext(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["ctx"].items()})
    cells = ad.read_h5ad(spec["cells"])
    t0 = time.perf_counter()
    arrays = compute(spec["method"], spec["task"], cells, ctx, spec["params"], spec["knn_k"])
    arrays["seconds"] = np.asarray(time.perf_counter() - t0)
    np.savez(spec["out"], **arrays)


# ----------------------------------------------------------------------------------- parent
def build_output(task: str, obs: pd.DataFrame, arrays: dict | None, provenance: dict,
                 feature_names=(), settings=()) -> ad.AnnData:
    """The task's output AnnData (contract of :mod:`concerto_workflow.outputs`)."""
    a = ad.AnnData(obs=obs.copy())
    a.uns.update({k: v for k, v in provenance.items()})
    if arrays is None:
        return a
    n = a.n_obs
    held = (a.obs[ROLE].astype(str) != TRAIN).to_numpy()
    if "emb" in arrays:
        emb = np.asarray(arrays["emb"], dtype=np.float32)
        if emb.shape[0] != n:
            raise ValueError(f"embedding has {emb.shape[0]} rows for {n} cells")
        a.obsm[EMBEDDING] = emb
    attention = unpack_attention(arrays)
    for m, (mat, names) in attention.items():
        if mat.shape[0] != n:
            raise ValueError(f"attention of {m!r} has {mat.shape[0]} rows for {n} cells")
        a.obsm[ATTENTION + m] = mat
    if attention:
        a.uns[ATTENTION_FEATURES] = {m: names for m, (_, names) in attention.items()}
    if "probs" in arrays:
        probs, classes = np.asarray(arrays["probs"], dtype=np.float64), [str(c) for c in arrays["classes"]]
        if probs.shape != (int(held.sum()), len(classes)):
            raise ValueError(f"probabilities have shape {probs.shape}, expected "
                             f"({int(held.sum())}, {len(classes)})")
        full = np.full((n, len(classes)), np.nan)
        full[held] = probs
        a.obsm[PROBABILITIES] = full
        a.uns[CLASSES] = classes
        best = probs.argmax(axis=1) if len(classes) else np.zeros(len(probs), int)
        pred = pd.Series(pd.NA, index=a.obs_names, dtype=object)
        pred[held] = np.asarray(classes, dtype=object)[best]
        a.obs[PREDICTED] = pred.astype("category")
        conf = np.full(n, np.nan)
        conf[held] = probs[np.arange(len(probs)), best]
        a.obs[CONFIDENCE] = conf
    if "clusters" in arrays:
        cl = np.asarray(arrays["clusters"], dtype=np.int64).reshape(n, -1)
        a.obsm[CLUSTERS] = cl
        a.uns[CLUSTER_SETTINGS] = [str(s) for s in settings]
    if "imputed" in arrays:
        imp = np.asarray(arrays["imputed"], dtype=np.float32)
        full = np.full((n, imp.shape[1]), np.nan, dtype=np.float32)
        full[held] = imp
        a.obsm[IMPUTED] = full
        a.uns[FEATURES] = [str(f) for f in feature_names]
    return a


def _reason_from(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return f"killed by {sig}" + (" (likely out of memory)" if sig == "SIGKILL" else "")
    tail = [line for line in proc.stdout.strip().splitlines() if line.strip()][-3:]
    return f"exit code {proc.returncode}: " + " | ".join(tail)


def run_method(*, method: str, task: str, cells_path: str, output: str, provenance: dict,
               params: dict, ctx: RunContext, knn_k: int = 5, time_budget_s: float = 0) -> str:
    """Run ``method`` for ``task`` on the fold in ``cells_path``; write ``output``; return the status.
    ``time_budget_s`` > 0 stops the method at that wall time (status 'over_budget')."""
    from . import REGISTRY, capability, missing_dependencies

    spec = REGISTRY[method]
    if capability(method, task) is None:
        raise ValueError(f"method {method!r} cannot run task {task!r}")
    cells = ad.read_h5ad(cells_path, backed="r")
    obs = cells.obs.copy()
    measured = None
    if task == "impute":
        measured = np.asarray(cells.obsm[ctx.feature_key], dtype=np.float32)
    cells.file.close()
    prov = dict(provenance, method=method, task=task, seed=ctx.seed, status=OK, reason="", seconds=0.0,
                peak_memory_mb=0.0)
    missing = list(missing_dependencies(method))
    if task == "cluster" and capability(method, task)[0] != "own":
        from .shared import missing_for_algorithm

        missing += [f"{m} (for {ctx.cluster_algorithm} clustering)" for m in missing_for_algorithm(ctx.cluster_algorithm)]
    arrays = None
    if missing:
        prov.update(status=NOT_INSTALLED, reason=f"not installed: {', '.join(missing)}")
    else:
        tmp = output + ".arrays.npz"
        spec_path = output + ".spec.json"
        with open(spec_path, "w") as fh:
            json.dump({"method": method, "task": task, "cells": cells_path, "out": tmp, "params": params,
                       "knn_k": knn_k, "ctx": dataclasses.asdict(ctx)}, fh)
        env = dict(os.environ, OMP_NUM_THREADS=str(ctx.threads), OPENBLAS_NUM_THREADS=str(ctx.threads),
                   MKL_NUM_THREADS=str(ctx.threads))
        # the child imports this package from wherever the parent found it
        pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "concerto_workflow.methods.runner", spec_path]
        print(f"[runner] {method} / {task}: " + " ".join(cmd), flush=True)
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=time_budget_s or None)
        except subprocess.TimeoutExpired as e:   # subprocess.run has killed the child
            out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
            proc = subprocess.CompletedProcess(cmd, None, out)
        print(proc.stdout, flush=True)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"[runner] {method} exited with {proc.returncode} after {time.time() - t0:.1f}s", flush=True)
        os.remove(spec_path)
        prov["peak_memory_mb"] = round(peak_kb / 1024, 1)
        if proc.returncode is None:
            prov.update(status=OVER_BUDGET, reason=f"over the time budget: stopped after {time_budget_s:g} s "
                                                   "(experiment key time_budget_s)")
        elif proc.returncode == 0 and os.path.exists(tmp):
            with np.load(tmp) as z:
                arrays = {k: z[k] for k in z.files}
            prov["seconds"] = round(float(arrays.pop("seconds")), 3)
        else:
            prov.update(status=FAILED, reason=_reason_from(proc))
        if os.path.exists(tmp):
            os.remove(tmp)
    if prov["status"] != OK and spec.required and prov["status"] == FAILED:
        raise MethodFailed(f"{method} ({task}) failed: {prov['reason']} -- see the log above")
    if measured is not None and arrays is not None:
        held = (obs[ROLE].astype(str) != TRAIN).to_numpy()
        full = np.full(measured.shape, np.nan, dtype=np.float32)
        full[held] = measured[held]
    a = build_output(task, obs, arrays, prov, feature_names=ctx.feature_names, settings=ctx.settings)
    if measured is not None and arrays is not None:
        a.obsm[MEASURED] = full
    check_output(a, task)
    a.write_h5ad(output)
    return prov["status"]


if __name__ == "__main__":
    _child(sys.argv[1])
