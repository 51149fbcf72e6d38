# One plot rule per figure type; each figure of the config (results/figures/<name>.png, named
# after its paper panel) is a report item whose caption is the figure's caption file.


rule plot_table_figure:
    input:
        figure_tables,
    output:
        report("results/figures/{figure}.png", **FIGURE_REPORT),
    wildcard_constraints:
        figure=figures_of("bars", "box", "heatmap", "lines", "sweep", "loglog"),
    params:
        figure=figure_params,
        caption=caption_text,
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.figure}"
    script:
        "../scripts/plot_table_figure.py"


rule plot_umap_grid:
    input:
        figure_umaps,
    output:
        report("results/figures/{figure}.png", **FIGURE_REPORT),
    wildcard_constraints:
        figure=figures_of("umap_grid"),
    params:
        figure=figure_params,
        caption=caption_text,
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.figure}"
    script:
        "../scripts/plot_umap_grid.py"


rule plot_prediction_figure:
    input:
        figure_method_outputs,
    output:
        report("results/figures/{figure}.png", **FIGURE_REPORT),
    wildcard_constraints:
        figure=figures_of("confusion", "sankey", "densities"),
    params:
        figure=figure_params,
        caption=caption_text,
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.figure}"
    script:
        "../scripts/plot_prediction_figure.py"


rule plot_marker_figure:
    input:
        unpack(figure_marker_inputs),
    output:
        figure=report("results/figures/{figure}.png", **FIGURE_REPORT),
        table="results/figures/{figure}.tsv",
    wildcard_constraints:
        figure=figures_of("feature_umap", "marker_distance"),
    params:
        figure=figure_params,
        caption=caption_text,
        task=lambda wc: config["experiments"][figure_spec(wc)["experiments"][0]]["task"],
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.figure}"
    script:
        "../scripts/plot_marker_figure.py"


rule plot_overall_figure:
    input:
        figure_tables,
    output:
        figure=report("results/figures/{figure}.png", **FIGURE_REPORT),
        table="results/figures/{figure}.tsv",
    wildcard_constraints:
        figure=figures_of("overall"),
    params:
        figure=figure_params,
        facts=lambda w: wc_cfg.overall_study_facts(config, config["figures"][w.figure]["experiments"]),
        caption=caption_text,
        benchmark_dir="results/benchmarks",
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.figure}"
    script:
        "../scripts/plot_overall.py"


rule plot_scalability_figure:
    input:
        figure_tables,
    output:
        figure=report("results/figures/{figure}.png", **FIGURE_REPORT),
        table="results/figures/{figure}.tsv",
        markdown="results/figures/{figure}.md",
    wildcard_constraints:
        figure=figures_of("scalability"),
    params:
        figure=figure_params,
        caption=caption_text,
        # the benchmark files of the experiments' jobs (written by the jobs, read after their scores)
        benchmark_dir="results/benchmarks",
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.figure}"
    script:
        "../scripts/plot_scalability.py"


rule attention_signatures:
    input:
        unpack(figure_attention_inputs),
    output:
        markers=f"{SIGNATURES}/marker_attention.tsv",
        overlap=f"{SIGNATURES}/de_overlap.tsv",
    wildcard_constraints:
        figure=figures_of("attention"),
    params:
        figure=figure_params,
    log:
        "results/logs/attention_signatures/{figure}.log",
    benchmark:
        "results/benchmarks/attention_signatures/{figure}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Attention signatures of Concerto for figure {wildcards.figure}: markers per group, top attention vs top DE"
    script:
        "../scripts/attention_signatures.py"


rule plot_attention:
    input:
        markers=f"{SIGNATURES}/marker_attention.tsv",
        overlap=f"{SIGNATURES}/de_overlap.tsv",
    output:
        report("results/figures/{figure}.png", **FIGURE_REPORT),
    wildcard_constraints:
        figure=figures_of("attention"),
    params:
        figure=figure_params,
        caption=caption_text,
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.figure}"
    script:
        "../scripts/plot_attention.py"


localrules:
    plot_scalability_figure,
    plot_overall_figure,
    plot_marker_figure,
    plot_table_figure,
    plot_umap_grid,
    plot_attention,
    plot_prediction_figure,
    collect_runtimes,
    dump_config,


rule collect_runtimes:
    input:
        [f"results/{x}/scores.tsv" for x in EXPERIMENTS],
    output:
        table=report("results/runtimes.tsv", caption="../report/runtimes.rst",
                     category="Runtimes and configuration", labels={"item": "runtime table"}),
        figure=report("results/figures/runtimes.png", caption="../report/runtimes.rst",
                      category="Runtimes and configuration", labels={"item": "runtime figure"}),
    params:
        benchmark_dir="results/benchmarks",
    log:
        "results/logs/collect_runtimes.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Collecting the per-job benchmark files into one runtime table"
    script:
        "../scripts/collect_runtimes.py"


rule dump_config:
    output:
        report("results/config_used.yaml", caption="../report/config.rst",
               category="Runtimes and configuration", labels={"item": "configuration"}),
    params:
        config=config,
    log:
        "results/logs/dump_config.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Writing the validated configuration (defaults filled in) for the report"
    script:
        "../scripts/dump_config.py"


rule plot_comparison_table:
    input:
        scores=figure_tables,
    output:
        figure=report("results/figures/{figure}.png", **FIGURE_REPORT),
        table="results/tables/{figure}.tsv",
        markdown="results/tables/{figure}.md",
    wildcard_constraints:
        figure=figures_of("table"),
    params:
        figure=figure_params,
        caption=caption_text,
    log:
        "results/logs/plot/{figure}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Comparison table {wildcards.figure} (figure, tsv, markdown)"
    script:
        "../scripts/plot_comparison_table.py"


localrules:
    plot_comparison_table,
