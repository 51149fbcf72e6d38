# Metrics and UMAP coordinates from embedding files -> tidy tables.


rule evaluate_integration:
    input:
        "results/{dataset}/integration/hvg_{hvg}/embeddings/{method}.h5ad",
    output:
        metrics="results/{dataset}/integration/hvg_{hvg}/metrics/{method}.tsv",
        umap="results/{dataset}/integration/hvg_{hvg}/umap/{method}.tsv",
    params:
        metrics=config["metrics"],
        umap=config["umap"],
        seed=config["seed"],
    log:
        "results/logs/evaluate_integration/{dataset}_hvg_{hvg}_{method}.log",
    benchmark:
        "results/benchmarks/evaluate_integration/{dataset}_hvg_{hvg}_{method}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "kBET/ASW and UMAP of {wildcards.method} on {wildcards.dataset} (HVGs {wildcards.hvg})"
    script:
        "../scripts/evaluate_integration.py"


rule evaluate_mapping:
    input:
        "results/{dataset}/mapping/hvg_{hvg}/embeddings/{method}.h5ad",
    output:
        predictions="results/{dataset}/mapping/hvg_{hvg}/predictions/{method}.tsv",
        metrics="results/{dataset}/mapping/hvg_{hvg}/metrics/{method}.tsv",
        confusion="results/{dataset}/mapping/hvg_{hvg}/confusion/{method}.tsv",
    params:
        k=config["metrics"]["knn_k"],
    log:
        "results/logs/evaluate_mapping/{dataset}_hvg_{hvg}_{method}.log",
    benchmark:
        "results/benchmarks/evaluate_mapping/{dataset}_hvg_{hvg}_{method}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "{params.k}-NN label transfer with {wildcards.method} on {wildcards.dataset} (HVGs {wildcards.hvg})"
    script:
        "../scripts/evaluate_mapping.py"



rule collect_metrics:
    input:
        split_metric_tables,
    output:
        "results/{dataset}/{split}/metrics.tsv",
    log:
        "results/logs/collect_metrics/{dataset}_{split}.log",
    benchmark:
        "results/benchmarks/collect_metrics/{dataset}_{split}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Collecting {wildcards.split} metrics of {wildcards.dataset}"
    script:
        "../scripts/collect_metrics.py"
