"""Config checks a JSON schema cannot express, and the plan (which jobs the study implies).

``check_config`` runs right after ``snakemake.utils.validate`` in the Snakefile, so impossible
settings fail the dry run; every message names the offending key and what is allowed. Method
and metric names are checked against their registries here and nowhere else.
"""
from __future__ import annotations

import inspect
import os

from .methods import REGISTRY, accepted_params, capability, methods_for
from .outputs import TASKS
from .scoring import METRICS, metrics_for
from .splits import fold_names

#: what each figure type can draw
FIGURE_TASKS = {"bars": TASKS, "box": TASKS, "heatmap": TASKS, "lines": ("cluster",), "sweep": TASKS,
                "umap_grid": ("embed", "map", "cluster", "annotate"), "confusion": ("map", "annotate"),
                "sankey": ("map", "annotate"), "densities": ("map", "annotate"), "loglog": TASKS,
                "feature_umap": ("embed", "map", "impute"), "marker_distance": ("map",), "overall": TASKS,
                "scalability": ("map",), "attention": ("embed",), "table": TASKS}
#: keys each split kind needs
SPLIT_KEYS = {"all": (), "holdout": ("key", "values"), "cross_dataset": ("query_dataset",), "kfold": ("k",),
              "leave_one_out": ("key",), "label_mask": ("remove",)}


class ConfigError(ValueError):
    pass


def standin_maker(name: str, dataset: dict):
    from .simulate import standins

    maker = dataset.get("standin", {}).get("maker", name)
    fn = getattr(standins, f"make_{maker}", None)
    if fn is None:
        known = sorted(n[5:] for n in dir(standins) if n.startswith("make_"))
        raise ConfigError(f"config key 'datasets.{name}': no stand-in make_{maker}(); set "
                          f"'datasets.{name}.standin.maker' to one of {known} or use source real/local")
    return fn


def standin_kwargs(dataset: dict) -> dict:
    return {k: v for k, v in dataset.get("standin", {}).items() if k != "maker"}


def known_gene_count(config: dict, name: str) -> int | None:
    """Genes of a stand-in (from its parameters or the maker's default); None for real data."""
    d = config["datasets"][name]
    if d["source"] != "standin":
        return None
    fn = standin_maker(name, d)
    default = inspect.signature(fn).parameters.get("n_genes")
    return int(standin_kwargs(d).get("n_genes", default.default if default else 0)) or None


def hvg_count(prep: dict) -> int | None:
    n = str(prep.get("n_top_genes", 2000))
    return None if n == "all" else int(n)


def enabled_experiments(config: dict) -> dict[str, dict]:
    return {n: e for n, e in config["experiments"].items() if e.get("enabled", True)}


def method_params(config: dict, experiment: str, method: str) -> dict:
    """Method parameters for one experiment: method_params overridden by the experiment's params."""
    exp = config["experiments"][experiment]
    return {**config.get("method_params", {}).get(method, {}), **exp.get("params", {}).get(method, {})}


def cluster_settings(config: dict, experiment: str, method: str) -> list:
    """Settings of ``method``'s cluster job: its entry of the experiment's ``cluster_settings``
    (e.g. scDeepCluster's numbers of clusters), else the experiment's ``resolutions``."""
    exp = config["experiments"][experiment]
    return list(exp.get("cluster_settings", {}).get(method, exp["resolutions"]))


def experiment_metrics(config: dict, experiment: str) -> list[str]:
    exp = config["experiments"][experiment]
    return list(exp.get("metrics") or metrics_for(exp["task"]))


#: config paths under this prefix name files the workflow itself makes (e.g. the ortholog table of
#: rule convert_gene_map): relative to the run directory, and not expected to exist before the run
WORKFLOW_OUTPUT_PREFIX = "results/"


def _made_by_workflow(path: str) -> bool:
    return os.path.normpath(path).startswith(WORKFLOW_OUTPUT_PREFIX)


def resolve_paths(config: dict, base: str = "") -> dict:
    """Make the config's input file paths (``datasets.*.local.path``, ``splits.*.gene_map.path``)
    absolute, relative ones starting at ``base`` (default: the repository). So a study shipped
    in ``config/`` names ``../shared/data/x.h5ad`` once and runs from any working directory
    (``snakemake --directory /tmp/run``) of a clone placed beside ``shared/``. Paths under
    ``results/`` are the workflow's own outputs and stay relative to the run directory. In
    place; returns ``config``."""
    base = base or REPO

    def resolve(holder: dict) -> None:
        if holder.get("path") and not _made_by_workflow(holder["path"]):
            holder["path"] = os.path.normpath(os.path.join(base, os.path.expanduser(holder["path"])))

    for d in config.get("datasets", {}).values():
        resolve(d.get("local") or {})
    for s in config.get("splits", {}).values():
        resolve(s.get("gene_map") or {})
    return config


def _check_dataset(name: str, d: dict) -> None:
    key = f"datasets.{name}"
    if d["source"] == "real" and not d.get("real", {}).get("url"):
        raise ConfigError(f"config key '{key}.real.url' is required when '{key}.source' is 'real'")
    if d["source"] == "local":
        path = d.get("local", {}).get("path")
        if not path:
            raise ConfigError(f"config key '{key}.local.path' is required when '{key}.source' is 'local'")
        if not os.path.exists(path):
            raise ConfigError(f"config key '{key}.local.path': {path!r} does not exist (relative "
                              f"paths start at the repository {REPO}: see resolve_paths)")
    if d["source"] == "download":
        from .sources import SOURCES, load_sources

        sid, sources = d.get("download", {}).get("source_id"), load_sources()
        if sid not in sources or "convert" not in sources[sid]:
            raise ConfigError(f"config key '{key}.download.source_id' = {sid!r}: not a dataset source of "
                              f"{SOURCES}; those are {sorted(s for s in sources if 'convert' in sources[s])}")
    if d["source"] == "standin":
        fn = standin_maker(name, d)
        params = inspect.signature(fn).parameters
        unknown = sorted(set(standin_kwargs(d)) - set(params))
        if unknown:
            raise ConfigError(f"config key '{key}.standin': make_{fn.__name__[5:]}() does not take "
                              f"{unknown}; it takes {sorted(p for p in params)}")


def _check_concat(name: str, datasets: dict) -> None:
    """A concat dataset names at least two other datasets of the config, none twice, no chain of
    concats leads back to itself, and its origin column is new to its parts."""
    from .columns import DATASET_COLUMNS

    key = f"datasets.{name}.concat"
    c = datasets[name].get("concat") or {}
    parts = c.get("datasets") or []
    if len(parts) < 2:
        raise ConfigError(f"config key '{key}.datasets' needs at least 2 dataset names when "
                          f"'datasets.{name}.source' is 'concat' (got {parts})")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"config key '{key}.datasets' names a dataset twice: {parts}")
    for p in parts:
        if p == name:
            raise ConfigError(f"config key '{key}.datasets': {name!r} cannot contain itself")
        if p not in datasets:
            raise ConfigError(f"config key '{key}.datasets': unknown dataset {p!r}; defined: {sorted(datasets)}")

    def walk(n: str, path: list[str]) -> None:
        if datasets[n]["source"] != "concat":
            return
        for p in (datasets[n].get("concat") or {}).get("datasets") or []:
            if p == name:
                raise ConfigError(f"config key '{key}.datasets': a cycle of concat datasets "
                                  f"{' -> '.join(path + [p])}")
            if p in datasets and p not in path:   # a cycle elsewhere is reported by its own entry
                walk(p, path + [p])

    walk(name, [name])
    origin = c.get("origin_col", "origin")
    if origin in DATASET_COLUMNS:
        raise ConfigError(f"config key '{key}.origin_col' = {origin!r} would overwrite a standard "
                          f"column {DATASET_COLUMNS}")
    for p in parts:   # a concat of concats: the parts already carry their own origin column
        inner = datasets[p].get("concat") or {}
        if datasets[p]["source"] == "concat" and inner.get("origin_col", "origin") == origin:
            raise ConfigError(f"config key '{key}.origin_col' = {origin!r} is also the origin_col of part {p!r} "
                              f"(a concat itself); give one of them another name")


def _check_split(name: str, s: dict, datasets: dict) -> None:
    key = f"splits.{name}"
    for k in SPLIT_KEYS[s["kind"]]:
        if s.get(k) in (None, "", []):
            raise ConfigError(f"config key '{key}.{k}' is required for kind {s['kind']!r}")
    if s["kind"] == "kfold" and s.get("max_folds", 0) > s["k"]:
        raise ConfigError(f"config key '{key}.max_folds' = {s['max_folds']} exceeds '{key}.k' = {s['k']}")
    if s["kind"] == "cross_dataset":
        if s["query_dataset"] not in datasets:
            raise ConfigError(f"config key '{key}.query_dataset': unknown dataset {s['query_dataset']!r}; "
                              f"defined: {sorted(datasets)}")
        gm = s.get("gene_map", {"source": "none"})
        if gm.get("source") == "table" and not gm.get("path"):
            raise ConfigError(f"config key '{key}.gene_map.path' is required for source 'table'")
        if gm.get("source") == "table" and not _made_by_workflow(gm["path"]) and not os.path.exists(gm["path"]):
            raise ConfigError(f"config key '{key}.gene_map.path': {gm['path']!r} does not exist "
                              f"(relative paths start at the repository {REPO})")
        if gm.get("source") == "var_column" and not gm.get("column"):
            raise ConfigError(f"config key '{key}.gene_map.column' is required for source 'var_column'")


def _check_experiment(config: dict, name: str, e: dict) -> None:
    key = f"experiments.{name}"
    task = e["task"]
    for field, section in (("dataset", "datasets"), ("split", "splits")):
        if e[field] not in config[section]:
            raise ConfigError(f"config key '{key}.{field}': unknown {field} {e[field]!r}; "
                              f"defined under '{section}': {sorted(config[section])}")
    for p in e["preprocessing"]:
        if p not in config["preprocessing"]:
            raise ConfigError(f"config key '{key}.preprocessing': unknown id {p!r}; defined: "
                              f"{sorted(config['preprocessing'])}")
        n_hvg, n_genes = hvg_count(config["preprocessing"][p]), known_gene_count(config, e["dataset"])
        if n_hvg and n_genes and n_hvg > n_genes:
            raise ConfigError(f"config key 'preprocessing.{p}.n_top_genes' = {n_hvg} exceeds the "
                              f"{n_genes} genes of dataset {e['dataset']!r} (experiment {name!r})")
    if len(set(e["methods"])) != len(e["methods"]):
        raise ConfigError(f"config key '{key}.methods' lists a method twice: {e['methods']}")
    for m in e["methods"]:
        if m not in REGISTRY:
            raise ConfigError(f"config key '{key}.methods': unknown method {m!r}; registered: {sorted(REGISTRY)}")
        if capability(m, task) is None:
            raise ConfigError(f"config key '{key}.methods': {m!r} cannot run task {task!r}; "
                              f"methods that can: {methods_for(task)}")
        unknown = sorted(set(method_params(config, name, m)) - accepted_params(m, task))
        if unknown:
            raise ConfigError(f"config key '{key}.params.{m}' (or 'method_params.{m}'): {m} does not "
                              f"accept {unknown} for task {task!r}; it accepts "
                              f"{sorted(accepted_params(m, task))}")
    for m in e.get("params", {}):
        if m not in e["methods"]:
            raise ConfigError(f"config key '{key}.params.{m}': {m!r} is not in '{key}.methods'")
    for m, values in e.get("cluster_settings", {}).items():
        if task != "cluster" or m not in e["methods"]:
            raise ConfigError(f"config key '{key}.cluster_settings.{m}': only for methods of a cluster experiment "
                              f"that lists them (task {task!r}, methods {e['methods']})")
        if len(values) != len(e["resolutions"]):
            raise ConfigError(f"config key '{key}.cluster_settings.{m}': {len(values)} settings for the "
                              f"{len(e['resolutions'])} resolutions; the figures pair them by position")
    for metric in e.get("metrics") or []:
        if metric not in METRICS or task not in METRICS[metric].tasks:
            raise ConfigError(f"config key '{key}.metrics': {metric!r} is not a metric of task {task!r}; "
                              f"allowed: {metrics_for(task)}")
    if "asw_label_pairs" in (e.get("metrics") or []) and not config.get("metric_params", {}).get("label_pairs"):
        raise ConfigError(f"config key '{key}.metrics': asw_label_pairs needs 'metric_params.label_pairs', "
                          "e.g. [[CD4 T, CD8 T], [DC, Mono]]")
    split = config["splits"][e["split"]]
    unlabelled = [d for d in (e["dataset"], split.get("query_dataset")) if d and _unlabelled(config, d)]
    if unlabelled and task in ("map", "annotate", "cluster"):
        raise ConfigError(f"config key '{key}.dataset': task {task!r} needs cell-type labels, but dataset(s) "
                          f"{unlabelled} have none (their label_col is empty)")
    if task in ("map", "annotate", "impute") and split["kind"] == "all":
        raise ConfigError(f"config key '{key}.split': task {task!r} needs test cells, but split "
                          f"{e['split']!r} is of kind 'all'")


def _unlabelled(config: dict, dataset: str) -> bool:
    """Whether a real dataset of the config is read without labels (label_col empty)."""
    d = config["datasets"].get(dataset, {})
    return d.get("source") == "local" and d.get("local", {}).get("label_col", "cell_type") == ""


def _check_figure(config: dict, name: str, f: dict) -> None:
    key = f"figures.{name}"
    for x in f["experiments"]:
        if x not in config["experiments"]:
            raise ConfigError(f"config key '{key}.experiments': unknown experiment {x!r}; defined: "
                              f"{sorted(config['experiments'])}")
        e = config["experiments"][x]
        if e["task"] not in FIGURE_TASKS[f["type"]]:
            raise ConfigError(f"config key '{key}.type': a {f['type']} figure cannot draw task "
                              f"{e['task']!r} (experiment {x!r}); it draws {FIGURE_TASKS[f['type']]}")
        if f.get("preprocessing") and f["preprocessing"] not in e["preprocessing"]:
            raise ConfigError(f"config key '{key}.preprocessing': {f['preprocessing']!r} is not among "
                              f"experiment {x!r}'s {e['preprocessing']}")
        if set(f.get("methods") or []) - set(e["methods"]):
            raise ConfigError(f"config key '{key}.methods': {sorted(set(f['methods']) - set(e['methods']))} "
                              f"not run by experiment {x!r}")
        if f["type"] in ("confusion", "sankey") and f.get("method", "concerto") not in e["methods"]:
            raise ConfigError(f"config key '{key}.method': {f.get('method')!r} is not run by experiment {x!r}")
        for metric in [] if f["type"] == "table" else f.get("metrics") or []:
            if metric not in experiment_metrics(config, x) + ["runtime_s", "peak_memory_mb", "n_cells"]:
                raise ConfigError(f"config key '{key}.metrics': experiment {x!r} does not compute "
                                  f"{metric!r}; it computes {experiment_metrics(config, x)}")
    if f["type"] in ("feature_umap", "marker_distance") and not f.get("features"):
        raise ConfigError(f"config key '{key}.features': a {f['type']} figure needs the features it draws "
                          "(genes, or 'protein:NAME')")
    if f["type"] == "marker_distance" and not (f.get("group") and f.get("target")):
        raise ConfigError(f"config key '{key}.group' / '{key}.target': a marker_distance figure needs the "
                          "query cell type whose distances it measures and the reference type it measures to")
    if f["type"] == "overall":
        if len(f.get("tools") or {}) < 2:
            raise ConfigError(f"config key '{key}.tools': an overall figure compares at least 2 tools "
                              "(tool name -> registry methods)")
        for tool, methods in f["tools"].items():
            unknown = [m for m in methods if m not in REGISTRY]
            if unknown:
                raise ConfigError(f"config key '{key}.tools.{tool}': unknown methods {unknown}; "
                                  f"registered: {sorted(REGISTRY)}")
    if f["type"] == "attention":
        _check_attention_figure(config, name, f)
    if f["type"] == "sweep":
        _check_sweep_figure(name, f)
    fold = f.get("fold")
    if fold:
        known = static_folds(config, f["experiments"][0])
        if known is None or fold not in known:
            raise ConfigError(f"config key '{key}.fold': {fold!r} is not a fold of experiment "
                              f"{f['experiments'][0]!r} known from the config (folds: {known})")
    base = f.get("relative_to")
    if base and (f["type"] not in ("bars", "heatmap") or
                 any(base not in config["experiments"][x]["methods"] for x in f["experiments"])):
        raise ConfigError(f"config key '{key}.relative_to': {base!r} must be a method of every experiment "
                          f"drawn, in a bars or heatmap figure")
    if f["type"] == "table":
        computed = {m for x in f["experiments"] for m in experiment_metrics(config, x)}
        unused = [m for m in f.get("metrics") or [] if m not in computed | {"runtime_s", "peak_memory_mb"}]
        if unused:
            raise ConfigError(f"config key '{key}.metrics': no experiment of the table computes {unused}")
    cap = f.get("caption")
    if cap and not os.path.exists(os.path.join(REPO, cap)):
        raise ConfigError(f"config key '{key}.caption': no file {cap!r} in the repository")


def _check_attention_figure(config: dict, name: str, f: dict) -> None:
    """An attention figure draws Concerto's attention of its experiment's embed output."""
    key = f"figures.{name}"
    x = f["experiments"][0]
    if "concerto" not in config["experiments"][x]["methods"] or \
            not method_params(config, x, "concerto").get("attention", False):
        raise ConfigError(f"config key '{key}.experiments': experiment {x!r} must run concerto with "
                          f"'experiments.{x}.params.concerto.attention: true' (the attention weights it draws)")
    if not f.get("markers"):
        raise ConfigError(f"config key '{key}.markers' is required for an attention figure, e.g. "
                          "{rna: [MS4A1, CD19], protein: [CD19, CD20]}")


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check_config(config: dict) -> None:
    for name, d in config["datasets"].items():
        _check_dataset(name, d)
        if d["source"] == "concat":
            _check_concat(name, config["datasets"])
    for name, s in config.get("splits", {}).items():
        _check_split(name, s, config["datasets"])
    for name, e in enabled_experiments(config).items():
        _check_experiment(config, name, e)
    for method, params in config.get("method_params", {}).items():
        if method not in REGISTRY:
            raise ConfigError(f"config key 'method_params.{method}': unknown method; registered: "
                              f"{sorted(REGISTRY)}")
    for name, f in config.get("figures", {}).items():
        _check_figure(config, name, f)


def _check_sweep_figure(name: str, f: dict) -> None:
    key = f"figures.{name}.sweeps"
    sweeps = f.get("sweeps") or {}
    if not sweeps:
        raise ConfigError(f"config key '{key}': a sweep figure needs x-axis label -> {{experiment: x value}}")
    in_sweeps = {x for points in sweeps.values() for x in points}
    if in_sweeps - set(f["experiments"]):
        raise ConfigError(f"config key '{key}': {sorted(in_sweeps - set(f['experiments']))} not in "
                          f"figures.{name}.experiments")
    if set(f["experiments"]) - in_sweeps:
        raise ConfigError(f"config key '{key}': experiments {sorted(set(f['experiments']) - in_sweeps)} "
                          "have no x value in any sweep")


def data_origin(config: dict, experiments) -> str:
    """One sentence for a caption: which datasets the experiments used, real or stand-in."""
    names = []
    for x in experiments:
        e = config["experiments"][x]
        split = config["splits"][e["split"]]
        names += [e["dataset"]] + ([split["query_dataset"]] if split["kind"] == "cross_dataset" else [])
    return "Data: " + "; ".join(_origin(config, n) for n in dict.fromkeys(names)) + "."


def _origin(config: dict, name: str) -> str:
    d = config["datasets"][name]
    if d["source"] == "concat":
        return f"{name}: the cells of [" + "; ".join(_origin(config, p) for p in d["concat"]["datasets"]) + \
            "] concatenated on their shared genes"
    where = {"standin": "simulated stand-in", "real": f"real data from {d.get('real', {}).get('url')}",
             "local": f"real data from {d.get('local', {}).get('path')}",
             "download": f"real data, source {d.get('download', {}).get('source_id')} of config/sources.yaml"}
    return f"{name}: {where[d['source']]}"


def extend_config(config: dict, repo: str = REPO) -> dict:
    """The study ``config`` built on the one its ``extends`` names (a path relative to the
    repository; the base may extend another): each section's entries named here replace the
    base's entries of the same name whole (a real dataset replaces a stand-in without
    inheriting its keys); other values replace the base's. Returns a new dict."""
    if not config.get("extends"):
        return dict(config)
    path = os.path.join(repo, config["extends"])
    if not os.path.exists(path):
        raise ConfigError(f"config key 'extends': no file {config['extends']!r} in the repository {repo}")
    import yaml

    with open(path) as f:
        base = extend_config(yaml.safe_load(f) or {}, repo)
    out = dict(base)
    for k, v in config.items():
        out[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    out["extends"] = ""
    return out


def overall_study_facts(config: dict, experiments: list[str]) -> dict:
    """What Fig 4h's overall table (concerto_workflow.overall) needs from the study itself,
    passed to the plotting job as rule params (a JSON-able dict; the job's own view of the
    config lacked the experiments): the preprocessing ids on all genes, and the (experiment,
    method) runs trained with a second modality."""
    return {"all_gene_preps": [p for p, v in config["preprocessing"].items() if hvg_count(v) is None],
            "multimodal_runs": [[x, m] for x in experiments for m in config["experiments"][x]["methods"]
                                if method_params(config, x, m).get("second_modality")]}


def static_folds(config: dict, experiment: str) -> list[str] | None:
    return fold_names(config["splits"][config["experiments"][experiment]["split"]])


def figure_enabled(config: dict, figure: str) -> bool:
    exps = enabled_experiments(config)
    return all(x in exps for x in config["figures"][figure]["experiments"])


def check_resource_placeholders(resource_settings) -> None:
    """Refuse a cluster profile whose ``<placeholders>`` (account, partitions) were not replaced,
    before any job is submitted with them."""
    import re

    def raw_values(resources):
        if resources is None:
            return []
        items = resources.items() if hasattr(resources, "items") else []
        out = []
        for _, v in items:
            out += raw_values(v) if hasattr(v, "items") else [str(getattr(v, "raw", v))]
        return out

    text = " ".join(raw_values(getattr(resource_settings, "default_resources", None))
                    + raw_values(getattr(resource_settings, "overwrite_resources", None)))
    found = sorted(set(re.findall(r"<[A-Za-z_]+>", text)))
    if found:
        raise ConfigError(f"the cluster profile still has placeholders {found}: edit them in "
                          f"profiles/slurm/config.yaml (or your copy of it) before submitting")
