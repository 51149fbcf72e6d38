# Opt-in study (not in `all`: ~30 min on 2 cores): what helps Concerto on small real references.
#   snakemake --cores 2 results/figures/suppA1_concerto_ablation_real.png
# Needs the shared real data folder ($CONCERTO_SHARED_DATA or <repo>/../shared/data).
ABLATION_DATA = os.environ.get("CONCERTO_SHARED_DATA", f"{workflow.basedir}/../shared/data")


rule concerto_ablation_real:
    input:
        script=f"{workflow.basedir}/benchmarks/study_real.py",
    output:
        scores="results/ablation_real/scores.csv",
        summary="results/ablation_real/summary.csv",
        selected="results/ablation_real/selected.csv",
    params:
        data_dir=ABLATION_DATA,
        out=lambda wildcards, output: os.path.dirname(output.scores),
    log:
        "results/logs/concerto_ablation_real.log",
    benchmark:
        "results/benchmarks/concerto_ablation_real.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/concerto.yaml"
    message:
        "Concerto on small real references: one factor at a time, 3 transfer + 2 CV tasks, seeds 0-2 (benchmarks/study_real.py)"
    script:
        "../scripts/study_real.py"


rule plot_suppA1_concerto_ablation_real:
    input:
        scores="results/ablation_real/scores.csv",
    output:
        report("results/figures/suppA1_concerto_ablation_real.png",
               caption="../report/suppA1_concerto_ablation_real.rst", category="Beyond the paper",
               labels={"figure": "suppA1_concerto_ablation_real"}),
    params:
        caption=f"{workflow.basedir}/report/suppA1_concerto_ablation_real.rst",
    log:
        "results/logs/plot/suppA1_concerto_ablation_real.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure suppA1_concerto_ablation_real (from the study's score table)"
    script:
        "../scripts/plot_ablation_real.py"
