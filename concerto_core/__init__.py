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

from .config import ConcertoConfig  # noqa: E402
from .encoding import AlignmentReport, GeneVocabulary  # noqa: E402
from .losses import nt_xent_loss  # noqa: E402
from .model import Concerto  # noqa: E402

__all__ = ["Concerto", "ConcertoConfig", "GeneVocabulary", "AlignmentReport", "nt_xent_loss"]
__version__ = "0.1.0"
