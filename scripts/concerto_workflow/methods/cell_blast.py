"""Cell BLAST (Cao et al. 2020, Nature Communications; ``cell-blast`` on PyPI): an annotation
competitor of the paper's Fig 2a.

Cell BLAST fits DIRECTi models (an adversarial autoencoder with a negative-binomial likelihood,
on counts) to the reference, searches each query cell's nearest reference cells in their
latent spaces, keeps the hits whose empirical p-value passes ``cutoff`` and votes their labels.
Its own ``Hits.annotate`` turns the vote into one label, 'ambiguous' (majority <= 50%) or
'rejected' (fewer than ``min_hits`` hits). The engine needs class probabilities, so the adapter
reports each query cell's fraction of hits per class (argmax = Cell BLAST's label) and a
uniform row for a rejected cell, which makes it the least confident cell of the query.

The fold's values are log-normalised (10,000 counts per cell, log1p); DIRECTi models counts, so
it is given ``expm1`` of them (counts scaled to 10,000 per cell, not integers).
"""
from __future__ import annotations

import tempfile

import numpy as np

from ..columns import BATCH
from .shared import scaled_counts


def hit_fractions(hit_labels, classes, min_hits: int = 2) -> np.ndarray:
    """(n_query, n_classes) share of each class among every query cell's hits; a cell with fewer
    than ``min_hits`` hits (Cell BLAST: rejected) gets the uniform row."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.full((len(hit_labels), len(classes)), 1.0 / len(classes))
    for row, labels in enumerate(hit_labels):
        if len(labels) < min_hits:
            continue
        counts = np.bincount([index[str(lab)] for lab in labels], minlength=len(classes))
        out[row] = counts / counts.sum()
    return out


def _typed_rows(hits):
    """Runtime shim: Cell BLAST 0.5.1 keeps each query cell's hit indices, distances and
    p-values as object arrays, which SciPy >= 1.14's ``gmean`` (model reconciliation) and
    numba (hit filtering) reject; the same numbers as int / float arrays, one per query cell."""
    for name, dtype in (("hits", np.int64), ("dist", np.float64), ("pval", np.float64)):
        rows = getattr(hits, name)
        typed = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            typed[i] = np.asarray(row, dtype=dtype)
        setattr(hits, name, typed)
    return hits


def annotate(train, test, ctx, *, n_models: int = 4, latent_dim: int = 10, cat_dim: int = 20,
             epochs: int = 1000, patience: int = 30, batch_size: int = 128, learning_rate: float = 1e-3,
             cutoff: float = 0.05, min_hits: int = 2):
    """Cell BLAST with its tutorial settings: an ensemble of ``n_models`` DIRECTi models (seeds
    ``ctx.seed`` ... + n_models - 1; early stopping on a 10% validation split), reconciled hits
    filtered at empirical p < ``cutoff``. Batch correction (its adversarial module) is used
    when the training cells come from several batches."""
    import anndata as ad
    import Cell_BLAST as cb
    import torch

    torch.set_num_threads(max(1, ctx.threads))

    def counts_like(a):
        obs = a.obs[[c for c in (ctx.label_key, BATCH) if c in a.obs]].astype(str)
        return ad.AnnData(scaled_counts(a.X).astype(np.float32), obs=obs, var=a.var[[]].copy())

    ref, query = counts_like(train), counts_like(test)
    # DIRECTi drops the last incomplete mini-batch: keep at least one full batch of its 90% split
    batch_size = max(8, min(batch_size, int(0.9 * ref.n_obs) // 2))
    batch = [BATCH] if BATCH in ref.obs and ref.obs[BATCH].nunique() > 1 else None
    # DIRECTi checkpoints every epoch: into a scratch directory removed afterwards (not left in /tmp)
    with tempfile.TemporaryDirectory(prefix="cell_blast_") as scratch:
        models = [cb.directi.fit_DIRECTi(ref, latent_dim=latent_dim, cat_dim=cat_dim, batch_effect=batch,
                                         epoch=epochs, patience=patience, batch_size=batch_size,
                                         learning_rate=learning_rate, random_seed=ctx.seed + i,
                                         path=f"{scratch}/model{i}")
                  for i in range(n_models)]
        blast = cb.blast.BLAST(models, ref)
        hits = _typed_rows(blast.query(query, random_seed=ctx.seed))
        hits = _typed_rows(hits.reconcile_models()).filter(by="pval", cutoff=cutoff)
    ref_labels = ref.obs[ctx.label_key].to_numpy()
    classes = sorted(set(ref_labels))
    fractions = hit_fractions([ref_labels[np.asarray(h, dtype=int)] for h in hits.hits], classes, min_hits)
    return fractions, classes
