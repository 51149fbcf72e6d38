"""MARS (Brbić et al. 2020, Nature Methods; github.com/snap-stanford/mars): the paper's
cross-tissue competitor (Fig 2g).

MARS has no package release. Users clone its repository and point ``MARS_HOME`` at the checkout
(the directory that holds ``model/mars.py``); the adapter imports ``model.mars`` from there.
Without it the method is ``not_installed`` with :data:`WHY` as the reason.

How the fold becomes a MARS run (as its ``main_TM.py`` runs Tabula Muris leave-one-tissue-out):

* annotated experiments: the training cells, one ``ExperimentDataset`` per value of
  ``experiment_key`` (default: tissue, else batch); experiments with a single cell type are
  pooled, because MARS's landmark update needs two types per experiment;
* unannotated experiment: the held-out cells, whose labels MARS never sees; its autoencoder
  is pretrained on them (MARS's default, as in ``main_TM.py``);
* input: the fold's log-normalised values, z-scored with the training cells' gene means and
  standard deviations and clipped at 10 (MARS scales with ``sc.pp.scale(max_value=10)``);
* ``n_clusters``: ``main_TM.py`` passes the held-out tissue's true number of cell types. The
  adapter never reads those labels: it takes ``n_clusters`` from the config, or else the number
  of Leiden clusters (``cluster_resolution``) of the held-out cells' PCA.

What is reported: MARS assigns each held-out cell to one of its clusters, then its own naming
step (``MARS.name_cell_types``) gives each cluster a probability for every training cell type
(Gaussian kernel from the cluster mean to the annotated landmarks, summed per type). Each cell's
row is its cluster's probabilities, so the predicted label is the cluster's most probable
name. A new cell type gets the name of its nearest known type(s) with the probabilities MARS
computes; a cluster MARS leaves "unassigned" (every kernel weight underflows to zero) gets the
uniform row. Clusters that share a top name are thereby merged, which the label ARI sees (MARS's
own evaluation scores the cluster ids instead). The MARS embedding is kept as the output's
``X_emb``. Written against commit f6f03ba (2021-04-27) of the repository, run with torch 2.13.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..columns import BATCH, TISSUE
from .annotation import _dense, _labels

ENV_VAR = "MARS_HOME"
WHY = "MARS is GitHub-only: clone https://github.com/snap-stanford/mars and set MARS_HOME"
POOLED = "pooled_single_type_experiments"


def unavailable() -> str | None:
    """Why MARS cannot run here (no checkout named by ``MARS_HOME``), or None."""
    home = os.environ.get(ENV_VAR, "")
    if not home:
        return WHY
    if not os.path.isfile(os.path.join(home, "model", "mars.py")):
        return f"{ENV_VAR}={home} has no model/mars.py; {WHY}"
    return None


def _import_mars():
    """(MARS class, ExperimentDataset class, MARS's argument parser) from ``MARS_HOME``.

    Runtime shims, for the 2020 code on today's libraries: it imports ``scanpy.api`` (removed in
    scanpy 1.5; the same functions live in ``scanpy``) and ``sklearn.cluster.k_means_`` (renamed
    ``_kmeans`` in scikit-learn 0.24)."""
    import scanpy
    import sklearn.cluster._kmeans

    why = unavailable()
    if why:
        raise ImportError(why)
    home = os.path.abspath(os.environ[ENV_VAR])
    sys.modules.setdefault("scanpy.api", scanpy)
    sys.modules.setdefault("sklearn.cluster.k_means_", sklearn.cluster._kmeans)
    if home not in sys.path:
        sys.path.insert(0, home)
    from args_parser import get_parser
    from model import mars
    from model.experiment_dataset import ExperimentDataset

    # MARS's ``model`` is a namespace package: a regular package of that name would win
    if not os.path.abspath(mars.__file__).startswith(home + os.sep):
        raise ImportError(f"imported model.mars from {mars.__file__}, not from {ENV_VAR}={home}: another "
                          "'model' package shadows MARS's")
    return mars.MARS, ExperimentDataset, get_parser


def _sigma(points: np.ndarray) -> float:
    """MARS's ``estimate_sigma`` (std of the pairwise Euclidean distances of a cluster's cells),
    vectorised: the same number without its Python double loop over cell pairs."""
    from scipy.spatial.distance import pdist

    return float(np.std(pdist(points)))


def experiments(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n_train,) annotated-experiment name per training cell: its group, except that groups
    with a single cell type are pooled (MARS's landmark update divides by n_types - 1); a pool
    that still has one type joins the largest multi-type group."""
    groups = np.asarray(groups, dtype=object).copy()
    names = sorted(set(groups))
    single = [g for g in names if len(set(labels[groups == g])) < 2]
    if len(single) == len(names) and len(set(labels)) < 2:
        raise ValueError(f"MARS needs >= 2 training cell types, got {sorted(set(labels))}")
    if not single:
        return groups
    pooled = np.isin(groups, single)
    multi = [g for g in names if g not in single]
    if len(set(labels[pooled])) >= 2 or not multi:
        groups[pooled] = POOLED
    else:
        groups[pooled] = max(multi, key=lambda g: int((groups == g).sum()))
    return groups


def _experiment_key(train, key: str | None) -> str | None:
    """The obs column whose values are MARS's annotated experiments (None: one experiment)."""
    if key:
        if key not in train.obs:
            raise ValueError(f"experiment_key {key!r} is not an obs column of the training cells")
        return key
    for k in (TISSUE, BATCH):
        if k in train.obs and train.obs[k].nunique() > 1:
            return k
    return None


def _n_clusters(x_test: np.ndarray, ctx, resolution: float) -> int:
    """Number of Leiden clusters of the held-out cells' PCA (labels unused)."""
    from sklearn.decomposition import PCA

    from .shared import leiden

    if len(x_test) < 3:
        return len(x_test)
    n_comps = max(1, min(ctx.n_comps, x_test.shape[0] - 1, x_test.shape[1]))
    pcs = PCA(n_components=n_comps, random_state=ctx.seed).fit_transform(x_test)
    return int(len(np.unique(leiden(pcs, [resolution], seed=ctx.seed)[:, 0])))


def cluster_probabilities(names: dict, n_clusters: int, classes) -> np.ndarray:
    """(n_clusters, C) rows from MARS's ``name_cell_types`` answer {cluster: [(class, prob), ...]
    or ["unassigned"]}; unassigned, missing or non-finite clusters get the uniform row."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.full((n_clusters, len(classes)), 1.0 / len(classes))
    for cluster, pairs in names.items():
        row = np.zeros(len(classes))
        for pair in pairs:
            if isinstance(pair, tuple):
                row[index[pair[0]]] += pair[1]
        if np.isfinite(row).all() and row.sum() > 0:
            out[int(cluster)] = row / row.sum()
    return out


def annotate(train, test, ctx, *, epochs: int = 30, epochs_pretrain: int = 25, learning_rate: float = 1e-3,
             hid_dim_1: int = 1000, hid_dim_2: int = 100, tau: float = 0.2, n_clusters: int | None = None,
             cluster_resolution: float = 1.0, experiment_key: str | None = None, name_in_umap: bool = True,
             device: str = "cpu"):
    """MARS with its defaults (``args_parser.py``: 30 epochs, 25 pretraining epochs, lr 1e-3,
    full-batch steps; ``main_TM.py``: hidden sizes 1000 / 100; tau 0.2). ``name_in_umap``: name
    the clusters in a 10-d UMAP of the embedding (MARS's default) rather than in the embedding.
    Returns the (n_test, C) cluster-name probabilities (module docstring), the C training types
    and the MARS embedding of the training and held-out cells."""
    import torch

    MARS, ExperimentDataset, get_parser = _import_mars()
    if epochs < 1 or epochs_pretrain < 0:
        raise ValueError(f"MARS needs epochs >= 1 and epochs_pretrain >= 0, got {epochs}, {epochs_pretrain}")
    if test.n_obs == 0:
        raise ValueError("MARS needs held-out cells (its unannotated experiment); the fold has none")
    labels = _labels(train, ctx)
    classes = sorted(set(labels))
    key = _experiment_key(train, experiment_key)
    groups = experiments(train.obs[key].astype(str).to_numpy() if key else np.full(train.n_obs, "train"),
                         labels)
    torch.set_num_threads(max(1, ctx.threads))
    np.random.seed(ctx.seed)
    torch.manual_seed(ctx.seed)

    x_train, x_test = _dense(train.X), _dense(test.X)
    mean, sd = x_train.mean(axis=0), x_train.std(axis=0)
    sd[sd == 0] = 1.0
    x_train, x_test = (np.clip((x - mean) / sd, None, 10).astype(np.float32) for x in (x_train, x_test))
    k = int(n_clusters) if n_clusters else _n_clusters(x_test, ctx, cluster_resolution)
    if not 1 <= k <= test.n_obs:
        raise ValueError(f"n_clusters must be in [1, {test.n_obs}] (held-out cells), got {k}")
    print(f"[mars] {len(set(groups))} annotated experiments ({key or 'one'}), {len(classes)} types; "
          f"{test.n_obs} held-out cells in {k} clusters", flush=True)

    genes = [str(g) for g in train.var_names]
    y = np.searchsorted(classes, labels).astype(np.int64)      # classes are sorted
    labelled = [ExperimentDataset(x_train[groups == g], [f"c{i}" for i in np.flatnonzero(groups == g)],
                                  genes, g, y[groups == g]) for g in sorted(set(groups))]
    unlabelled = ExperimentDataset(x_test, [f"q{i}" for i in range(test.n_obs)], genes, "held_out")
    params = get_parser().parse_args([])
    params.epochs, params.epochs_pretrain, params.learning_rate = epochs, epochs_pretrain, learning_rate
    params.device = device
    model = MARS(k, params, labelled, unlabelled, hid_dim_1=hid_dim_1, hid_dim_2=hid_dim_2, tau=tau)
    model.estimate_sigma = _sigma
    adata, landmarks = model.train(evaluation_mode=False)
    names = model.name_cell_types(adata, landmarks, dict(enumerate(classes)), top_match=len(classes),
                                  umap_reduce_dim=name_in_umap)

    # MARS shuffles cells: its obs names are our ids ("c<train row>", "q<held-out row>") + "-<experiment>"
    ids = np.array([n.split("-", 1)[0] for n in adata.obs_names])
    held = np.char.startswith(ids.astype(str), "q")
    rows = np.array([int(i[1:]) for i in ids])
    clusters = np.empty(test.n_obs, dtype=np.int64)
    clusters[rows[held]] = adata.obs["MARS_labels"].to_numpy()[held].astype(np.int64)
    emb = np.asarray(adata.obsm["MARS_embedding"], dtype=np.float32)
    train_emb = np.empty((train.n_obs, emb.shape[1]), np.float32)
    test_emb = np.empty((test.n_obs, emb.shape[1]), np.float32)
    train_emb[rows[~held]], test_emb[rows[held]] = emb[~held], emb[held]
    return cluster_probabilities(names, k, classes)[clusters], classes, (train_emb, test_emb)
