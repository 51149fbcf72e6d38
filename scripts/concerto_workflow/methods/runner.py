"""Run one competitor in a child process and always leave an embedding file behind.

The child (``python -m concerto_workflow.methods.runner``) only computes arrays; the
parent checks dependencies first, then turns the child's outcome into the embedding
contract of :mod:`concerto_workflow.embedding_io`:
  dependency missing       -> status 'not_installed'
  exception / exit != 0    -> status 'failed', reason = last lines of the child's output
  killed by a signal       -> status 'failed', reason names the signal (SIGKILL: likely OOM)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd

from ..embedding_io import OBS_COLUMNS, write_embedding


def _obs(a: ad.AnnData, role: str | None = None) -> pd.DataFrame:
    obs = a.obs[list(OBS_COLUMNS)].copy()
    if role is not None:
        obs["role"] = role
    return obs


def mapping_obs(ref: ad.AnnData, query: ad.AnnData) -> pd.DataFrame:
    obs = pd.concat([_obs(ref, "reference"), _obs(query, "query")])
    for c in obs.columns:
        obs[c] = pd.Categorical(obs[c].astype(str))
    return obs


def run_isolated(method: str, task: str, inputs: list[str], output: str, *, params: dict,
                 batch_key: str, n_comps: int, seed: int, threads: int, log: str) -> str:
    """Run ``method`` for ``task`` on ``inputs`` ([h5ad] or [ref, query]); write ``output``.
    Returns the status. Never raises for problems of the method itself."""
    from . import REGISTRY, missing_dependencies

    if task == "integration":
        a = ad.read_h5ad(inputs[0], backed="r")
        obs = _obs(a)
    else:
        obs = mapping_obs(ad.read_h5ad(inputs[0], backed="r"), ad.read_h5ad(inputs[1], backed="r"))
    spec = REGISTRY[method]
    if task not in spec.tasks:
        raise ValueError(f"method {method!r} has no {task} mode; it supports {spec.tasks}")
    missing = missing_dependencies(spec)
    if missing:
        reason = f"not installed: {', '.join(missing)}"
        print(f"[{method}] {reason}", flush=True)
        write_embedding(output, obs, None, method=method, status="not_installed", reason=reason, log=log)
        return "not_installed"

    tmp = output + ".arrays.npz"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    # the child imports this package from wherever the parent found it
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "concerto_workflow.methods.runner", "--method", method,
           "--task", task, "--out", tmp, "--params", json.dumps(params, sort_keys=True),
           "--batch-key", batch_key, "--n-comps", str(n_comps), "--seed", str(seed), *inputs]
    print("[runner] " + " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, flush=True)
    print(f"[runner] {method} exited with {proc.returncode} after {time.time() - t0:.1f}s", flush=True)
    if proc.returncode == 0 and os.path.exists(tmp):
        arrays = np.load(tmp)
        emb = arrays["emb"] if task == "integration" else np.vstack([arrays["ref"], arrays["query"]])
        os.remove(tmp)
        write_embedding(output, obs, emb, method=method, status="ok", log=log)
        return "ok"
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        reason = f"killed by {sig}" + (" (likely out of memory)" if sig == "SIGKILL" else "")
    else:
        tail = [l for l in proc.stdout.strip().splitlines() if l.strip()][-3:]
        reason = f"exit code {proc.returncode}: " + " | ".join(tail)
    if os.path.exists(tmp):
        os.remove(tmp)
    write_embedding(output, obs, None, method=method, status="failed", reason=reason, log=log)
    return "failed"


def _child(argv=None) -> None:
    from . import REGISTRY

    p = argparse.ArgumentParser(description="compute one competitor's embedding (child process)")
    p.add_argument("--method", required=True)
    p.add_argument("--task", choices=["integration", "mapping"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--params", default="{}")
    p.add_argument("--batch-key", default="batch")
    p.add_argument("--n-comps", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("inputs", nargs="+")
    a = p.parse_args(argv)
    spec, params = REGISTRY[a.method], json.loads(a.params)
    common = dict(batch_key=a.batch_key, n_comps=a.n_comps, seed=a.seed, **params)
    if a.task == "integration":
        emb = spec.integrate(ad.read_h5ad(a.inputs[0]), **common)
        np.savez(a.out, emb=np.asarray(emb, dtype=np.float32))
    else:
        ref, query = spec.map(ad.read_h5ad(a.inputs[0]), ad.read_h5ad(a.inputs[1]), **common)
        np.savez(a.out, ref=np.asarray(ref, dtype=np.float32), query=np.asarray(query, dtype=np.float32))


if __name__ == "__main__":
    _child()
