"""Benchmark NeighborIndex on Concerto-like embeddings.

Data: L2-normalised ReLU outputs of a mixture of clusters (centres ~ N(0, I_d);
within-cluster variation = a random low-rank (``--latent-dim``) Gaussian plus
isotropic noise), queries drawn from the same mixture (not reference copies).
Reports build/query seconds, queries/s, recall@k vs exact search on a random
subsample of queries, and peak RSS.

Target: 100k queries vs 1M reference, d=128, <= 60 s incl. build, recall@5 >= 0.95:
    python benchmarks/bench_knn.py --n-ref 1000000 --n-query 100000 --threads 2
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from concerto_core.neighbors import NeighborIndex


def make_embeddings(n, d, n_clusters, latent_dim, spread, noise, seed, structure_seed=12345):
    """(n, d) float32 unit-norm non-negative embeddings and (n,) cluster ids."""
    rs = np.random.default_rng(structure_seed)  # same mixture for reference and query
    centers = rs.standard_normal((n_clusters, d), dtype=np.float32)
    loads = (spread * rs.standard_normal((n_clusters, latent_dim, d))).astype(np.float32)
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n_clusters, n)
    out = np.empty((n, d), np.float32)
    for c in range(n_clusters):
        idx = np.flatnonzero(lab == c)
        z = rng.standard_normal((idx.size, latent_dim), dtype=np.float32)
        x = centers[c] + z @ loads[c] + noise * rng.standard_normal((idx.size, d), dtype=np.float32)
        np.maximum(x, 0, out=x)  # ReLU
        x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
        out[idx] = x
    return out, lab


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-ref", type=int, default=1_000_000)
    p.add_argument("--n-query", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--n-clusters", type=int, default=50)
    p.add_argument("--latent-dim", type=int, default=16, help="intrinsic dims of within-cluster variation")
    p.add_argument("--spread", type=float, default=0.35, help="scale of the low-rank within-cluster loadings")
    p.add_argument("--noise", type=float, default=0.05, help="isotropic noise sd (full-rank)")
    p.add_argument("--method", default="auto", choices=["auto", "exact", "ivf", "hnsw"])
    p.add_argument("--exact-threshold", type=int, default=50_000)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--ivf-storage", default="flat", choices=["flat", "sq8"])
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--hnsw-ef-construction", type=int, default=100)
    p.add_argument("--hnsw-ef", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="default: all available cores")
    p.add_argument("--recall-queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    a = p.parse_args(argv)

    t0 = time.perf_counter()
    ref, _ = make_embeddings(a.n_ref, a.dim, a.n_clusters, a.latent_dim, a.spread, a.noise, a.seed)
    qry, _ = make_embeddings(a.n_query, a.dim, a.n_clusters, a.latent_dim, a.spread, a.noise, a.seed + 1)
    t_gen = time.perf_counter() - t0
    rss_data = peak_rss_mb()

    t0 = time.perf_counter()
    index = NeighborIndex(ref, a.method, exact_threshold=a.exact_threshold, n_threads=a.threads,
                          nlist=a.nlist, nprobe=a.nprobe, ivf_storage=a.ivf_storage, hnsw_m=a.hnsw_m,
                          hnsw_ef_construction=a.hnsw_ef_construction, hnsw_ef=a.hnsw_ef, seed=a.seed)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx, _ = index.query(qry, a.k)
    t_query = time.perf_counter() - t0
    rss_peak = peak_rss_mb()

    rng = np.random.default_rng(a.seed + 2)
    sub = np.sort(rng.choice(a.n_query, min(a.recall_queries, a.n_query), replace=False))
    exact = NeighborIndex(ref, "exact", n_threads=a.threads)
    t0 = time.perf_counter()
    gt, _ = exact.query(qry[sub], a.k)
    t_exact = time.perf_counter() - t0
    recall = float(np.mean([len(set(x) & set(y)) / a.k for x, y in zip(idx[sub], gt)]))

    res = {"n_ref": a.n_ref, "n_query": a.n_query, "dim": a.dim, "k": a.k, "method": index.method,
           "threads": index.n_threads, "nlist": getattr(index, "nlist", None),
           "nprobe": getattr(index, "nprobe", None), "ivf_storage": a.ivf_storage,
           "gen_s": round(t_gen, 2), "build_s": round(t_build, 2), "query_s": round(t_query, 2),
           "total_s": round(t_build + t_query, 2), "queries_per_s": round(a.n_query / t_query, 1),
           f"recall@{a.k}": round(recall, 4), "recall_queries": len(sub),
           "exact_s_per_query": round(t_exact / len(sub), 5),
           "peak_rss_mb_after_data": round(rss_data, 1), "peak_rss_mb": round(rss_peak, 1)}
    if a.json:
        print(json.dumps(res))
    else:
        for key, v in res.items():
            print(f"{key:>24}: {v}")
        ok = res["total_s"] <= 60 and recall >= 0.95
        print(f"{'target (<=60 s, recall>=0.95)':>24}: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
