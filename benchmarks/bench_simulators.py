"""Benchmark the simulators: Splat in memory, scsim-scale to disk, and a --max-shards 10M request.

Prints cells/s, seconds, CPU seconds, peak RSS (resource.getrusage, this process) and the 1-min
load average before/after each run (on a shared machine, wall time rises with the load).
Targets (2 cores): Splat >= 2,000 cells/s at 25,000 genes; scsim-scale 1M x 25k to disk <= 10 min,
RSS <= 2 GiB. The count sampler (``--method``, default numba) is compiled on first use and cached
in __pycache__; a small warm-up run first reports that one-off cost separately.
Example: python benchmarks/bench_simulators.py --splat-cells 2000 --scsim-cells 1000000 --out /tmp/bench
"""
import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from concerto_workflow.simulate import sampling  # noqa: E402
from concerto_workflow.simulate.scsim_scale import write_scsim_shards  # noqa: E402
from concerto_workflow.simulate.splat import SplatParams, simulate  # noqa: E402


def rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def load():
    return f"{os.getloadavg()[0]:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--genes", type=int, default=25000)
    ap.add_argument("--splat-cells", type=int, default=2000, help="0 skips")
    ap.add_argument("--scsim-cells", type=int, default=1_000_000, help="0 skips")
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--max-shards-request", type=int, default=10_000_000, help="0 skips")
    ap.add_argument("--max-shards", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_simulators")
    ap.add_argument("--keep", action="store_true", help="keep the written shards")
    ap.add_argument("--method", choices=["numba", "numpy"], default=sampling.DEFAULT_METHOD,
                    help="count sampler (sampling.DEFAULT_METHOD is set for every run)")
    a = ap.parse_args()
    out = Path(a.out)
    sampling.DEFAULT_METHOD = a.method
    threads = ""
    if a.method == "numba":
        import numba
        threads = f", {numba.get_num_threads()} numba threads"
    print(f"sampler: {a.method}{threads}; {os.cpu_count()} CPUs; load {load()}", flush=True)
    t = time.perf_counter()
    simulate(SplatParams(n_genes=50, batch_cells=(20,)), dropout_type="experiment")
    print(f"warm-up (JIT compile or cache load): {time.perf_counter() - t:.1f} s", flush=True)
    if a.splat_cells:
        l0, t, c = load(), time.perf_counter(), time.process_time()
        ad_ = simulate(SplatParams(n_genes=a.genes, batch_cells=(a.splat_cells,), group_prob=(0.2,) * 5))
        s, cpu = time.perf_counter() - t, time.process_time() - c
        print(f"splat: {a.splat_cells} cells x {a.genes} genes (Splat defaults, "
              f"{ad_.X.nnz / a.splat_cells:.0f} nonzero genes/cell): {s:.2f} s, "
              f"{a.splat_cells / s:.0f} cells/s, CPU {cpu:.2f} s, peak RSS {rss_gib():.2f} GiB, "
              f"load {l0} -> {load()}", flush=True)
        del ad_
    if a.scsim_cells:
        l0, c = load(), time.process_time()
        m = write_scsim_shards(out / "scsim", ncells=a.scsim_cells, ngenes=a.genes, shard_size=a.shard_size)
        st = m["stats"]
        print(f"scsim-scale: {a.scsim_cells} cells x {a.genes} genes to disk in {len(m['shards'])} shards: "
              f"{st['seconds']:.1f} s ({st['seconds'] / 60:.2f} min), {st['cells_per_s']:.0f} cells/s, "
              f"CPU {time.process_time() - c:.1f} s, {st['mean_genes_per_cell']:.0f} genes/cell, "
              f"peak RSS {rss_gib():.2f} GiB, load {l0} -> {load()}", flush=True)
        if not a.keep:
            shutil.rmtree(out / "scsim")
    if a.max_shards_request:
        m = write_scsim_shards(out / "scsim10m", ncells=a.max_shards_request, ngenes=a.genes,
                               shard_size=a.shard_size, max_shards=a.max_shards)
        st = m["stats"]
        est = a.max_shards_request / st["cells_per_s"]
        print(f"scsim-scale --max-shards {a.max_shards} of a {a.max_shards_request} request: "
              f"{m['n_cells']} cells in {st['seconds']:.1f} s ({st['cells_per_s']:.0f} cells/s); "
              f"extrapolated full run {est / 60:.1f} min; peak RSS {rss_gib():.2f} GiB", flush=True)
        if not a.keep:
            shutil.rmtree(out / "scsim10m")


if __name__ == "__main__":
    main()
