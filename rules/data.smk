# Datasets in the common schema: X raw counts (CSR), obs cell_type / batch / tech.



rule download_real:
    output:
        "results/downloads/{dataset}.h5ad",
    params:
        url=lambda wc: config["datasets"][wc.dataset]["real"]["url"],
    log:
        "results/logs/download_real/{dataset}.log",
    benchmark:
        "results/benchmarks/download_real/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Downloading the real {wildcards.dataset} data from {params.url}"
    shell:
        "curl -fL --retry 3 -o {output} {params.url:q} > {log} 2>&1"


rule prepare_dataset:
    input:
        dataset_file,
    output:
        "results/data/{dataset}/raw.h5ad",
    params:
        name="{dataset}",
        cfg=dataset_cfg,
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_dataset/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Preparing dataset {wildcards.dataset} (source: {params.cfg[source]})"
    script:
        "../scripts/prepare_dataset.py"
