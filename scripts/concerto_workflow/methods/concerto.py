"""Concerto through the ``concerto_core`` API: pretraining (rule ``train_concerto``) and the
task functions run on the fold's trained model (``ctx.model_dir``).

Pretraining uses the fold's training cells only; ``embed`` and ``map`` are the teacher's
direct inference (query batches unseen in training use the package's documented fallback);
``annotate`` is the paper's supervised fine-tuning of the pretrained teacher with a
classification head (Adam, ``lr``, ``epochs``, ``batch_size``).
"""
from __future__ import annotations

import time

import numpy as np

from ..columns import BATCH, TRAIN
from ..preprocessing import is_counts


def set_threads(threads: int | None) -> None:
    """Keep TensorFlow and numba within the job's Snakemake ``threads``. The engine calls methods
    in a fresh child process, before any TF op; a caller whose process already ran TensorFlow
    (tests, notebooks) keeps its thread setting, which TensorFlow cannot change any more."""
    from concerto_core import set_cpu_threads

    try:
        set_cpu_threads(threads)
    except RuntimeError as e:                     # TF's "cannot be modified after initialization"
        print(f"[concerto] keeping TensorFlow's current thread setting: {e}", flush=True)


def reference_modalities(a, second_modality: str = "", fitted: dict | None = None) -> dict | None:
    """concerto_core's ``modalities`` for a reference: RNA alone, or RNA plus ``obsm[second_modality]``,
    transformed in place on this copy: ADT counts of CITE-seq by log1p, as the RNA is; values that
    are already normalised are kept, except that features with negative entries (e.g. CLR-scaled
    ADTs) are shifted so their minimum over these cells is 0 (Concerto's value encoding takes
    non-negative values, 0 = not detected). Training and the reference side of ``impute`` see
    the same cells, so they get the same shift. ``fitted``: a dict that receives the transform
    (``{'log1p': bool, 'shift': (F,) array}``), or, when it already holds one (from the training
    cells), applies that transform instead of fitting it on ``a`` (held-out cells that carry the
    second modality, e.g. multimodal annotation; values below the training minimum become 0)."""
    if not second_modality:
        return None
    if second_modality not in a.obsm:
        raise ValueError(f"second_modality={second_modality!r}: these cells have no obsm "
                         f"{second_modality!r} (obsm: {list(a.obsm)})")
    values = np.asarray(a.obsm[second_modality], dtype=np.float32)
    fitted = {} if fitted is None else fitted
    if "log1p" not in fitted:
        fitted["log1p"] = is_counts(values)
        fitted["shift"] = np.zeros(values.shape[1], np.float32) if fitted["log1p"] else \
            -np.minimum(values.min(axis=0, initial=0.0), 0.0)
    values = np.log1p(values) if fitted["log1p"] else np.maximum(values + fitted["shift"], 0.0)
    a.obsm[second_modality] = values
    return {"rna": "X", second_modality: f"obsm:{second_modality}:{second_modality}_names"}


def train(cells, model_dir: str, *, seed: int, threads: int | None = None, epochs: int = 5,
          batch_size: int = 64, lr: float | None = None, lr_end: float | None = None, source_aware: bool = True,
          second_modality: str = "") -> None:
    """Pretrain on ``cells`` whose role is train; save to ``model_dir``. ``lr`` / ``lr_end``: Adam's
    rate at the start / end (None: the package's defaults); ``config.yaml`` sets the paper's schedule
    (batch 32, 3 epochs, 1e-4 -> 1e-6). ``second_modality``: an obsm key (e.g. 'protein') learnt
    jointly with the RNA (paper's multimodal Concerto)."""
    set_threads(threads)
    from concerto_core import Concerto

    a = cells[cells.obs["role"].astype(str) == TRAIN].copy() if "role" in cells.obs else cells.copy()
    if second_modality and f"{second_modality}_names" not in a.uns:
        a.uns[f"{second_modality}_names"] = [f"{second_modality}{i}" for i in range(a.obsm[second_modality].shape[1])]
    modalities = reference_modalities(a, second_modality)
    t0 = time.time()
    model = Concerto(a, batch_key=BATCH if source_aware else None, modalities=modalities, seed=seed)
    model.train(epochs=epochs, batch_size=batch_size, lr=lr, lr_end=lr_end, checkpoint_dir=None)
    model.save(model_dir)
    print(f"[concerto] trained on {a.n_obs} cells x {a.n_vars} genes in {time.time() - t0:.1f}s "
          f"({epochs} epochs, batch {batch_size}, lr {model.config.lr if lr is None else lr:g} -> "
          f"{model.config.lr_end if lr_end is None else lr_end:g}, source-aware {source_aware})", flush=True)


def _load(ctx):
    set_threads(ctx.threads)
    from concerto_core import Concerto

    return Concerto.load(ctx.model_dir)


def _embed(model, a) -> np.ndarray:
    emb = np.asarray(model.get_latent_representation(a), dtype=np.float32)
    if emb.shape[0] != a.n_obs:
        raise ValueError(f"Concerto returned {emb.shape[0]} rows for {a.n_obs} cells")
    return emb


def model_inputs(model, a, *held) -> list:
    """``a`` (and the ``held`` cells) as the model reads them: copies with each non-RNA modality of
    a multimodal model transformed as in training (:func:`reference_modalities`), the transform
    fitted on ``a`` (the training cells) and applied to ``held``; the inputs themselves for an RNA
    model."""
    extra = [m for m in model.modalities if m != "rna"]
    if not extra:
        return [a, *held]
    out = [x.copy() for x in (a, *held)]
    for m in extra:
        fitted: dict = {}
        for x in out:
            reference_modalities(x, m, fitted)
    return out


def embed(adata, ctx, *, attention: bool = False):
    """Teacher embedding of every cell from every modality the model was trained on. With
    ``attention=True`` also the teacher's attention weights per cell and modality (paper eq 4;
    ``Concerto.attention``): the input of the attention signatures (Fig 3d)."""
    model = _load(ctx)
    a, = model_inputs(model, adata)
    emb = _embed(model, a)
    if not attention:
        return emb
    weights = model.attention(a)
    return emb, {m: (w, list(model.vocabularies[m].names)) for m, w in weights.items()}


def map_query(ref, query, ctx):
    model = _load(ctx)
    return _embed(model, ref), _embed(model, query)


def map_query_finetuned(ref, query, ctx, *, finetune_epochs: int = 1, finetune_lr: float = 1e-3,
                        finetune_batch_size: int = 32):
    """The paper's second mapping mode (Fig 4a, "query fine-tuning"): a copy of the reference
    model continues its contrastive training on the query cells, without labels (Adam
    ``finetune_lr``, ``finetune_epochs``; :meth:`concerto_core.Concerto.finetune_query`), then
    embeds the reference and the query. The reference model itself is never modified."""
    import tempfile

    from concerto_core import Concerto

    set_threads(ctx.threads)
    with tempfile.TemporaryDirectory(prefix="concerto_query_ft_") as tmp:
        model = Concerto.finetune_query(ctx.model_dir, unlabelled(query, ctx), tmp, epochs=finetune_epochs,
                                        lr=finetune_lr, batch_size=finetune_batch_size, seed=ctx.seed,
                                        overwrite=True)
        return _embed(model, ref), _embed(model, query)


def annotate(train, test, ctx, *, finetune_epochs: int = 1, finetune_lr: float = 1e-3,
             finetune_batch_size: int = 32):
    """Fine-tune the pretrained teacher + a softmax head on the training labels (paper eq 12)."""
    from concerto_core import fine_tune

    model = _load(ctx)
    # a multimodal model (Fig 2e, RNA + protein) reads the second modality of both sets, transformed
    # as fitted on the training cells
    train, test = model_inputs(model, train, test)
    clf = fine_tune(model, train, ctx.label_key, epochs=finetune_epochs, lr=finetune_lr,
                    batch_size=finetune_batch_size, seed=ctx.seed)
    return _classified(clf, train, test)


def _classified(clf, train, target):
    """(probabilities, classes, (train, target) embeddings) of a fine-tuned classifier: the
    fine-tuned teacher's embedding (L2-normalised) that its head reads, kept for UMAPs (Fig 2h)."""
    pred = clf.predict(target)
    space = (clf.model.get_latent_representation(train), clf.model.get_latent_representation(target))
    return np.asarray(pred.probs, dtype=np.float64), [str(c) for c in pred.categories], space


def unlabelled(cells, ctx):
    """A copy of ``cells`` that keeps only what an unlabelled target may show: expression and the
    batch column (no label column, nothing else of obs, no obsm)."""
    target = cells.copy()
    target.obs = target.obs[[ctx.batch_key]].copy() if ctx.batch_key in target.obs else target.obs[[]].copy()
    target.obsm.clear()
    return target


def annotate_domain_adapted(train, test, ctx, *, finetune_epochs: int = 1, finetune_lr: float = 1e-3,
                            finetune_batch_size: int = 32, consistency_weight: float = 1.0):
    """Cross-tissue transfer (paper Fig 2g-i, Methods eq 13): fine-tune the pretrained teacher + a
    softmax head on the labelled training cells while the consistency loss, weighted by
    ``consistency_weight``, is applied to the held-out cells as an unlabelled target domain. The
    target reaches the model through :func:`unlabelled` only, so its labels are never seen."""
    from concerto_core import fine_tune

    model = _load(ctx)
    target = unlabelled(test, ctx)
    clf = fine_tune(model, train, ctx.label_key, epochs=finetune_epochs, lr=finetune_lr,
                    batch_size=finetune_batch_size, seed=ctx.seed, target_adata=target,
                    consistency_weight=consistency_weight)
    return _classified(clf, train, target)


def impute(ref, query, ctx, *, knn_k: int = 5):
    """Missing-modality inference (paper Fig 4e) with a model trained on the reference's RNA and
    ``ctx.feature_key`` jointly (train param ``second_modality``): the reference is embedded by the
    teacher from both modalities (the joint embedding), the RNA-only query by the student from its
    RNA (the contrastive objective puts both networks' outputs in one space), then the engine's k-NN
    smoothing of the reference's values (paper: k = 5). The query's values of ``ctx.feature_key``
    are never read. Measured on the PBMC CITE-seq stand-in (median Pearson r over 24 proteins):
    0.37 this way; 0.07 with the teacher on the query's RNA alone (the teacher never saw RNA
    without protein); 0.40 with the student on the RNA of both. A model trained on RNA only
    embeds both sets with the teacher."""
    from .shared import smooth

    model = _load(ctx)
    query_rna = query.copy()
    query_rna.obsm.clear()                    # the query is RNA-only: nothing else can reach the model
    if ctx.feature_key in model.modalities:
        ref_in = ref.copy()
        reference_modalities(ref_in, ctx.feature_key)
        ref_emb = model.get_latent_representation(ref_in)
        query_emb = model.get_latent_representation(query_rna, modalities=["rna"], student=True)
    else:
        ref_rna = ref.copy()
        ref_rna.obsm.clear()
        ref_emb, query_emb = _embed(model, ref_rna), _embed(model, query_rna)
    ref_emb, query_emb = np.asarray(ref_emb, dtype=np.float32), np.asarray(query_emb, dtype=np.float32)
    values = smooth(ref_emb, np.asarray(ref.obsm[ctx.feature_key]), query_emb, k=knn_k)
    return values, (ref_emb, query_emb)   # the space, for UMAPs of the query (Fig 4f)


#: config params consumed by ``train`` (the rest go to the task functions)
TRAIN_PARAMS = ("epochs", "batch_size", "lr", "lr_end", "source_aware", "second_modality")
