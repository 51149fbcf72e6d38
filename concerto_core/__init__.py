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
from .config import ConcertoConfig  # noqa: E402
from .engine import MODEL_BATCH_KEY  # noqa: E402
from .encoding import AlignmentReport, GeneVocabulary  # noqa: E402
from .kernels import set_cpu_threads  # noqa: E402
from .losses import nt_xent_loss  # noqa: E402
from .finetune import ClassifierPrediction, ConcertoClassifier, fine_tune, finetune_query, rejection_curves  # noqa: E402
from .label_transfer import (  # noqa: E402
    VoteResult,
    apply_rejection,
    confidence_distributions,
    hierarchical_knn_vote,
    knn_vote,
    transfer_labels,
)
from .modality import impute_modality, per_feature_pearson  # noqa: E402
from .model import Concerto  # noqa: E402
from .neighbors import NeighborIndex, knn_search  # noqa: E402
from .signatures import group_mean_attention, top_genes_per_cell  # noqa: E402

__all__ = [
    "Concerto", "ConcertoConfig", "GeneVocabulary", "AlignmentReport", "nt_xent_loss",
    "NeighborIndex", "knn_search", "VoteResult", "knn_vote", "hierarchical_knn_vote", "transfer_labels",
    "apply_rejection", "confidence_distributions", "impute_modality", "per_feature_pearson",
    "top_genes_per_cell", "group_mean_attention",
    "ConcertoClassifier", "ClassifierPrediction", "fine_tune", "finetune_query", "rejection_curves",
    "set_cpu_threads", "set_verbosity", "get_verbosity", "MODEL_BATCH_KEY",
]
__version__ = "0.1.0"
