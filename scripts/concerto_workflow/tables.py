"""Tidy result tables: one row per (dataset, split, hvg, method, metric).

Columns: dataset, split, hvg, method, metric, value, status, log, reason.
``status`` != 'ok' rows carry value NaN, the method's log path and the reason,
so figures can show the method as "not run" with the reason.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["dataset", "split", "hvg", "method", "metric", "value", "status", "log", "reason"]


def rows(dataset: str, split: str, hvg: str, method: str, values: dict[str, float], *,
         status: str = "ok", log: str = "", reason: str = "", metrics: list[str] | None = None
         ) -> pd.DataFrame:
    """Rows for one method; when status != 'ok' give ``metrics`` (names) and no values."""
    names = list(values) if status == "ok" else list(metrics or [])
    return pd.DataFrame({
        "dataset": dataset, "split": split, "hvg": str(hvg), "method": method,
        "metric": names,
        "value": [float(values[m]) for m in names] if status == "ok" else [np.nan] * len(names),
        "status": status, "log": log, "reason": reason,
    }, columns=COLUMNS)


def write(df: pd.DataFrame, path: str) -> None:
    check(df)
    df.to_csv(path, sep="\t", index=False)


def read(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={"hvg": str}, keep_default_na=True)
    df[["log", "reason"]] = df[["log", "reason"]].fillna("")
    check(df)
    return df


def concat(paths: list[str]) -> pd.DataFrame:
    return pd.concat([read(p) for p in paths], ignore_index=True)[COLUMNS]


def check(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    assert not missing, f"result table lacks columns {missing}"
    assert df["status"].isin(["ok", "failed", "not_installed"]).all(), "unknown status"
    ok = df["status"] == "ok"
    assert df.loc[ok, "value"].notna().all(), "status ok rows must have a value"
    assert df.loc[~ok, "log"].astype(str).str.len().gt(0).all(), "not-ok rows must name a log"
