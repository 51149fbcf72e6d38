"""What helps Concerto on small real references: one factor at a time around the paper's settings.

The study behind ``benchmarks/study_real.py`` and ``suppA1_concerto_ablation_real.png``
(beyond the paper). For each task and seed:

1. the reference is split into a training part and a validation part (20 %, stratified by cell
   type: the engine's ``label_mask`` split with nothing masked, :func:`reference_roles`); the
   query is the test set;
2. the workflow's preprocessing (:func:`concerto_workflow.preprocessing.preprocess_fold`) fits
   the genes (HVGs) on the training part only and renames the query's genes through the
   one-to-one ortholog table where the query is another species;
3. every method and setting uses the training part as its only labelled reference; the shared
   cosine-weighted k-NN vote (:func:`concerto_workflow.methods.shared.vote`) transfers labels
   into the validation cells (``split='valid'``) and into the query (``split='query'``);
4. settings are chosen from the ``valid`` rows only (:func:`select_settings`), and the chosen
   setting's query scores are reported once, as they are.

Baselines: kNN (k = 5, the same vote) on PCA(50) fitted on the training part, and logistic
regression on that PCA (:mod:`concerto_workflow.methods.baselines`).

Within-dataset tasks (CBMC, PBMC 4k: no second dataset to map to) are stratified k-fold cross-
validations (:func:`cv_query_masks`, the engine's ``kfold`` split): in each fold the test fold is the
query and the other folds are the reference, which steps 1-4 then treat as above. They run the
factors of ``Task.factors`` only (time), and ``max_folds`` of the k folds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .columns import BATCH, CELL_TYPE, ROLE, TEST, TRAIN, VALID

#: The paper's settings (Methods, Hyperparameters), the centre every factor is varied around.
PAPER = {"temperature": 0.1, "dropout": 0.2, "batch_size": 32, "epochs": 3, "lr_schedule": "1e-4->1e-6",
         "schedule_rule": "off", "genes": "hvg2000", "batches": "mixed", "training": "inductive",
         "query": "direct", "embedding": "teacher", "k": 5}

#: Levels tried for each factor besides the paper's (one factor changed at a time).
FACTORS = {
    "temperature": [0.05, 0.5],
    "dropout": [0.1, 0.4],
    "batch_size": [64, 256],
    "epochs": [1, 10],
    "lr_schedule": ["1e-3->1e-4"],
    # epochs and batch chosen from the number of cells (concerto_core.config.choose_schedule):
    # with the package's default learning rates, 1e-3 -> 1e-4 (the package as shipped), and
    # with the paper's, 1e-4 -> 1e-6
    "schedule_rule": ["package default", "rule + paper lr"],
    "genes": ["all"],
    "batches": ["source-pure"],
    "training": ["transductive"],
    "query": ["fine-tuned"],
    "embedding": ["student"],
    "k": [1, 15],
}

#: Factors that do not change the trained model (evaluated on the paper-setting model).
POST_TRAINING = ("query", "embedding", "k")
LR = {"1e-4->1e-6": (1e-4, 1e-6), "1e-3->1e-4": (1e-3, 1e-4)}
BASELINES = ("knn_pca", "logreg_pca")
METRIC_NAMES = ("accuracy", "macro_f1")
COLUMNS = ["task", "seed", "fold", "method", "factor", "level", "setting", "split", "metric", "value", "n_reference",
           "n_evaluated", "seconds", "status", "reason"]


@dataclass(frozen=True)
class Task:
    """A reference -> query transfer on real cells (files of the shared data directory)."""

    name: str
    description: str
    min_genes: int
    #: k of a stratified k-fold cross-validation (the test fold is the query); 0 = a fixed query
    cv_folds: int = 0
    #: folds of the k run by default (0 = all k)
    max_folds: int = 0
    #: the factors varied (None = every factor of FACTORS)
    factors: tuple | None = None


TASKS = {
    "hp_to_mp": Task("hp_to_mp", "Baron human pancreas (4 donors, inDrop) -> Baron mouse pancreas, one-to-one "
                     "orthologs, harmonised cell-ontology labels", min_genes=200),
    "pancreas_3tech": Task("pancreas_3tech", "pancreas: Smart-seq2 (Segerstolpe) + C1 (Lawlor) -> inDrop (Baron)",
                           min_genes=50),
    "pbmc_ding": Task("pbmc_ding", "Ding PBMC: Drop-seq -> inDrops (3 types)", min_genes=20),
    # 5-fold CV, at the levels that matter most on the three tasks above: the paper's setting, the
    # learning rate of the small_reference preset, query fine-tuning, k of the vote
    "cbmc_cv": Task("cbmc_cv", "CBMC CITE-seq RNA (Stoeckius 2017; Mouse and Unknown cells dropped), stratified "
                    "5-fold CV", min_genes=20, cv_folds=5, max_folds=1, factors=("lr_schedule", "query", "k")),
    "pbmc4k_cv": Task("pbmc4k_cv", "10x PBMC 4k (8 classes), stratified 5-fold CV", min_genes=20, cv_folds=5,
                      max_folds=1, factors=("lr_schedule", "query", "k")),
}


def setting_name(factor: str, level) -> str:
    return "paper" if factor == "paper" else f"{factor}={level}"


def settings_to_run(factors=None) -> list[tuple[str, object]]:
    """(factor, level) pairs: ('paper', '') first, then every non-paper level of ``factors``."""
    chosen = FACTORS if factors is None else {f: FACTORS[f] for f in factors}
    return [("paper", "")] + [(f, lvl) for f, levels in chosen.items() for lvl in levels]


# ------------------------------------------------------------------------------- data
def load_task(name: str, data_dir) -> tuple[list, dict]:
    """``parts`` and ``gene_maps`` for :func:`preprocess_fold`: [(dataset, raw AnnData, None)]
    with obs ``cell_type`` / ``batch`` / ``tech`` and a ``reference`` flag per cell."""
    from .datasets import convert_real
    from .preprocessing import gene_maps_for

    d = Path(data_dir)
    if name == "hp_to_mp":
        cols = dict(batch_col="donor", label_col="cell_ontology_class", tech_col="platform")
        ref = convert_real(str(d / "pancreas_baron_human_came.h5ad"), **cols)
        query = convert_real(str(d / "pancreas_baron_mouse_came.h5ad"), **cols)
        maps = gene_maps_for("mouse", query, {"source": "table", "path": str(d / "orthologs_human_mouse_came_1to1.csv"),
                                              "reference_column": "human.gene.name", "query_column": "gene.name"})
        # cross-species: the reference keeps the genes with a one-to-one partner among the query's
        # gene names (names only, no query values), so that HVGs are chosen among shared genes
        table = maps["mouse"]
        ref = ref[:, ref.var_names.isin(table["reference"][table["query"].isin(query.var_names)])].copy()
        return [("human", ref, None), ("mouse", query, None)], maps
    if name == "pancreas_3tech":
        a = convert_real(str(d / "pancreas_3tech_cellbench.h5ad"), batch_col="tech", label_col="cellTypes",
                         tech_col="tech")
        a.obs["is_query"] = (a.obs["tech"].astype(str) == "inDrop (Baron)").to_numpy()
        return [("pancreas_3tech", a, None)], {}
    if name == "cbmc_cv":
        a = convert_real(str(d / "citeseq_cbmc_8617.h5ad"), batch_col="", label_col="cell_type",
                         drop_labels=("Mouse", "Unknown"))
        return [("cbmc", a, None)], {}
    if name == "pbmc4k_cv":
        return [("pbmc4k", convert_real(str(d / "pbmc4k_counts_top2000.h5ad"), batch_col="", label_col="label"),
                 None)], {}
    if name == "pbmc_ding":
        a = convert_real(str(d / "pbmc_ding_dropseq_indrops.h5ad"), batch_col="protocol", label_col="cell_type",
                         tech_col="protocol")
        # the file holds log-normalised values: back to normalised counts, so that the one
        # preprocessing (normalise + log1p) of every task applies unchanged
        a.X = a.X.expm1()
        a.obs["is_query"] = (a.obs["tech"].astype(str) == "inDrops").to_numpy()
        return [("pbmc_ding", a, None)], {}
    raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")


def cv_query_masks(obs: pd.DataFrame, k: int, seed: int, max_folds: int = 0) -> dict[str, np.ndarray]:
    """Fold name -> boolean query mask (in ``obs`` order) of a stratified k-fold by cell type (the
    engine's ``kfold`` split); ``max_folds`` keeps the first folds only."""
    from .splits import split_kfold

    table = split_kfold(obs, "cv", k=k, seed=seed, label=CELL_TYPE, max_folds=max_folds)
    masks = {}
    for fold, rows in table.groupby("fold", sort=True):
        test = set(rows.loc[rows[ROLE] == TEST, "cell"])
        masks[fold] = obs.index.astype(str).isin(test)
    return masks


def reference_roles(obs: pd.DataFrame, seed: int, valid_fraction: float = 0.2) -> pd.Series:
    """train / valid role of each reference cell: a stratified ``valid_fraction`` by cell type
    (the engine's ``label_mask`` split with nothing masked)."""
    from .splits import split_label_mask

    table = split_label_mask(obs, "reference", remove=[], seed=seed, label=CELL_TYPE, valid_fraction=valid_fraction)
    return pd.Series(table[ROLE].to_numpy(), index=table["cell"].to_numpy())


def prepare_cells(parts, gene_maps, task: Task, seed: int, genes: str = "hvg2000"):
    """The task's cells on the genes fitted on the reference's training part: log-normalised CSR
    X, ``obs['role']`` = train / valid (reference) or test (query)."""
    from .preprocessing import preprocess_fold

    with_roles = []
    for i, (name, raw, _) in enumerate(parts):
        if len(parts) == 2:
            is_query = np.full(raw.n_obs, i == 1)
        else:
            is_query = raw.obs["is_query"].to_numpy(bool)
        roles = pd.Series(TEST, index=raw.obs_names.astype(str), dtype=object)
        if (~is_query).any():
            ref_roles = reference_roles(raw.obs[~is_query], seed)
            roles[ref_roles.index] = ref_roles.to_numpy()
        with_roles.append((name, raw, roles))
    n_top = None if genes == "all" else int(str(genes).removeprefix("hvg"))
    n_ref_genes = parts[0][1].n_vars
    if n_top is not None and n_top >= n_ref_genes:
        n_top = None            # files of <= 2,000 genes: "hvg2000" is every gene
    return preprocess_fold(with_roles, min_genes=task.min_genes, min_cells=3, target_sum=1e4,
                           n_top_genes=n_top, flavor="seurat", gene_maps=gene_maps)


# ------------------------------------------------------------------------------- scoring
def label_scores(truth, predicted) -> dict:
    """accuracy and macro-F1 (the workflow's metric functions) of predicted vs true labels."""
    import anndata as ad

    from . import scoring
    from .columns import PREDICTED

    obs = pd.DataFrame({CELL_TYPE: np.asarray(truth).astype(str), PREDICTED: np.asarray(predicted).astype(str),
                        ROLE: TEST})
    a = ad.AnnData(np.zeros((len(obs), 1), dtype=np.float32), obs=obs)
    return {m: scoring.METRICS[m].fn(a, {}) for m in METRIC_NAMES}


def vote_rows(cells, emb: np.ndarray, k: int, base: dict) -> list[dict]:
    """Score rows of an embedding of every cell of ``cells``: the k-NN vote from the training
    part of the reference into the validation cells and into the query. The two splits are
    scored independently: a validation row never depends on a query label."""
    from .methods.shared import vote

    roles = cells.obs[ROLE].astype(str).to_numpy()
    labels = cells.obs[CELL_TYPE].astype(str).to_numpy()
    train = roles == TRAIN
    rows = []
    for split, role in (("valid", VALID), ("query", TEST)):
        target = roles == role
        if not target.any():
            continue
        probs, classes = vote(emb[train], labels[train], emb[target], k=k)
        predicted = np.asarray(classes)[np.argmax(probs, axis=1)]
        for metric, value in label_scores(labels[target], predicted).items():
            rows.append({**base, "split": split, "metric": metric, "value": value,
                         "n_reference": int(train.sum()), "n_evaluated": int(target.sum())})
    return rows


def prediction_rows(cells, predicted: np.ndarray, base: dict) -> list[dict]:
    """Score rows of predicted labels for the non-training cells (``predicted`` in their order)."""
    roles = cells.obs[ROLE].astype(str).to_numpy()
    labels = cells.obs[CELL_TYPE].astype(str).to_numpy()
    rest = roles != TRAIN
    pred = pd.Series(np.asarray(predicted).astype(str), index=np.flatnonzero(rest))
    rows = []
    for split, role in (("valid", VALID), ("query", TEST)):
        target = np.flatnonzero(roles == role)
        if not len(target):
            continue
        for metric, value in label_scores(labels[target], pred[target].to_numpy()).items():
            rows.append({**base, "split": split, "metric": metric, "value": value,
                         "n_reference": int((roles == TRAIN).sum()), "n_evaluated": int(len(target))})
    return rows


# ------------------------------------------------------------------------------- methods
def baseline_rows(cells, task: str, seed: int) -> list[dict]:
    """kNN (k = 5) on PCA(50) and logistic regression on PCA(50), both fitted on the training part."""
    from .methods.api import RunContext
    from .methods.baselines import logreg_annotate, pca_map

    ctx = RunContext(seed=seed, label_key=CELL_TYPE, n_comps=50)
    train = cells[cells.obs[ROLE].astype(str) == TRAIN]
    rest = cells[cells.obs[ROLE].astype(str) != TRAIN]
    rows = []
    t0 = time.perf_counter()
    _, emb = pca_map(train, cells, ctx)
    rows += vote_rows(cells, np.asarray(emb, dtype=np.float32), 5,
                      _base(task, seed, "knn_pca", "baseline", "k=5", time.perf_counter() - t0))
    t0 = time.perf_counter()
    probs, classes = logreg_annotate(train, rest, ctx)
    rows += prediction_rows(cells, np.asarray(classes)[np.argmax(probs, axis=1)],
                            _base(task, seed, "logreg_pca", "baseline", "C=1", time.perf_counter() - t0))
    return rows


def _base(task, seed, method, factor, level, seconds, status="ok", reason="") -> dict:
    return {"task": task, "seed": int(seed), "fold": "", "method": method, "factor": factor, "level": str(level),
            "setting": setting_name(factor, level) if method == "concerto" else method,
            "seconds": round(float(seconds), 2), "status": status, "reason": reason}


def concerto_config(factor: str, level, seed: int):
    """(ConcertoConfig, train() keyword arguments) of the paper's setting with one factor changed."""
    from concerto_core import ConcertoConfig

    s = dict(PAPER)
    if factor != "paper":
        s[factor] = level
    lr, lr_end = LR[s["lr_schedule"]]
    cfg = dict(temperature=float(s["temperature"]), dropout=float(s["dropout"]), seed=int(seed),
               source_batches=s["batches"] == "source-pure")
    if s["schedule_rule"] == "package default":
        return ConcertoConfig(**cfg), {}          # epochs, batch size and rates as the package chooses
    if s["schedule_rule"] == "rule + paper lr":
        return ConcertoConfig(**cfg, lr=lr, lr_end=lr_end), {}
    return ConcertoConfig(**cfg, lr=lr, lr_end=lr_end), {"epochs": int(s["epochs"]), "batch_size": int(s["batch_size"])}


def train_concerto(cells, factor: str, level, seed: int):
    """A Concerto model trained on the reference's training part (``training=transductive``:
    also on the validation and query cells, without their labels, as the authors' tutorial)."""
    from concerto_core import Concerto

    config, train_args = concerto_config(factor, level, seed)
    transductive = factor == "training" and level == "transductive"
    a = cells if transductive else cells[cells.obs[ROLE].astype(str) == TRAIN].copy()
    model = Concerto(a, batch_key=BATCH, config=config, verbose=False)
    model.train(**train_args)
    return model


def concerto_rows(cells, task: str, seed: int, factor: str, level, workdir: Path,
                  paper_model=None) -> tuple[list, object]:
    """Score rows of one setting; returns them and the trained model (the paper setting's model
    serves the post-training factors)."""
    t0 = time.perf_counter()
    if factor in POST_TRAINING:
        model = paper_model
    else:
        model = train_concerto(cells, factor, level, seed)
    seconds = time.perf_counter() - t0
    k = int(level) if factor == "k" else PAPER["k"]
    if factor == "query":
        return finetuned_rows(cells, task, seed, model, workdir, seconds), model
    emb = model.get_latent_representation(cells, student=factor == "embedding")
    seconds = time.perf_counter() - t0 if factor in POST_TRAINING else seconds
    base = _base(task, seed, "concerto", factor, level, seconds)
    return vote_rows(cells, np.asarray(emb, dtype=np.float32), k, base), model


def finetuned_rows(cells, task, seed, model, workdir: Path, train_seconds: float) -> list[dict]:
    """Query fine-tuning (mapping mode b; paper: Adam 1e-3, 1 epoch, batch 32): the reference model
    is fine-tuned without labels on the cells it is evaluated on (the validation cells for the
    valid rows, the query for the query rows), then both sets are embedded by the tuned model."""
    from concerto_core import Concerto
    from concerto_core.training import PAPER_FINETUNE

    roles = cells.obs[ROLE].astype(str).to_numpy()
    ref_dir = Path(workdir) / f"{task}_seed{seed}_reference"
    model.save(ref_dir, overwrite=True)
    rows = []
    for role in (VALID, TEST):
        t0 = time.perf_counter()
        evaluated = cells[(roles == TRAIN) | (roles == role)].copy()
        tuned = Concerto.finetune_query(ref_dir, evaluated[evaluated.obs[ROLE].astype(str) == role].copy(),
                                        Path(workdir) / f"{task}_seed{seed}_tuned_{role}", overwrite=True,
                                        epochs=PAPER_FINETUNE["epochs"], lr=PAPER_FINETUNE["lr"],
                                        batch_size=PAPER_FINETUNE["batch_size"], seed=seed)
        emb = np.asarray(tuned.get_latent_representation(evaluated), dtype=np.float32)
        base = _base(task, seed, "concerto", "query", "fine-tuned", train_seconds + time.perf_counter() - t0)
        rows += vote_rows(evaluated, emb, PAPER["k"], base)
    return rows


def task_factors(spec: Task, asked=None) -> tuple[list | None, list[tuple[str, object]]]:
    """The factors a task varies (``asked``, default every factor, within the task's own
    ``factors``; None = all) and the (factor, level) pairs it skips, which become not_run rows."""
    factors = spec.factors if asked is None else [f for f in asked if spec.factors is None or f in spec.factors]
    if factors is None:
        return None, []
    return list(factors), [(f, lvl) for f, lvl in settings_to_run(asked) if f != "paper" and f not in factors]


def run_task_seed(task: str, seed: int, data_dir, workdir, factors=None, threads: int = 1,
                  max_folds: int | None = None) -> pd.DataFrame:
    """Every row of one task and seed: baselines, the paper setting, each factor level (``factors``
    default: the task's); for a cross-validation task, of each fold run (``max_folds`` default:
    the task's), with the fold in column ``fold``."""
    from .methods.concerto import set_threads

    set_threads(threads)
    t0 = time.perf_counter()
    parts, maps = load_task(task, data_dir)
    spec = TASKS[task]
    factors, skipped = task_factors(spec, factors)
    if not spec.cv_folds:
        frame = _run_parts(parts, maps, spec, seed, Path(workdir), factors)
    else:
        (name, raw, _), frames = parts[0], []
        most = spec.max_folds if max_folds is None else max_folds
        for fold, is_query in cv_query_masks(raw.obs, spec.cv_folds, seed, most).items():
            raw.obs["is_query"] = is_query
            frames.append(_run_parts(parts, maps, spec, seed, Path(workdir) / fold, factors).assign(fold=fold))
        frame = pd.concat(frames, ignore_index=True)
    reason = f"not varied on the {spec.cv_folds}-fold CV tasks (the study's time budget)"
    frame = pd.concat([frame, pd.DataFrame([r for f, lvl in skipped for r in _not_run(task, seed, f, lvl, reason)])],
                      ignore_index=True)
    print(f"[study] {task} seed {seed} done in {time.perf_counter() - t0:.0f}s", flush=True)
    return frame.reindex(columns=COLUMNS)


def _run_parts(parts, maps, spec: Task, seed: int, workdir: Path, factors) -> pd.DataFrame:
    task = spec.name
    cells = {g: prepare_cells(parts, maps, spec, seed, genes=g) for g in ("hvg2000", "all")
             if g == "hvg2000" or factors is None or "genes" in factors}
    workdir.mkdir(parents=True, exist_ok=True)
    rows = baseline_rows(cells["hvg2000"], task, seed)
    paper_model = None
    for factor, level in settings_to_run(factors=factors):
        if factor == "genes" and cells["all"].n_vars == cells["hvg2000"].n_vars:
            rows += _not_run(task, seed, factor, level, f"the task has {cells['all'].n_vars} genes: no HVG selection")
            continue
        data = cells["all"] if factor == "genes" else cells["hvg2000"]
        try:
            new_rows, model = concerto_rows(data, task, seed, factor, level, workdir, paper_model)
        except Exception as err:          # a failed setting is a row, not a lost study
            rows += _not_run(task, seed, factor, level, f"{type(err).__name__}: {err}", "failed")
            continue
        if factor == "paper":
            paper_model = model
        rows += new_rows
        print(f"[study] {task} seed {seed} {workdir.name} {setting_name(factor, level)}: "
              + ", ".join(f"{r['split']} {r['metric']} {r['value']:.3f}" for r in new_rows), flush=True)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def _not_run(task, seed, factor, level, reason, status="not_run") -> list[dict]:
    return [{**_base(task, seed, "concerto", factor, level, 0.0, status, reason), "split": split, "metric": m,
             "value": np.nan} for split in ("valid", "query") for m in METRIC_NAMES]


def join_kept(scores: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """``scores`` of the tasks just run plus the rows of an earlier score table for the other
    tasks (an earlier run's rows of a rerun task are dropped, never mixed with the new ones)."""
    kept = kept[~kept["task"].isin(set(scores["task"]))]
    return pd.concat([kept.reindex(columns=scores.columns), scores], ignore_index=True)


# ------------------------------------------------------------------------------- selection
def select_settings(scores: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per task, the Concerto setting with the best mean validation score over seeds (ties: the
    paper's setting first). Reads only ``split == 'valid'`` rows, i.e. reference cells."""
    valid = scores[(scores["split"] == "valid") & (scores["method"] == "concerto") & (scores["metric"] == metric)
                   & (scores["status"] == "ok")]
    mean = valid.groupby(["task", "setting"], sort=False)["value"].mean().reset_index()
    mean["is_paper"] = mean["setting"] == "paper"
    best = (mean.sort_values(["task", "value", "is_paper"], ascending=[True, False, False])
            .groupby("task", sort=False).head(1))
    best = best.rename(columns={"value": f"valid_{metric}"})
    return best[["task", "setting", f"valid_{metric}"]].reset_index(drop=True)


def summary_table(scores: pd.DataFrame) -> pd.DataFrame:
    """task x setting (Concerto settings and baselines): mean and sd over seeds of the query and
    validation accuracy / macro-F1 (sd: sample, ddof 1), with the validation-selected setting marked."""
    ok = scores[scores["status"] == "ok"]
    g = ok.groupby(["task", "setting", "split", "metric"])["value"]
    table = pd.concat([g.mean().rename("mean"), g.std(ddof=1).rename("sd"), g.size().rename("n")], axis=1).reset_index()
    wide = table.pivot_table(index=["task", "setting"], columns=["split", "metric"], values=["mean", "sd"])
    wide.columns = [f"{split}_{metric}_{stat}" for stat, split, metric in wide.columns]
    wide = wide.reset_index()
    chosen = select_settings(scores)
    wide["selected_on_valid"] = [(t, s) in set(zip(chosen["task"], chosen["setting"]))
                                 for t, s in zip(wide["task"], wide["setting"])]
    return wide
