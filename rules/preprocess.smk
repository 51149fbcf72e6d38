# Filtering, normalisation, HVGs fitted on the training cells of each experiment.


rule preprocess_integration:
    input:
        "results/data/{dataset}/raw.h5ad",
    output:
        "results/{dataset}/integration/hvg_{hvg}/cells.h5ad",
    params:
        pp=config["preprocessing"],
    log:
        "results/logs/preprocess_integration/{dataset}_hvg_{hvg}.log",
    benchmark:
        "results/benchmarks/preprocess_integration/{dataset}_hvg_{hvg}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Preprocessing {wildcards.dataset} for integration (HVGs: {wildcards.hvg}, fitted on all cells)"
    script:
        "../scripts/preprocess.py"


rule preprocess_mapping:
    input:
        "results/data/{dataset}/raw.h5ad",
    output:
        reference="results/{dataset}/mapping/hvg_{hvg}/reference.h5ad",
        query="results/{dataset}/mapping/hvg_{hvg}/query.h5ad",
    params:
        pp=config["preprocessing"],
        query=lambda wc: config["datasets"][wc.dataset]["mapping_query"],
    log:
        "results/logs/preprocess_mapping/{dataset}_hvg_{hvg}.log",
    benchmark:
        "results/benchmarks/preprocess_mapping/{dataset}_hvg_{hvg}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Splitting {wildcards.dataset} into reference/query {params.query[key]}={params.query[value]}; HVGs ({wildcards.hvg}) fitted on the reference"
    script:
        "../scripts/preprocess.py"
