"""Peak memory of streamed training versus the number of cells in the sharded dataset.

Issue target: the peak RSS of training does not grow with the number of cells (100k, 1M,
10M). For each size, a fresh process builds ``Concerto.from_shards`` on a dataset of that
many cells and trains for ``--seconds`` (reading the first windows of shards), then reports
its peak RSS (VmHWM) and how many cells it trained on. The datasets are views over the
shards written by ``bench_scale.py`` (``<workdir>/scsim_*``): a prefix of its shard list for
smaller sizes and the list repeated for larger ones, so 10M cells need no extra disk.

    python benchmarks/bench_scale.py --cells 1000000 --workdir /tmp/scale1m     # writes the shards
    python benchmarks/bench_stream_rss.py --workdir /tmp/scale1m --sizes 100000 1000000 10000000
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, re, signal, sys, time
from pathlib import Path
from concerto_core import Concerto, ConcertoConfig, set_cpu_threads
set_cpu_threads(int(sys.argv[3]))
class Stop(Exception):
    pass
def stop(*_):
    raise Stop()
model = Concerto.from_shards(sys.argv[1], config=ConcertoConfig(epochs=1, batch_size=256, precise_bn=False))
cells = []
import concerto_core.training as training
original = training.stream
def counting(batches, modalities):
    for batch in original(batches, modalities):
        cells.append(int(batch["source"].shape[0]))
        yield batch
training.stream = counting
signal.signal(signal.SIGALRM, stop)
signal.alarm(int(sys.argv[2]))
t0 = time.perf_counter()
try:
    model.train()
except Stop:
    pass
hwm = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024**2
print(json.dumps({"cells_in_dataset": model._train_inputs.n_cells, "cells_trained": sum(cells),
                  "seconds": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(hwm, 2)}))
"""


def view(source_dir: Path, target: Path, n_cells: int) -> Path:
    """A concerto-shards manifest of ``n_cells`` cells listing the source's shard files (repeated if needed)."""
    manifest = json.loads((source_dir / "shards.json").read_text())
    shards, total, i = [], 0, 0
    while total < n_cells:
        shard = manifest["shards"][i % len(manifest["shards"])]
        if total + shard["n_cells"] > n_cells:
            raise SystemExit(f"{n_cells} is not a sum of whole shards of {shard['n_cells']} cells")
        shards.append(dict(shard, file=str((source_dir / shard["file"]).resolve())))
        total += shard["n_cells"]
        i += 1
    target.mkdir(parents=True, exist_ok=True)
    (target / "shards.json").write_text(json.dumps(dict(manifest, shards=shards, n_cells=total)))
    return target


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/concerto_scale", help="bench_scale.py's workdir (holds scsim_* shards)")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--seconds", type=int, default=120, help="training time per size")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    work = Path(args.workdir)
    sources = sorted(d for d in work.glob("scsim_*") if (d / "shards.json").exists())
    if not sources:
        raise SystemExit(f"no scsim_* shard directory in {work}; run benchmarks/bench_scale.py first")
    rows = []
    for n in args.sizes:
        directory = view(sources[0], work / f"rss_view_{n}", n)
        out = subprocess.run([sys.executable, "-c", CHILD, str(directory), str(args.seconds), str(args.threads)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        row = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
