# One plot rule per figure type; each figure of the config (results/figures/<name>.png, named
# after its paper panel) is a report item whose caption is the figure's caption file.


rule plot_table_figure:
    input:
        figure_tables,
    output:
        report("results/figures/{figure}.png", **FIGURE_REPORT),
    wildcard_constraints:
        figure=figures_of("bars", "box", "heatmap", "lines", "loglog"),
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


localrules:
    plot_table_figure,
    plot_umap_grid,
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
