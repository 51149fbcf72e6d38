# The experiment engine: split -> preprocess -> (train Concerto) -> run_method -> score -> collect.
# One rule per step for every experiment, task and method; what runs follows from the config.


checkpoint make_split:
    input:
        unpack(split_datasets),
    output:
        table="results/{experiment}/split.tsv",
    params:
        split=lambda wc: config["splits"][experiment(wc)["split"]],
        dataset=lambda wc: experiment(wc)["dataset"],
        seed=config["seed"],
    log:
        "results/logs/make_split/{experiment}.log",
    benchmark:
        "results/benchmarks/make_split/{experiment}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Splitting the cells of experiment {wildcards.experiment}"
    script:
        "../scripts/make_split.py"


rule preprocess:
    input:
        unpack(split_datasets),
        table="results/{experiment}/split.tsv",
    output:
        CELLS,
    params:
        prep=lambda wc: config["preprocessing"][wc.prep],
        split=lambda wc: config["splits"][experiment(wc)["split"]],
        dataset=lambda wc: experiment(wc)["dataset"],
    log:
        "results/logs/preprocess/{experiment}_{fold}_{prep}.log",
    benchmark:
        "results/benchmarks/preprocess/{experiment}_{fold}_{prep}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
    conda:
        "../envs/workflow.yaml"
    message:
        "Preprocessing {wildcards.experiment}, fold {wildcards.fold} ({wildcards.prep}; fitted on training cells)"
    script:
        "../scripts/preprocess.py"


rule train_concerto:
    input:
        CELLS,
    output:
        directory(MODEL),
    params:
        train=lambda wc: {k: v for k, v in wc_cfg.method_params(config, wc.experiment, CONCERTO).items()
                          if k in REGISTRY[CONCERTO].train_params},
    log:
        "results/logs/train_concerto/{experiment}_{fold}_{prep}_seed{seed}.log",
    benchmark:
        "results/benchmarks/train_concerto/{experiment}_{fold}_{prep}_seed{seed}.tsv"
    threads: concerto_threads()
    # first: the method jobs of its fold wait for the model
    priority: 10
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        gpu=1,
        runtime=120,
    conda:
        "../envs/concerto.yaml"
    message:
        "Training Concerto on the training cells of {wildcards.experiment}, fold {wildcards.fold} ({wildcards.prep}, seed {wildcards.seed})"
    script:
        "../scripts/train_concerto.py"


rule run_method:
    input:
        unpack(method_inputs),
    output:
        OUTPUT,
    params:
        task=lambda wc: experiment(wc)["task"],
        dataset=lambda wc: experiment(wc)["dataset"],
        split=lambda wc: experiment(wc)["split"],
        method_params=lambda wc: {k: v for k, v in wc_cfg.method_params(config, wc.experiment, wc.method).items()
                                  if k not in REGISTRY[wc.method].train_params},
        installed=lambda wc: installed(wc.method),
        previous_failure=previous_failure,
        n_comps=lambda wc: experiment(wc)["n_comps"],
        knn_k=lambda wc: experiment(wc)["knn_k"],
        resolutions=lambda wc: wc_cfg.cluster_settings(config, wc.experiment, wc.method),
        cluster_algorithm=lambda wc: experiment(wc)["cluster_algorithm"],
        feature_key=lambda wc: experiment(wc)["feature_key"],
        time_budget_s=lambda wc: experiment(wc)["time_budget_s"],
    log:
        "results/logs/run_method/{experiment}_{fold}_{prep}_{method}_seed{seed}.log",
    benchmark:
        "results/benchmarks/run_method/{experiment}_{fold}_{prep}_{method}_seed{seed}.tsv"
    threads: lambda wc: concerto_threads() if REGISTRY[wc.method].needs_model else 1
    resources:
        mem_mb=lambda wc, attempt: 6000 * attempt,
    conda:
        "../envs/competitors.yaml"
    message:
        "{params.task}: {wildcards.method} on {wildcards.experiment}, fold {wildcards.fold} ({wildcards.prep}, seed {wildcards.seed})"
    script:
        "../scripts/run_method.py"


rule score:
    input:
        experiment_outputs,
    output:
        "results/{experiment}/scores.tsv",
    params:
        task=lambda wc: experiment(wc)["task"],
        metrics=lambda wc: wc_cfg.experiment_metrics(config, wc.experiment),
        metric_params=dict(config["metric_params"], seed=config["seed"]),
    log:
        "results/logs/score/{experiment}.log",
    benchmark:
        "results/benchmarks/score/{experiment}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "Scoring every method output of {wildcards.experiment}"
    script:
        "../scripts/score.py"


rule umap:
    input:
        umap_inputs,
    output:
        UMAPS,
    params:
        task=lambda wc: experiment(wc)["task"],
        n_neighbors=config["umap"]["n_neighbors"],
        seed=config["seed"],
    log:
        "results/logs/umap/{experiment}_{fold}_{prep}_seed{seed}.log",
    benchmark:
        "results/benchmarks/umap/{experiment}_{fold}_{prep}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/workflow.yaml"
    message:
        "UMAPs of the embeddings the figures of {wildcards.experiment} draw ({wildcards.fold}, {wildcards.prep})"
    script:
        "../scripts/umap_coordinates.py"
