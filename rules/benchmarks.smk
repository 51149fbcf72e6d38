# Opt-in benchmarks (config `benchmarks.<name>.enabled`); targets in rules/common.smk.
#
# Scale benchmark: benchmarks/bench_scale.py simulates scsim-scale shards, pretrains Concerto
# for one streamed epoch, embeds the reference and maps a held-out query by 5-NN. About an hour
# at the default 1M cells x 20k genes on 2 CPU cores, hence disabled by default.

SCALE = config["benchmarks"]["scale"]

if SCALE["enabled"] and SCALE["cells"] % SCALE["query_cells"]:
    raise ValueError(
        "config key 'benchmarks.scale.cells': must be a multiple of "
        f"'benchmarks.scale.query_cells' (the query is one shard); got {SCALE['cells']} "
        f"and {SCALE['query_cells']}"
    )


rule scale_benchmark:
    input:
        script=f"{workflow.basedir}/benchmarks/bench_scale.py",
    output:
        "results/benchmarks/scale.json",
    params:
        cells=SCALE["cells"],
        genes=SCALE["genes"],
        query_cells=SCALE["query_cells"],
        batch_size=SCALE["batch_size"],
        # simulated shards are kept between runs (the script skips simulation when present)
        workdir=SCALE["workdir"],
    log:
        "results/logs/scale_benchmark.log",
    benchmark:
        "results/benchmarks/scale_benchmark.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=180,
    conda:
        "../envs/concerto.yaml"
    message:
        "Scale benchmark: {params.cells} cells x {params.genes} genes, {params.query_cells} query cells"
    script:
        "../scripts/scale_benchmark.py"


rule fig_scale_benchmark:
    input:
        summary="results/benchmarks/scale.json",
    output:
        figure=report(
            "results/figures/scale_benchmark.png",
            caption="../report/scale_benchmark.rst",
            category="Scale benchmark",
            labels={"item": "seconds, cells/s and peak RSS per phase"},
        ),
    log:
        "results/logs/fig_scale_benchmark.log",
    benchmark:
        "results/benchmarks/fig_scale_benchmark.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    message:
        "Plotting the scale benchmark (seconds, cells/s and peak RSS per phase)"
    conda:
        "../envs/workflow.yaml"
    script:
        "../scripts/plot_scale_benchmark.py"
