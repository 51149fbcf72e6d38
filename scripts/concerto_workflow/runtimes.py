"""Snakemake benchmark files -> one runtime table (rule, job, s, max_rss, ...)."""
from __future__ import annotations

import glob
import os

import pandas as pd


def collect(benchmark_dir: str) -> pd.DataFrame:
    """Each file is ``<benchmark_dir>/<rule>/<job>.tsv`` with Snakemake's columns (s, max_rss, ...)."""
    frames = []
    for path in sorted(glob.glob(os.path.join(benchmark_dir, "*", "*.tsv"))):
        rule = os.path.basename(os.path.dirname(path))
        if rule == "collect_runtimes":
            continue
        d = pd.read_csv(path, sep="\t")
        d.insert(0, "job", os.path.splitext(os.path.basename(path))[0])
        d.insert(0, "rule", rule)
        frames.append(d)
    if not frames:
        return pd.DataFrame(columns=["rule", "job", "s"])
    return pd.concat(frames, ignore_index=True)
