# Datasets in the common schema: X raw counts (CSR), obs cell_type / batch / tech. Sources of
# kind 'download' come from rules/download.smk; a 'concat' dataset is made from its parts'
# prepared files (dataset_file in rules/common.smk), so the parts are prepared first.



localrules:
    download_real,


rule download_real:
    output:
        "results/downloads/{dataset}.h5ad",
    params:
        # (role, url, published checksum): none published, so the lock file records it
        spec=lambda wc: ("h5ad", config["datasets"][wc.dataset]["real"]["url"], None),
        name="{dataset}",
        lock=str(src_mod.LOCK),
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
        "Downloading the real {wildcards.dataset} data from {params.spec[1]}"
    script:
        "../scripts/download_file.py"


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
