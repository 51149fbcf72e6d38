# One rule per figure file; figures read result tables only. Each is a report item.


rule fig3e_umap:
    input:
        lambda wc: expand(
            "results/{dataset}/integration/hvg_{hvg}/umap/{method}.tsv",
            dataset=wc.dataset,
            hvg=wc.hvg,
            method=method_list("integration", wc.dataset),
        ),
    output:
        report(
            "results/figures/{dataset}/fig3e_umap_hvg_{hvg}.png",
            caption="../report/fig3e_umap.rst",
            category="Figure 3",
            subcategory="3e integration UMAPs",
            labels={"panel": "3e", "dataset": "{dataset}", "HVGs": "{hvg}"},
        ),
    params:
        methods=lambda wc: method_list("integration", wc.dataset),
    log:
        "results/logs/fig3e_umap/{dataset}_hvg_{hvg}.log",
    benchmark:
        "results/benchmarks/fig3e_umap/{dataset}_hvg_{hvg}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure 3e: UMAPs of {wildcards.dataset} by cell type and batch (HVGs {wildcards.hvg})"
    script:
        "../scripts/plot_umap.py"


rule fig3g_batch_metrics:
    input:
        "results/{dataset}/integration/metrics.tsv",
    output:
        report(
            "results/figures/{dataset}/fig3g_batch_metrics.png",
            caption="../report/fig3g_batch_metrics.rst",
            category="Figure 3",
            subcategory="3g kBET and ASW",
            labels={"panel": "3g", "dataset": "{dataset}", "HVGs": "all levels"},
        ),
    params:
        metrics=config["metrics"]["integration"],
    log:
        "results/logs/fig3g_batch_metrics/{dataset}.log",
    benchmark:
        "results/benchmarks/fig3g_batch_metrics/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure 3g: kBET and ASW per method and HVG level on {wildcards.dataset}"
    script:
        "../scripts/plot_metrics.py"


rule fig4a_mapping_accuracy:
    input:
        "results/{dataset}/mapping/metrics.tsv",
    output:
        report(
            "results/figures/{dataset}/fig4a_mapping_accuracy.png",
            caption="../report/fig4a_mapping_accuracy.rst",
            category="Figure 4",
            subcategory="4a mapping accuracy",
            labels={"panel": "4a (left)", "dataset": "{dataset}", "HVGs": "all levels"},
        ),
    params:
        metrics=["accuracy", "macro_f1"],
    log:
        "results/logs/fig4a_mapping_accuracy/{dataset}.log",
    benchmark:
        "results/benchmarks/fig4a_mapping_accuracy/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure 4a: label-transfer accuracy per method on {wildcards.dataset}"
    script:
        "../scripts/plot_metrics.py"


rule fig4b_confusion:
    input:
        "results/{dataset}/mapping/hvg_{hvg}/confusion/{method}.tsv",
    output:
        report(
            "results/figures/{dataset}/fig4b_confusion_{method}_hvg_{hvg}.png",
            caption="../report/fig4b_confusion.rst",
            category="Figure 4",
            subcategory="4b confusion matrix",
            labels={"panel": "4b (left)", "dataset": "{dataset}", "HVGs": "{hvg}", "method": "{method}"},
        ),
    log:
        "results/logs/fig4b_confusion/{dataset}_hvg_{hvg}_{method}.log",
    benchmark:
        "results/benchmarks/fig4b_confusion/{dataset}_hvg_{hvg}_{method}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure 4b: confusion matrix of {wildcards.method} label transfer on {wildcards.dataset}"
    script:
        "../scripts/plot_confusion.py"


rule collect_runtimes:
    input:
        integration_targets() + mapping_targets(),
    output:
        table=report(
            "results/runtimes.tsv",
            caption="../report/runtimes.rst",
            category="Runtimes and configuration",
            labels={"item": "runtime table"},
        ),
        figure=report(
            "results/figures/runtimes.png",
            caption="../report/runtimes.rst",
            category="Runtimes and configuration",
            labels={"item": "runtime figure"},
        ),
    params:
        benchmark_dir="results/benchmarks",
    log:
        "results/logs/collect_runtimes.log",
    benchmark:
        "results/benchmarks/collect_runtimes/all.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Collecting the per-job benchmark files into one runtime table"
    script:
        "../scripts/collect_runtimes.py"


rule dump_config:
    output:
        report(
            "results/config_used.yaml",
            caption="../report/config.rst",
            category="Runtimes and configuration",
            labels={"item": "configuration"},
        ),
    params:
        config=config,
    log:
        "results/logs/dump_config.log",
    benchmark:
        "results/benchmarks/dump_config/all.tsv"
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/workflow.yaml"
    message:
        "Writing the validated configuration (defaults filled in) for the report"
    script:
        "../scripts/dump_config.py"
