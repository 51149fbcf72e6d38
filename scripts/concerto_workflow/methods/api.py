"""What a method is to the engine: a :class:`Method` entry with one function per task.

Task functions (``ctx`` is a :class:`RunContext`; everything else a method takes is a named
keyword parameter with a default, which config ``params`` may set and the dry run checks):

=========  ==================================================  ===========================================
task       call                                                returns
=========  ==================================================  ===========================================
embed      ``fn(adata, ctx, **params)``                        (n_cells, d) array, or (array, attention):
                                                              attention = {modality: ((n_cells, F)
                                                              sparse weights, F names)}
map        ``fn(ref, query, ctx, **params)``                   ((n_ref, d), (n_query, d)) arrays
annotate   ``fn(train, test, ctx, **params)``                  ((n_test, C) probabilities, C class names),
                                                              optionally + ((n_train, d), (n_test, d)):
                                                              the space it classified in
cluster    ``fn(adata, ctx, **params)``                        (n_cells, len(ctx.settings)) int clusters,
                                                              or (clusters, (n_cells, d) embedding)
impute     ``fn(ref, query, ctx, **params)``                   (n_query, F) values of ``ctx.feature_key``,
                                                              or (values, ((n_ref, d), (n_query, d))):
                                                              the space it inferred them in
=========  ==================================================  ===========================================

Inputs hold log-normalised values on the fold's genes (CSR ``X``) and the dataset columns of
:mod:`concerto_workflow.columns`. Methods without their own ``annotate`` / ``impute`` /
``cluster`` function inherit them from ``map`` / ``embed`` through the engine's shared k-NN
vote, k-NN smoothing and Leiden / Louvain clustering (``ctx.cluster_algorithm``; see
:func:`concerto_workflow.methods.capability`). A cluster output keeps the embedding the clusters
came from (``obsm['X_emb']``) when there is one, for the cluster silhouette and the UMAPs.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

KINDS = ("method", "negative_control", "positive_control")


@dataclass(frozen=True)
class RunContext:
    """Arguments every task function receives (not config parameters)."""
    seed: int = 0
    batch_key: str = "batch"
    label_key: str = "cell_type"
    n_comps: int = 50
    threads: int = 1
    model_dir: str | None = None          # trained Concerto model of this fold (needs_model methods)
    settings: tuple = ()                  # cluster: resolutions
    cluster_algorithm: str = "leiden"     # cluster: leiden | louvain (methods/shared.py)
    feature_key: str = "protein"          # impute: obsm key of the features to predict
    feature_names: tuple = ()


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    functions: dict[str, Callable] = field(default_factory=dict)   # task -> function
    kind: str = "method"
    python_modules: tuple[str, ...] = ()
    r_packages: tuple[str, ...] = ()
    needs_model: bool = False     # gets ctx.model_dir: the fold's model from rule train_concerto
    required: bool = False        # its failure fails the run instead of becoming a status row
    train_params: tuple[str, ...] = ()   # params consumed by train_concerto, not by the functions
    # what else it needs that no import can find (e.g. a source clone named by an environment
    # variable): a function returning one line per missing thing, [] when runnable
    missing_other: Callable[[], list[str]] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}")

    def accepted_params(self, function: Callable) -> set[str]:
        sig = inspect.signature(function)
        names = [p.name for p in sig.parameters.values()
                 if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)]
        return set(names) | set(self.train_params)
