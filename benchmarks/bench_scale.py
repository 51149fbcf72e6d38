"""Scale-out benchmark: streamed pretraining on an scsim-scale reference, then query mapping.

Issue targets on 2 CPU cores: 1M cells x 20k genes, one epoch of contrastive pretraining in
<= 10 minutes with peak RSS <= 4 GiB; embedding + 5-NN mapping of 100k query cells onto the
1M-cell reference in <= 60 s. (The paper: 1M cells in 585 s on 8 GPUs.)

Phases (each printed with seconds, cells/s and its own peak RSS):
  simulate   reference and query shards (scsim-scale generator; skipped when present)
  pretrain   one streamed epoch, from shards
  reference  embedding of every reference cell (streamed to .npy)
  mapping    embedding of the query + 5-NN voting against the reference embedding

    python benchmarks/bench_scale.py --cells 1000000 --genes 20000 --query-cells 100000 --workdir /tmp/scale
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def peak_rss_gib() -> float:
    """Peak resident memory since the last reset (VmHWM), GiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024**2


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: resets VmHWM
    except OSError:
        pass


def phase(name, results, fn, n_cells=None):
    reset_peak_rss()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    row = {"phase": name, "seconds": round(seconds, 1), "peak_rss_gib": round(peak_rss_gib(), 2)}
    if n_cells:
        row["cells_per_s"] = round(n_cells / seconds, 1)
    results.append(row)
    print(json.dumps(row), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--query-cells", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/concerto_scale")
    p.add_argument("--output", default=None, help="write the result rows as JSON here")
    args = p.parse_args(argv)

    from concerto_core import set_cpu_threads

    set_cpu_threads(args.threads)
    import numpy as np

    from concerto_core import Concerto, ConcertoConfig, knn_vote
    from concerto_core.shards import ShardedCells
    from concerto_workflow.simulate.scsim_scale import write_scsim_shards

    work = Path(args.workdir)
    if args.cells % args.query_cells:
        raise SystemExit("--cells must be a multiple of --query-cells (the query is the last shard)")
    # One simulation (one gene programme) split into reference shards and a held-out query shard.
    all_dir = work / f"scsim_{args.cells + args.query_cells}x{args.genes}"
    ref_dir, query_dir = work / "reference", work / "query"
    results = []
    if not (all_dir / "shards.json").exists():
        phase("simulate reference + query", results,
              lambda: write_scsim_shards(all_dir, ngenes=args.genes, ncells=args.cells + args.query_cells,
                                         shard_size=args.query_cells), args.cells + args.query_cells)
    manifest = json.loads((all_dir / "shards.json").read_text())
    n_ref = args.cells // args.query_cells
    for directory, shards in ((ref_dir, manifest["shards"][:n_ref]), (query_dir, manifest["shards"][n_ref:])):
        directory.mkdir(parents=True, exist_ok=True)
        view = dict(manifest, shards=[dict(s, file=f"../{all_dir.name}/{s['file']}") for s in shards],
                    n_cells=sum(s["n_cells"] for s in shards))
        (directory / "shards.json").write_text(json.dumps(view))

    model = Concerto.from_shards(ref_dir, config=ConcertoConfig(batch_size=args.batch_size, epochs=1, precise_bn=True))
    phase("pretrain (1 epoch, streamed, incl. precise BN pass)", results, model.train, args.cells)
    epoch = model.history[-1]
    results[-1].update(epoch_seconds=epoch["seconds"], epoch_cells_per_s=epoch["cells_per_s"])
    print(json.dumps({"epoch_only_seconds": epoch["seconds"], "epoch_cells_per_s": epoch["cells_per_s"]}), flush=True)
    ref_emb = phase("reference embedding", results, lambda: np.load(model.embed_shards(ref_dir, work / "ref_emb.npy"), mmap_mode="r"), args.cells)
    labels = np.concatenate([np.asarray(
        __import__("anndata").read_h5ad(ref_dir / s["file"], backed="r").obs["cell_type"].astype(str))
        for s in ShardedCells(ref_dir).manifest["shards"]])

    def mapping():
        z = np.load(model.embed_shards(query_dir, work / "query_emb.npy"))
        return knn_vote(np.asarray(ref_emb), labels, z, k=5)

    vote = phase("query embedding + 5-NN mapping", results, mapping, args.query_cells)
    truth = np.concatenate([np.asarray(
        __import__("anndata").read_h5ad(query_dir / s["file"], backed="r").obs["cell_type"].astype(str))
        for s in ShardedCells(query_dir).manifest["shards"]])
    summary = {"cells": args.cells, "genes": args.genes, "query_cells": args.query_cells, "threads": args.threads,
               "mapping_accuracy": round(float((np.asarray(vote.labels) == truth).mean()), 4), "phases": results}
    print(json.dumps(summary, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
