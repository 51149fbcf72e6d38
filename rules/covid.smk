# Paper Fig 5: the COVID-19 query mapped hierarchically onto a healthy PBMC reference, then the
# post-mapping analysis (concerto_workflow.covid) and one figure per panel. Switched by
# config covid.enabled; datasets come from rule prepare_dataset.

from concerto_workflow import covid as covid_module

COVID = config.get("covid", {})  # schema defaults filled in by validate()
COVID_DIR = "results/covid"
if COVID.get("enabled", False):
    for _role in ("reference", "query"):
        if COVID[_role] not in config["datasets"]:
            raise ValueError(f"config key 'covid.{_role}': dataset {COVID[_role]!r} is not in 'datasets' "
                             f"({sorted(config['datasets'])})")
COVID_TABLES = list(covid_module.TABLES)
COVID_FIGURES = covid_module.FIGURES


rule covid_map:
    input:
        reference=lambda wc: f"results/data/{COVID['reference']}/raw.h5ad",
        query=lambda wc: f"results/data/{COVID['query']}/raw.h5ad",
    output:
        query=f"{COVID_DIR}/query_mapped.h5ad",
        umap=f"{COVID_DIR}/umap.tsv",
        accuracy=f"{COVID_DIR}/mapping_accuracy.tsv",
        models=directory(f"{COVID_DIR}/models"),
    params:
        cfg=COVID,
        seed=config["seed"],
        n_neighbors=config["umap"]["n_neighbors"],
    log:
        "results/logs/covid/map.log",
    benchmark:
        "results/benchmarks/covid/map.tsv"
    threads: concerto_threads()
    priority: 10
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
    conda:
        "../envs/concerto.yaml"
    message:
        "COVID-19 (Fig 5): Concerto on {input.reference}, fine-tuned on {input.query}, hierarchical mapping"
    script:
        "../scripts/covid_map.py"


rule covid_analysis:
    input:
        f"{COVID_DIR}/query_mapped.h5ad",
    output:
        **{t: report(f"{COVID_DIR}/{t}.tsv", caption="../report/covid_tables.rst", category="Paper figures",
                     labels={"figure": "fig5 tables", "table": t}) for t in COVID_TABLES},
    params:
        cfg=COVID,
    log:
        "results/logs/covid/analysis.log",
    benchmark:
        "results/benchmarks/covid/analysis.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "COVID-19 (Fig 5): exhausted CD8 T, HLA-DR-low monocytes, per-donor percentages, tests, DE, per-status DE"
    script:
        "../scripts/covid_analysis.py"


rule plot_covid:
    input:
        umap=f"{COVID_DIR}/umap.tsv",
        **{t: f"{COVID_DIR}/{t}.tsv" for t in COVID_TABLES},
    output:
        report("results/figures/{covid_fig}.png", caption="../report/figure.rst", category="Paper figures",
               labels={"figure": "{covid_fig}"}),
    wildcard_constraints:
        covid_fig="|".join(COVID_FIGURES),
    params:
        figure=lambda wc: {"compartment": COVID_FIGURES[wc.covid_fig][1], "title": COVID_FIGURES[wc.covid_fig][2],
                           "kind": COVID_FIGURES[wc.covid_fig][3], "conditions": list(COVID["conditions"]),
                           "level1": COVID["compartments"].get(COVID_FIGURES[wc.covid_fig][1], {}).get("level1")},
        caption=lambda wc: covid_module.caption(COVID, config["datasets"], wc.covid_fig),
    log:
        "results/logs/covid/plot_{covid_fig}.log",
    conda:
        "../envs/workflow.yaml"
    message:
        "Figure {wildcards.covid_fig}"
    script:
        "../scripts/plot_covid.py"


localrules:
    plot_covid,
