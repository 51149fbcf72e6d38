"""Config checks that a JSON schema cannot express, and the experiment plan.

``check_config`` runs right after ``snakemake.utils.validate`` in the Snakefile;
every message names the offending key and what is allowed.
"""
from __future__ import annotations

from .methods import CONCERTO, REGISTRY
from .metrics import INTEGRATION_METRICS

TASKS = ("integration", "mapping")


class ConfigError(ValueError):
    pass


def allowed_methods(task: str) -> list[str]:
    return [CONCERTO] + [m.name for m in REGISTRY.values() if task in m.tasks]


def check_config(config: dict) -> None:
    datasets = config["datasets"]
    for name, d in datasets.items():
        if d["source"] == "real" and not d.get("real", {}).get("url"):
            raise ConfigError(f"config key 'datasets.{name}.real.url' is required when "
                              f"'datasets.{name}.source' is 'real'")
    for task in TASKS:
        exp = config["experiments"][task]
        key = f"experiments.{task}"
        for ds in exp["datasets"]:
            if ds not in datasets:
                raise ConfigError(f"config key '{key}.datasets': unknown dataset {ds!r}; "
                                  f"allowed: {sorted(datasets)} (defined under 'datasets')")
            if task == "mapping" and not datasets[ds].get("mapping_query"):
                raise ConfigError(f"config key 'datasets.{ds}.mapping_query' is required because "
                                  f"'{key}.datasets' lists {ds!r}")
        for m in exp["methods"]:
            if m not in allowed_methods(task):
                raise ConfigError(f"config key '{key}.methods': {m!r} cannot run {task}; "
                                  f"allowed: {allowed_methods(task)}")
        if len(set(exp["methods"])) != len(exp["methods"]):
            raise ConfigError(f"config key '{key}.methods' lists a method twice: {exp['methods']}")
        levels = [str(h) for h in exp["hvg_levels"]]
        if len(set(levels)) != len(levels):
            raise ConfigError(f"config key '{key}.hvg_levels' repeats a level: {levels}")
        for h in levels:
            if h != "all" and (not h.isdigit() or int(h) <= 0):
                raise ConfigError(f"config key '{key}.hvg_levels': {h!r} is not a positive "
                                  f"integer or 'all'")
    for m in config["metrics"]["integration"]:
        if m not in INTEGRATION_METRICS:
            raise ConfigError(f"config key 'metrics.integration': unknown metric {m!r}; "
                              f"allowed: {sorted(INTEGRATION_METRICS)}")


def plan(config: dict, task: str) -> list[dict]:
    """[{dataset, hvg, methods}] for an enabled task, [] when switched off."""
    exp = config["experiments"][task]
    if not exp["enabled"]:
        return []
    return [{"dataset": ds, "hvg": str(h), "methods": list(exp["methods"])}
            for ds in exp["datasets"] for h in exp["hvg_levels"]]
