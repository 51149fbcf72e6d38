# Paths, wildcard constraints and the functions that expand the config into jobs. No rules here.
import re

import pandas as pd

from concerto_workflow import sources as src_mod
from concerto_workflow import workflow_config as wc_cfg
from concerto_workflow.methods import CONCERTO, REGISTRY, installed

EXPERIMENTS = wc_cfg.enabled_experiments(config)
FIGURES = {n: f for n, f in config.get("figures", {}).items() if wc_cfg.figure_enabled(config, n)}

CELLS = "results/{experiment}/{fold}/{prep}/cells.h5ad"
MODEL = "results/{experiment}/{fold}/{prep}/concerto_model/seed{seed}"
OUTPUT = "results/{experiment}/{fold}/{prep}/{method}/seed{seed}.h5ad"
# the 2-d UMAP coordinates of every method a figure draws on this fold (column 'method')
UMAPS = "results/{experiment}/{fold}/{prep}/umap_seed{seed}.tsv"


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "__none__"


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    experiment=_alternatives(config["experiments"]),
    prep=_alternatives(config["preprocessing"]),
    method=_alternatives(REGISTRY),
    fold="[A-Za-z0-9_.-]+",
    seed="[0-9]+",
    figure=_alternatives(config.get("figures", {})),


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def dataset_file(wildcards):
    """The real data's h5ad: a download (source real), a local file (source local), a converted
    source of config/sources.yaml (source download), the parts' prepared files (source concat,
    in the order of concat.datasets), or none (stand-in)."""
    d = dataset_cfg(wildcards)
    if d["source"] == "concat":
        return [f"results/data/{part}/raw.h5ad" for part in d["concat"]["datasets"]]
    if d["source"] == "real":
        return f"results/downloads/{wildcards.dataset}.h5ad"
    if d["source"] == "local":
        return d["local"]["path"]
    if d["source"] == "download":
        return src_mod.converted_path(d["download"]["source_id"])
    return []


SOURCES = src_mod.load_sources()                 # config/sources.yaml (rules/download.smk)
SOURCE_FILES = {sid: src_mod.source_files(s, sid) for sid, s in SOURCES.items()}


def downloaded_files(wildcards):
    """Files of a source the workflow downloads (local_files are checked by the convert step)."""
    s = SOURCES[wildcards.source_id]
    return [src_mod.download_path(wildcards.source_id, role, f["url"]) for role, f in s["files"].items()]


def experiment(wildcards):
    return config["experiments"][wildcards.experiment]


def folds_of(name):
    """Fold names of an experiment: from the config, or (k-fold within groups, leave-one-out
    without listed values) from its split table once the make_split checkpoint has run."""
    folds = wc_cfg.static_folds(config, name)
    if folds is None:
        table = checkpoints.make_split.get(experiment=name).output.table
        folds = sorted(pd.read_csv(table, sep="\t", usecols=["fold"])["fold"].unique())
    return folds


def split_datasets(wildcards):
    """Raw data the experiment's split reads: its dataset (+ the cross-dataset query)."""
    e = experiment(wildcards)
    split = config["splits"][e["split"]]
    out = {"raw": f"results/data/{e['dataset']}/raw.h5ad"}
    if split["kind"] == "cross_dataset":
        out["query_raw"] = f"results/data/{split['query_dataset']}/raw.h5ad"
        if split.get("gene_map", {}).get("source") == "table":   # may be made by convert_gene_map
            out["gene_map"] = split["gene_map"]["path"]
    return out


def concerto_threads():
    """Threads of a Concerto job: config concerto_threads (0 = all cores), at most --cores."""
    n = config["concerto_threads"]
    return workflow.cores if n == 0 else min(n, workflow.cores)


def method_inputs(wildcards):
    out = {"cells": CELLS.format(**wildcards)}
    if REGISTRY[wildcards.method].needs_model:
        out["model"] = MODEL.format(**wildcards)
    return out


def previous_failure(wildcards, output=None):
    """'' or the reason of an existing 'failed' output of this job. As a param it changes when a
    method fails, so the next run retries the job once (Snakemake's params rerun trigger)
    instead of keeping the failure forever; a repeat of the same failure is kept."""
    from concerto_workflow.outputs import recorded_failure

    return recorded_failure(OUTPUT.format(**wildcards))


def fold_outputs(name, pattern, methods=None, preps=None, seeds=None, folds=None):
    e = config["experiments"][name]
    return expand(pattern, experiment=name, fold=folds or folds_of(name), prep=preps or e["preprocessing"],
                  method=methods or e["methods"], seed=seeds or e["seeds"])


def experiment_outputs(wildcards):
    return fold_outputs(wildcards.experiment, OUTPUT)


def figure_spec(wildcards):
    return config["figures"][wildcards.figure]


def figure_tables(wildcards):
    return [f"results/{x}/scores.tsv" for x in figure_spec(wildcards)["experiments"]]


def _figure_focus(f):
    """(experiment, preprocessing, fold (default the first), first seed) a single-fold figure draws."""
    name = f["experiments"][0]
    e = config["experiments"][name]
    return name, f.get("preprocessing") or e["preprocessing"][0], f.get("fold") or folds_of(name)[0], e["seeds"][0]


def figure_umap_methods(f):
    """Methods whose UMAP a figure draws: its `methods` (default the experiment's); the first
    only for a measured-vs-inferred figure, which lays every row out on that method's UMAP."""
    e = config["experiments"][f["experiments"][0]]
    methods = list(f.get("methods") or e["methods"])
    return methods[:1] if f["type"] == "feature_umap" and e["task"] == "impute" else methods


def figure_umaps(wildcards):
    name, prep, fold, seed = _figure_focus(figure_spec(wildcards))
    return UMAPS.format(experiment=name, fold=fold, prep=prep, seed=seed)


def umap_inputs(wildcards):
    """The outputs of the methods any UMAP figure draws on this experiment's fold: one job
    computes them all (a job per method spent more time starting than computing)."""
    methods = []
    for f in FIGURES.values():
        if f["type"] not in ("umap_grid", "feature_umap") or f["experiments"][0] != wildcards.experiment:
            continue
        _, prep, fold, seed = _figure_focus(f)
        if (prep, str(fold), int(seed)) == (wildcards.prep, wildcards.fold, int(wildcards.seed)):
            methods += [m for m in figure_umap_methods(f) if m not in methods]
    return [OUTPUT.format(method=m, **wildcards) for m in methods]


def figure_method_outputs(wildcards):
    f = figure_spec(wildcards)
    name, prep, fold, seed = _figure_focus(f)
    methods = [f["method"]] if f["type"] in ("confusion", "sankey") else None
    return fold_outputs(name, OUTPUT, methods=methods, preps=[prep], folds=[fold], seeds=[seed])


def figure_marker_inputs(wildcards):
    """Marker figures (feature_umap, marker_distance): the focus fold's cells, plus the methods'
    UMAP tables or outputs."""
    f = figure_spec(wildcards)
    name, prep, fold, seed = _figure_focus(f)
    out = {"cells": CELLS.format(experiment=name, fold=fold, prep=prep)}
    if f["type"] == "feature_umap" and config["experiments"][name]["task"] == "impute":
        # measured vs each method's inferred values, on the UMAP of the first method's space
        methods = f.get("methods") or config["experiments"][name]["methods"]
        out["umaps"] = UMAPS.format(experiment=name, fold=fold, prep=prep, seed=seed)
        out["outputs"] = fold_outputs(name, OUTPUT, methods=methods, preps=[prep], folds=[fold], seeds=[seed])
    elif f["type"] == "feature_umap":
        out["umaps"] = UMAPS.format(experiment=name, fold=fold, prep=prep, seed=seed)
    else:
        out["outputs"] = fold_outputs(name, OUTPUT, preps=[prep], folds=[fold], seeds=[seed])
    return out
SIGNATURES = "results/signatures/{figure}"


def figure_attention_inputs(wildcards):
    """Concerto's embed output (with attention weights) and the fold's cells of an attention figure."""
    name, prep, fold, seed = _figure_focus(figure_spec(wildcards))
    return {"output": OUTPUT.format(experiment=name, fold=fold, prep=prep, method=CONCERTO, seed=seed),
            "cells": CELLS.format(experiment=name, fold=fold, prep=prep)}


def caption_text(wildcards):
    f = figure_spec(wildcards)
    path = os.path.join(workflow.basedir, f["caption"]) if f.get("caption") else ""
    text = open(path).read() if path else ""
    exps = "; ".join(config["experiments"][x].get("description") or x for x in f["experiments"])
    return f"Paper panel {f['panel']}. {exps}. {wc_cfg.data_origin(config, f['experiments'])}\n\n{text}"


def figures_of(*types):
    return _alternatives([n for n, f in config.get("figures", {}).items() if f["type"] in types])


def figure_params(wildcards):
    f = figure_spec(wildcards)
    default = (["runtime_s", "peak_memory_mb"] if f["type"] == "loglog" else
               dict.fromkeys(m for x in f["experiments"] for m in wc_cfg.experiment_metrics(config, x)))
    metrics = list(f.get("metrics") or default)
    title = f.get("title") or "; ".join(config["experiments"][x].get("description") or x for x in f["experiments"])
    return dict(type=f["type"], metrics=metrics, umap_methods=figure_umap_methods(f), x=f.get("x", "preprocessing"), title=title,
                markers=dict(f.get("markers", {})), group_by=f.get("group_by", "cell_type"), n_top=f.get("n_top", 20),
                color_by=list(f.get("color_by", ["cell_type", "batch"])), method=f.get("method", CONCERTO),
                paper_methods=list(f.get("paper_methods", [])), features=list(f.get("features", [])),
                label_key=f.get("label_key", "cell_type"), group=f.get("group", ""), target=f.get("target", ""),
                tools={k: list(v) for k, v in f.get("tools", {}).items()}, relative_to=f.get("relative_to", ""),
                sweeps={k: dict(v) for k, v in f.get("sweeps", {}).items()})


FIGURE_REPORT = dict(caption="../report/figure.rst", category="Paper figures", labels={"figure": "{figure}"})


def figure_targets():
    return [f"results/figures/{n}.png" for n in FIGURES]


def benchmark_targets():
    if config["benchmarks"]["scale"]["enabled"]:
        return ["results/benchmarks/scale.json", "results/figures/scale_benchmark.png"]
    return []


def covid_targets(config):
    """Fig 5 figures and tables when covid.enabled (rules/covid.smk)."""
    from concerto_workflow import covid

    if not config.get("covid", {}).get("enabled", False):
        return []
    return [f"results/figures/{n}.png" for n in covid.FIGURES] + [f"results/covid/{t}.tsv" for t in covid.TABLES]


def all_targets(wildcards):
    targets = [f"results/{x}/scores.tsv" for x in EXPERIMENTS] + figure_targets() + benchmark_targets()
    targets += ["results/runtimes.tsv", "results/figures/runtimes.png", "results/config_used.yaml"]
    return sorted(set(targets))
