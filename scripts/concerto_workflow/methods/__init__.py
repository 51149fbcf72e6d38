"""The one method registry: every method and control, the tasks it runs and what it needs.

To add a competitor: write its task function(s) (signatures in :mod:`.api`) in a module of
this package, add one :class:`~.api.Method` entry below naming its Python modules / R
packages, and one line to ``envs/competitors.yaml``. Config names are validated against this
registry (no lists elsewhere). Methods run in a child process (:mod:`.runner`): a missing
dependency, a crash or an out-of-memory kill becomes a ``not_installed`` / ``failed`` row.
"""
from __future__ import annotations

import functools
import importlib.util

from . import annotation, baselines, cell_blast, concerto, mapping, mars, moana, precomputed, scdeepcluster, seurat
from .api import Method, RunContext  # noqa: F401  (re-exported)

CONCERTO = "concerto"

REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method(CONCERTO, "Concerto (concerto_core): teacher embedding after contrastive pretraining on "
           "the training cells; annotate = supervised fine-tuning with a softmax head",
           {"embed": concerto.embed, "map": concerto.map_query, "annotate": concerto.annotate,
            "impute": concerto.impute},
           python_modules=("tensorflow",), needs_model=True, required=True,
           train_params=concerto.TRAIN_PARAMS),
    Method("concerto_query_ft", "Concerto with query fine-tuning (paper Fig 4a, mapping mode b): the "
           "reference model's contrastive training continued on the unlabelled query cells, then "
           "both embedded", {"map": concerto.map_query_finetuned}, python_modules=("tensorflow",),
           needs_model=True, train_params=concerto.TRAIN_PARAMS),
    Method("concerto_da", "Concerto with domain adaptation (paper eq 13): fine-tuned on the labelled "
           "training cells with the consistency loss on the unlabelled held-out cells (target domain)",
           {"annotate": concerto.annotate_domain_adapted}, python_modules=("tensorflow",), needs_model=True,
           train_params=concerto.TRAIN_PARAMS),
    Method("pca", "uncorrected baseline: PCA of the log-normalised genes (fitted on the training "
           "cells, others projected)", {"embed": baselines.pca_embed, "map": baselines.pca_map},
           python_modules=("sklearn",)),
    Method("harmony", "Harmony (harmonypy) on the PCA embedding", {"embed": baselines.harmony_embed},
           python_modules=("harmonypy",)),
    Method("seurat", "Seurat v3 CCA anchor integration (R, through rpy2); cluster = FindNeighbors + "
           "FindClusters (algorithm 1 Louvain / 4 Leiden)",
           {"embed": seurat.seurat_embed, "cluster": seurat.seurat_cluster},
           python_modules=("rpy2", "leidenalg"), r_packages=("Seurat",)),
    Method("scdeepcluster", "scDeepCluster (Tian et al. 2019; GitHub source only, the clone named by "
           "SCDEEPCLUSTER_HOME): ZINB autoencoder pretrained once, then DEC clustering for each k of the "
           "experiment's cluster_settings", {"cluster": scdeepcluster.cluster},
           python_modules=("torch", "sklearn", "scanpy"), unavailable=scdeepcluster.unavailable),
    Method("symphony", "Symphony (symphonypy): reference = PCA + Harmony of the reference cells; the "
           "query projected on its loadings and corrected towards its Harmony centroids",
           {"map": mapping.symphony_map}, python_modules=("symphonypy", "harmonypy")),
    Method("seurat_v4", "Seurat v4 reference mapping (R, through rpy2): FindTransferAnchors on the "
           "reference PCA + MapQuery; annotate / impute = its own TransferData",
           {"map": mapping.seurat_v4_map, "annotate": mapping.seurat_v4_annotate,
            "impute": mapping.seurat_v4_impute},
           python_modules=("rpy2",), r_packages=("Seurat",)),
    Method("seurat_v4_wnn", "Seurat v4 multimodal reference mapping (R): WNN of the reference's RNA and "
           "protein, sPCA, FindTransferAnchors + TransferData of the query's RNA (Azimuth's algorithm); "
           "needs preprocessing features rna+protein", {"annotate": mapping.seurat_v4_wnn_annotate},
           python_modules=("rpy2",), r_packages=("Seurat",)),
    Method("scarches", "scArches trVAE surgery: conditional VAE trained on the reference batches, "
           "query batches added as new conditions (only their weights trained); embed = trVAE "
           "integration of every cell with its batch as condition",
           {"map": mapping.scarches_map, "embed": mapping.scarches_embed}, python_modules=("scarches", "torch")),
    Method("logreg", "logistic regression on PCA of the training cells", {"annotate": baselines.logreg_annotate},
           python_modules=("sklearn",)),
    # annotation competitors of Fig 2 (methods/annotation.py)
    Method("logreg_expr", "logistic regression on the log-normalised expression of every gene "
           "(the strong linear bound)", {"annotate": annotation.logreg_expr_annotate},
           python_modules=("sklearn",)),
    Method("scibet_reimpl", "SciBet re-implementation (Li et al. 2020; not the R package): E-test "
           "gene selection + multinomial likelihood classifier", {"annotate": annotation.scibet_annotate}),
    Method("singler", "SingleR (R/Bioconductor, through rpy2) with the training cells as reference; "
           "probabilities = softmax of its correlation scores", {"annotate": annotation.singler_annotate},
           python_modules=("rpy2",), r_packages=("SingleR",)),
    Method("concerto_e2e", "Concerto-E2E: Concerto's network + softmax head trained with the supervised "
           "loss only (no contrastive pretraining)", {"annotate": annotation.concerto_e2e_annotate},
           python_modules=("tensorflow",)),
    Method("cell_blast", "Cell BLAST (cell-blast 0.5.1, PyTorch): DIRECTi ensemble on the training cells, "
           "query hits filtered by empirical p-value, probabilities = share of hits per label",
           {"annotate": cell_blast.annotate}, python_modules=("Cell_BLAST", "torch")),
    Method("moana", "Moana (moana 0.1.1, in its own legacy interpreter .venv-moana): kNN-smoothing + PCA + "
           "linear nu-SVM on the training cells; probabilities = softmax of its one-vs-one votes",
           {"annotate": moana.annotate}, unavailable=moana.unavailable),
    Method("mars", "MARS (GitHub snap-stanford/mars, imported from $MARS_HOME): meta-learned landmarks "
           "cluster the unlabelled held-out cells; each cell gets its cluster's MARS naming probabilities",
           {"annotate": mars.annotate}, python_modules=("torch",), unavailable=mars.unavailable),
    Method("precomputed", "an embedding computed outside the workflow, read from the dataset's "
           "obsm[obsm_key] (bring your own; methods/precomputed.py)",
           {"embed": precomputed.embed, "map": precomputed.map_query}),
    Method("random", "negative control: random embedding / labels / clusters",
           {"embed": baselines.random_embed, "map": baselines.random_map,
            "annotate": baselines.random_annotate, "cluster": baselines.random_cluster},
           kind="negative_control"),
    Method("majority", "negative control: the most frequent training label for every cell",
           {"annotate": baselines.majority_annotate}, kind="negative_control"),
    Method("mean", "negative control: the training mean of every feature", {"impute": baselines.mean_impute},
           kind="negative_control"),
    Method("true_labels", "positive control: the cells' own labels (uniform for unseen labels)",
           {"annotate": baselines.true_labels_annotate, "cluster": baselines.true_labels_cluster},
           kind="positive_control"),
    Method("true_embedding", "positive control: one-hot cell-type labels + noise as the embedding",
           {"embed": baselines.true_embedding_embed, "map": baselines.true_embedding_map},
           kind="positive_control"),
    Method("true_values", "positive control: the measured values", {"impute": baselines.true_values_impute},
           kind="positive_control"),
)}

#: a task a method lacks, and the task it is derived from by the engine's shared operation
DERIVED = {"annotate": "map", "impute": "map", "cluster": "embed"}


def capability(method: str, task: str) -> tuple[str, object] | None:
    """How ``method`` runs ``task``: ('own', fn), ('via_map', fn) / ('via_embed', fn), or None."""
    spec = REGISTRY[method]
    if task in spec.functions:
        return "own", spec.functions[task]
    base = DERIVED.get(task)
    if base and base in spec.functions:
        return f"via_{base}", spec.functions[base]
    return None


def methods_for(task: str) -> list[str]:
    return [m for m in REGISTRY if capability(m, task)]


def accepted_params(method: str, task: str) -> set[str]:
    cap = capability(method, task)
    return REGISTRY[method].accepted_params(cap[1]) if cap else set()


@functools.lru_cache(maxsize=None)
def missing_dependencies(method: str) -> tuple[str, ...]:
    """Python modules / R packages of ``method`` that are not installed, and its own
    ``unavailable`` reason (empty = runnable). R packages are looked up in a child R process, so
    the workflow never loads R itself."""
    spec = REGISTRY[method]
    missing = [m for m in spec.python_modules if importlib.util.find_spec(m) is None]
    why = spec.unavailable() if spec.unavailable else None
    missing += [why] if why else []
    if spec.r_packages and not missing:
        r_missing = _missing_r_packages()
        missing += [p for p in r_missing if p in spec.r_packages or p.startswith("R (")]
    return tuple(missing)


@functools.lru_cache(maxsize=None)
def _missing_r_packages() -> tuple[str, ...]:
    """Every registry R package looked up in one R start (not one per method)."""
    packages = sorted({p for spec in REGISTRY.values() for p in spec.r_packages})
    return tuple(seurat.missing_r_packages(packages))


def installed(method: str) -> bool:
    """Whether ``method`` can run here. Rule params use it, so installing a competitor later
    makes Snakemake rerun its ``not_installed`` jobs."""
    return not missing_dependencies(method)
