"""Tidy result tables: one row per (experiment, fold, preprocessing, method, seed, metric, setting).

``status`` != 'ok' rows carry value NaN, the method's log path and the reason, so every figure
can show the method as "not run" with the reason instead of leaving it out.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import OK, STATUSES

KEYS = ["experiment", "task", "dataset", "split", "fold", "preprocessing", "method", "kind", "seed"]
COLUMNS = KEYS + ["metric", "setting", "value", "status", "reason", "log"]


class TableError(ValueError):
    pass


def rows(provenance: dict, kind: str, values: dict, *, status: str = OK, reason: str = "",
         log: str = "", metrics: list[str] = ()) -> pd.DataFrame:
    """Rows of one method output. ``values``: metric -> float, or metric -> {setting: float}.
    When status != ok give the metric names in ``metrics`` instead."""
    recs = []
    if status == OK:
        for metric, v in values.items():
            for setting, x in (v.items() if isinstance(v, dict) else [("", v)]):
                recs.append((metric, str(setting), float(x)))
    else:
        recs = [(m, "", np.nan) for m in metrics]
    base = {k: str(provenance.get(k, "")) for k in KEYS}
    base["kind"] = kind
    df = pd.DataFrame([{**base, "metric": m, "setting": s, "value": x, "status": status,
                        "reason": reason, "log": log} for m, s, x in recs], columns=COLUMNS)
    return df


def check(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise TableError(f"result table lacks columns {missing}")
    bad = set(df["status"]) - set(STATUSES)
    if bad:
        raise TableError(f"unknown status values {sorted(bad)}; allowed {STATUSES}")
    ok = df["status"] == OK
    if df.loc[ok, "value"].isna().any() and not df.loc[ok & df["value"].isna(), "metric"].isin(NAN_ALLOWED).all():
        raise TableError("rows with status 'ok' must have a value (metrics "
                         f"{sorted(set(df.loc[ok & df['value'].isna(), 'metric']))})")
    if (df.loc[~ok, "reason"].astype(str).str.len() == 0).any():
        raise TableError("rows with a status other than 'ok' must give a reason")


#: metrics that may be undefined on a fold (e.g. silhouette with one label): NaN allowed
NAN_ALLOWED = ("asw_batch", "asw_celltype", "rejected_at_valid95", "auroc_unseen", "pearson",
               "pearson_median", "median_f1", "silhouette_clusters",
               "asw_focus_celltype", "accuracy_known_types", "asw_label_pairs", "kbet_per_label",
               "asw_batch_scaled", "asw_celltype_scaled")


def write(df: pd.DataFrame, path: str) -> None:
    check(df)
    df[COLUMNS].to_csv(path, sep="\t", index=False)


def read(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={c: str for c in COLUMNS if c != "value"},
                     keep_default_na=False, na_values={"value": ["", "NaN", "nan"]})
    check(df)
    return df


def concat(paths: list[str]) -> pd.DataFrame:
    frames = [read(p) for p in paths]
    return pd.concat(frames, ignore_index=True)[COLUMNS] if frames else pd.DataFrame(columns=COLUMNS)
