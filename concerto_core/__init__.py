"""Concerto: self-distillation contrastive learning of single-cell representations.

Typical use::

    import concerto_core as cc
    model = cc.Concerto(adata, batch_key="batch")   # adata.X: log-normalised, genes = vocabulary
    model.train(epochs=3)
    model.embed(adata)                               # adata.obsm["X_concerto"]
    model.save("my_model")
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of logs

from .settings import get_verbosity, set_verbosity  # noqa: E402  (configures the concerto_core logger)

# Public names -> defining module. Imported on first use (PEP 562), so `import concerto_core`,
# the gene aligner, the k-NN vote and the CLI's argument checks do not load TensorFlow (seconds
# of start-up) until a model is actually needed.
_EXPORTS = {
    "ConcertoConfig": "config", "MODEL_BATCH_KEY": "engine",
    "AlignmentReport": "encoding", "GeneVocabulary": "encoding",
    "set_cpu_threads": "kernels", "nt_xent_loss": "losses",
    "ClassifierPrediction": "finetune", "ConcertoClassifier": "finetune", "fine_tune": "finetune",
    "finetune_query": "finetune", "rejection_curves": "finetune",
    "VoteResult": "label_transfer", "apply_rejection": "label_transfer",
    "confidence_distributions": "label_transfer", "hierarchical_knn_vote": "label_transfer",
    "knn_vote": "label_transfer", "transfer_labels": "label_transfer", "ReferenceIndexes": "label_transfer",
    "impute_modality": "modality", "per_feature_pearson": "modality",
    "Concerto": "model", "NeighborIndex": "neighbors", "knn_search": "neighbors",
    "group_mean_attention": "signatures", "top_genes_per_cell": "signatures",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["get_verbosity", "set_verbosity", *_EXPORTS]
__version__ = "0.1.0"
