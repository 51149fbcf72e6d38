# Competitors from concerto_workflow.methods.REGISTRY, one generic rule per task.
# Each writes the embedding contract even when the method cannot run (status row).


rule integrate_competitor:
    input:
        "results/{dataset}/integration/hvg_{hvg}/cells.h5ad",
    output:
        "results/{dataset}/integration/hvg_{hvg}/embeddings/{competitor}.h5ad",
    params:
        method_params=method_params,
        installed=competitor_installed,
        n_comps=config["competitors"]["n_comps"],
        seed=config["seed"],
    log:
        "results/logs/integrate/{dataset}_hvg_{hvg}_{competitor}.log",
    benchmark:
        "results/benchmarks/integrate/{dataset}_hvg_{hvg}_{competitor}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 6000 * attempt,
    conda:
        "../envs/competitors.yaml"
    message:
        "Integrating {wildcards.dataset} with competitor {wildcards.competitor} (HVGs {wildcards.hvg})"
    script:
        "../scripts/run_competitor.py"


rule map_competitor:
    input:
        reference="results/{dataset}/mapping/hvg_{hvg}/reference.h5ad",
        query="results/{dataset}/mapping/hvg_{hvg}/query.h5ad",
    output:
        "results/{dataset}/mapping/hvg_{hvg}/embeddings/{competitor}.h5ad",
    params:
        method_params=method_params,
        installed=competitor_installed,
        n_comps=config["competitors"]["n_comps"],
        seed=config["seed"],
    log:
        "results/logs/map/{dataset}_hvg_{hvg}_{competitor}.log",
    benchmark:
        "results/benchmarks/map/{dataset}_hvg_{hvg}_{competitor}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 6000 * attempt,
    conda:
        "../envs/competitors.yaml"
    message:
        "Mapping {wildcards.dataset} query with competitor {wildcards.competitor} (HVGs {wildcards.hvg})"
    script:
        "../scripts/run_competitor.py"
