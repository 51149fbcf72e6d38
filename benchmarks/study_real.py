"""What helps Concerto on small real references (issue 12): one command, one tidy CSV, one figure.

    nice -n 10 python benchmarks/study_real.py --out results/ablation_real
        [--tasks hp_to_mp pancreas_3tech pbmc_ding] [--seeds 0 1 2] [--factors temperature k ...]
        [--jobs 2] [--data-dir ../shared/data] [--max-folds N] [--keep-scores old/scores.csv]

Writes ``<out>/scores.csv`` (task, seed, method, factor, level, setting, split = valid | query,
metric, value, ...), ``<out>/summary.csv`` (task x setting, mean and sd over seeds),
``<out>/selected.csv`` (per task, the setting chosen on the reference's validation cells) and
``<out>/suppA1_concerto_ablation_real.png``. Design and leakage rules:
:mod:`concerto_workflow.ablation`. Each (task, seed) runs in its own process with one thread.
``--keep-scores`` carries over the rows of the tasks not rerun from an earlier ``scores.csv``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

CAPTION = (REPO / "report" / "suppA1_concerto_ablation_real.rst").read_text().strip()


def main(argv=None) -> int:
    from concerto_workflow.ablation import FACTORS, TASKS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/ablation_real", help="output directory")
    p.add_argument("--data-dir", default=os.environ.get("CONCERTO_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--factors", nargs="+", default=None, choices=list(FACTORS), help="default: every factor")
    p.add_argument("--jobs", type=int, default=2, help="processes (each TensorFlow on one thread)")
    p.add_argument("--workdir", default=None, help="model directories (default <out>/models)")
    p.add_argument("--max-folds", type=int, default=None,
                   help="folds run of a cross-validation task (default: the task's max_folds)")
    p.add_argument("--keep-scores", default=None,
                   help="an earlier scores.csv whose rows of the tasks not in --tasks are kept")
    args = p.parse_args(argv)
    data = Path(args.data_dir)
    if not data.is_dir():
        p.error(f"--data-dir {data} does not exist (the shared real data folder; see its README)")
    if args.keep_scores and not Path(args.keep_scores).is_file():
        p.error(f"--keep-scores {args.keep_scores} does not exist")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir or out / "models")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")])
    # the biggest task first, so that the processes finish at about the same time
    jobs = [(t, s, str(data), str(workdir / f"{t}_seed{s}"), args.factors) for t in args.tasks for s in args.seeds]
    t0 = time.time()
    from concerto_workflow.ablation import run_task_seed

    # workers import the function from the package (PYTHONPATH above), so this file may be
    # loaded under any module name (the rule script loads it from its path)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        frames = [f.result() for f in [pool.submit(run_task_seed, *job, threads=1, max_folds=args.max_folds)
                                       for job in jobs]]
    wall = time.time() - t0

    import pandas as pd

    from concerto_workflow.ablation import join_kept, select_settings, summary_table
    from concerto_workflow.ablation_figures import plot_ablation

    scores = pd.concat(frames, ignore_index=True)
    if args.keep_scores:
        scores = join_kept(scores, pd.read_csv(args.keep_scores, keep_default_na=False, na_values=[""]))
    scores.to_csv(out / "scores.csv", index=False)
    summary_table(scores).to_csv(out / "summary.csv", index=False)
    selected = select_settings(scores)
    query = scores[(scores["split"] == "query") & (scores["metric"] == "accuracy") & (scores["status"] == "ok")]
    selected["query_accuracy"] = [query[(query["task"] == t) & (query["setting"] == s)]["value"].mean()
                                  for t, s in zip(selected["task"], selected["setting"])]
    selected.to_csv(out / "selected.csv", index=False)
    plot_ablation(scores, str(out / "suppA1_concerto_ablation_real.png"), caption=CAPTION)
    (out / "run.json").write_text(json.dumps({"tasks": args.tasks, "seeds": args.seeds, "factors": args.factors or "per task",
                                              "max_folds": args.max_folds or "per task",
                                              "kept_from": args.keep_scores,
                                              "jobs": args.jobs, "wall_seconds": round(wall, 1)}, indent=1))
    print(selected.to_string(index=False))
    print(f"[study] {len(jobs)} task x seed jobs, {args.jobs} processes: wall {wall:.0f}s; wrote {out}/scores.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
