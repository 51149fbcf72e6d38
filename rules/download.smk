# Real data: download every file of a source (config/sources.yaml) -> convert it to the standard
# schema -> the engine's prepare_dataset (rules/data.smk). Downloads are local rules: on a
# cluster they run on the submitting machine, which has the network. Each downloaded file is
# verified (published checksum, else the sha256 in config/downloads.lock.yaml) before it
# becomes an output; see concerto_workflow.download.


localrules:
    download_file,


rule download_file:
    output:
        "results/downloads/{source_id}/{filename}",
    wildcard_constraints:
        source_id=_alternatives(SOURCES),
        filename=_alternatives({src_mod.file_name(r, f["url"]) for s in SOURCES.values() for r, f in s["files"].items()}),
    params:
        spec=lambda wc: src_mod.file_spec(SOURCES, wc.source_id, wc.filename),
        name="{source_id}",
        lock=str(src_mod.LOCK),
    log:
        "results/logs/download_file/{source_id}/{filename}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Downloading {wildcards.filename} of {wildcards.source_id} from {params.spec[1]}"
    script:
        "../scripts/download_file.py"


rule convert_source:
    input:
        downloaded_files,
    output:
        "results/downloads/{source_id}/standard.h5ad",
    wildcard_constraints:
        source_id=_alternatives([sid for sid, s in SOURCES.items() if "convert" in s]),
    params:
        name="{source_id}",
        spec=lambda wc: SOURCES[wc.source_id]["convert"],
        files=lambda wc: SOURCE_FILES[wc.source_id],
        notes=lambda wc: SOURCES[wc.source_id].get("notes", ""),
    log:
        "results/logs/convert_source/{source_id}.log",
    benchmark:
        "results/benchmarks/convert_source/{source_id}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 16000 * attempt,
    conda:
        "../envs/workflow.yaml"
    message:
        "Converting {wildcards.source_id} to the standard dataset schema"
    script:
        "../scripts/convert_source.py"


rule convert_gene_map:
    input:
        lambda wc: SOURCE_FILES[wc.source_id][SOURCES[wc.source_id]["gene_map"]["file"]],
    output:
        "results/downloads/{source_id}/orthologs.tsv",
    wildcard_constraints:
        source_id=_alternatives([sid for sid, s in SOURCES.items() if "gene_map" in s]),
    log:
        "results/logs/convert_gene_map/{source_id}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "One-to-one human-mouse orthologs from {input}"
    script:
        "../scripts/convert_gene_map.py"
