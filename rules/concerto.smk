# Concerto itself (concerto_core). Its failures fail the run (no status rows).



rule train_concerto:
    input:
        concerto_training_cells,
    output:
        directory("results/{dataset}/{split}/hvg_{hvg}/models/concerto"),
    params:
        epochs=config["concerto"]["epochs"],
        batch_size=config["concerto"]["batch_size"],
        batch_key="batch" if config["concerto"]["source_aware"] else None,
        seed=config["seed"],
    log:
        "results/logs/train_concerto/{dataset}_{split}_hvg_{hvg}.log",
    benchmark:
        "results/benchmarks/train_concerto/{dataset}_{split}_hvg_{hvg}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        gpu=1,
        runtime=120,
    conda:
        "../envs/concerto.yaml"
    message:
        "Training Concerto on {wildcards.dataset} ({wildcards.split}, HVGs {wildcards.hvg}, {params.epochs} epochs)"
    script:
        "../scripts/train_concerto.py"


rule embed_concerto_integration:
    input:
        model="results/{dataset}/integration/hvg_{hvg}/models/concerto",
        cells="results/{dataset}/integration/hvg_{hvg}/cells.h5ad",
    output:
        "results/{dataset}/integration/hvg_{hvg}/embeddings/concerto.h5ad",
    log:
        "results/logs/embed_concerto/{dataset}_integration_hvg_{hvg}.log",
    benchmark:
        "results/benchmarks/embed_concerto/{dataset}_integration_hvg_{hvg}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
    conda:
        "../envs/concerto.yaml"
    message:
        "Embedding {wildcards.dataset} with Concerto (integration, HVGs {wildcards.hvg})"
    script:
        "../scripts/embed_concerto.py"


rule embed_concerto_mapping:
    input:
        model="results/{dataset}/mapping/hvg_{hvg}/models/concerto",
        reference="results/{dataset}/mapping/hvg_{hvg}/reference.h5ad",
        query="results/{dataset}/mapping/hvg_{hvg}/query.h5ad",
    output:
        "results/{dataset}/mapping/hvg_{hvg}/embeddings/concerto.h5ad",
    log:
        "results/logs/embed_concerto/{dataset}_mapping_hvg_{hvg}.log",
    benchmark:
        "results/benchmarks/embed_concerto/{dataset}_mapping_hvg_{hvg}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
    conda:
        "../envs/concerto.yaml"
    message:
        "Embedding {wildcards.dataset} reference and query with the reference-trained Concerto (HVGs {wildcards.hvg})"
    script:
        "../scripts/embed_concerto.py"
