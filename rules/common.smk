# Paths, wildcard constraints and the target function. No rules here.
from concerto_workflow.methods import CONCERTO, REGISTRY, installed
from concerto_workflow.workflow_config import plan

RES = "results"
RUN = "results/{dataset}/{split}/hvg_{hvg}"
INTEG = "results/{dataset}/integration/hvg_{hvg}"
MAPP = "results/{dataset}/mapping/hvg_{hvg}"
LOGS = "results/logs"
BENCH = "results/benchmarks"
FIGS = "results/figures/{dataset}"

# competitor wildcard: any registered method name, never 'concerto' (own rules)
COMPETITORS = "|".join(sorted(REGISTRY))


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    split="integration|mapping",
    hvg="all|[0-9]+",
    method="[a-z0-9_]+",
    competitor=COMPETITORS,


def tsv_params():
    """Arguments shared by every table-producing rule (deterministic)."""
    return {"seed": config["seed"]}


def integration_targets():
    out = []
    for p in plan(config, "integration"):
        out.append(f"results/figures/{p['dataset']}/fig3e_umap_hvg_{p['hvg']}.png")
        out.append(f"results/figures/{p['dataset']}/fig3g_batch_metrics.png")
        out.append(f"results/{p['dataset']}/integration/metrics.tsv")
    return out


def mapping_targets():
    out = []
    for p in plan(config, "mapping"):
        out.append(f"results/figures/{p['dataset']}/fig4a_mapping_accuracy.png")
        out.append(f"results/{p['dataset']}/mapping/metrics.tsv")
        if CONCERTO in p["methods"]:
            out.append(f"results/figures/{p['dataset']}/fig4b_confusion_concerto_hvg_{p['hvg']}.png")
    return out


def benchmark_targets():
    out = []
    if config["benchmarks"]["scale"]["enabled"]:
        out += ["results/benchmarks/scale.json", "results/figures/scale_benchmark.png"]
    return out


def all_targets(wildcards):
    targets = integration_targets() + mapping_targets() + benchmark_targets()
    targets += [f"results/runtimes.tsv", f"results/figures/runtimes.png", f"results/config_used.yaml"]
    return sorted(set(targets))


def method_list(task, dataset):
    return [p["methods"] for p in plan(config, task) if p["dataset"] == dataset][0]


def hvg_list(task, dataset):
    return [p["hvg"] for p in plan(config, task) if p["dataset"] == dataset]


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def competitor_installed(wildcards):
    return installed(wildcards.competitor)


def method_params(wildcards):
    return config["competitors"]["params"].get(wildcards.competitor, {})


def real_download(wildcards):
    d = config["datasets"][wildcards.dataset]
    return f"results/downloads/{wildcards.dataset}.h5ad" if d["source"] == "real" else []


def concerto_training_cells(wildcards):
    name = "cells" if wildcards.split == "integration" else "reference"
    return f"results/{wildcards.dataset}/{wildcards.split}/hvg_{wildcards.hvg}/{name}.h5ad"


def split_metric_tables(wildcards):
    task = wildcards.split
    return [
        f"results/{wildcards.dataset}/{task}/hvg_{h}/metrics/{m}.tsv"
        for h in hvg_list(task, wildcards.dataset)
        for m in method_list(task, wildcards.dataset)
    ]
