"""Supervised fine-tuning, domain adaptation, NOTA rejection and query fine-tuning.

Methods of the paper implemented here:

* **Supervised fine-tuning** (eq 12): a Dense layer over the label categories followed by a
  softmax (:data:`HEAD_NAME`) on the teacher's output ``Z_t`` (after its ReLU, before the
  L2 normalisation used for embeddings), trained with cross-entropy; the teacher is
  fine-tuned with it or kept frozen. Paper: Adam, lr 1e-3, 1 epoch, batch 32.
* **Concerto-E2E**: the same architecture trained from a random initialisation with the
  supervised loss only (:meth:`ConcertoClassifier.end_to_end`).
* **Domain adaptation** (eq 13): for unlabelled target cells, the prediction with a fixed
  copy of the parameters (stop-gradient, no dropout, stored BatchNorm statistics) is the
  target of a cross-entropy with the prediction on the augmented view: the same head on
  the target cells' student embedding Z_s with its dropout on (paper: "y-hat in
  Z_s^target ... augmented embeddings"). The loss is ``CE(source) + lambda * consistency``
  (lambda = 1); with a trainable teacher the student is trained with it. Target labels
  are never read.
* **NOTA rejection**: cells whose maximal class probability (``conf_score``) is below a
  threshold are labelled ``Unknown`` (:func:`concerto_core.label_transfer.apply_rejection`).
* **Query-to-reference mapping, mode (b)**: :func:`finetune_query` continues the
  contrastive training of a saved reference on the query cells and writes a *new* model
  directory (the reference directory is only read). Mode (a), direct inference, is
  ``Concerto.load(reference).embed(query)``.

BatchNorm slots for sources that the pretrained model has not seen: the network is
rebuilt with one extra source-aware slot per new source (``Concerto.add_sources``); all
weights and the statistics of the reference sources are copied, each new slot starts
from the fallback statistics (average of the reference sources) and is then set to the
exact statistics of its own cells before training (and again after training when
``config.precise_bn``). Reference sources keep their statistics, so the reference can
still be embedded with the fine-tuned model.

The classifier works through the public engine (:mod:`concerto_core.engine`: query
alignment, BatchNorm statistics, unseen sources; :mod:`concerto_core.training`: the
supervised loop) and the public ``Concerto`` API; this module imports ``model``, never the
other way round.

Classifier directories are Concerto model directories (``Concerto.load`` reads the
fine-tuned teacher from them) plus ``classifier_head.weights.h5`` and a ``classifier``
section in the signed ``manifest.json`` (categories, label key, fine-tuning parameters).
Weights are strict HDF5; no pickle.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from . import engine
from . import io as model_io
from .config import ConcertoConfig
from .engine import MODEL_BATCH_KEY
from .label_transfer import UNKNOWN, _check_threshold, apply_rejection, confidence_distributions
from .model import Concerto
from .training import PAPER_FINETUNE, fit_supervised, teacher_output  # noqa: F401 (PAPER_FINETUNE: public name)

__all__ = ["ConcertoClassifier", "ClassifierPrediction", "fine_tune", "finetune_query", "rejection_curves",
           "clone_model", "HEAD_NAME", "HEAD_WEIGHTS"]

HEAD_NAME = "classifier_head"
HEAD_WEIGHTS = "classifier_head.weights.h5"


# ---------------------------------------------------------------------------- helpers
def _labels(adata, label_key, what="adata"):
    """Valid-cell mask and string labels; clear errors for missing / all-NaN columns."""
    if label_key is None:
        raise ValueError("label_key is required (the obs column holding the cell labels)")
    if label_key not in adata.obs:
        raise KeyError(f"label_key {label_key!r} is not a column of {what}.obs (columns: {list(adata.obs.columns)[:20]})")
    values = adata.obs[label_key]
    valid = ~pd.isna(values).to_numpy()
    if not valid.any():
        raise ValueError(f"all labels in {what}.obs[{label_key!r}] are NaN; nothing to train on")
    if not valid.all():
        warnings.warn(f"{int((~valid).sum())} cells with a NaN label in {what}.obs[{label_key!r}] are excluded "
                      "from supervised training", UserWarning, stacklevel=3)
    return valid, values.astype(object).to_numpy()


def clone_model(model: Concerto) -> Concerto:
    """An independent copy of a Concerto model (same weights, own network); ``model.copy()``."""
    return model.copy()


@dataclass
class ClassifierPrediction:
    """labels (object, ``Unknown`` where rejected), conf_score = max probability,
    probs (n_cells, n_categories) rows summing to 1, categories (columns of probs)."""

    labels: np.ndarray
    conf_score: np.ndarray
    probs: np.ndarray
    categories: list
    threshold: float | None = None
    index: object = field(default=None, repr=False)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"predicted_label": self.labels, "conf_score": self.conf_score}, index=self.index)

    def probs_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.probs, columns=pd.Index(self.categories, dtype=object), index=self.index)


# ---------------------------------------------------------------------------- classifier
class ConcertoClassifier:
    """Classification head (Dense over the categories + softmax) on a Concerto teacher.

    Build it with :func:`fine_tune` (pretrained teacher) or :meth:`end_to_end`
    (Concerto-E2E); then :meth:`predict`, :meth:`annotate`, :meth:`save`, :meth:`load`.
    """

    def __init__(self, model: Concerto, categories, label_key: str | None = None, modalities=None):
        categories = [str(c) for c in categories]
        if len(categories) < 2:
            raise ValueError(f"need at least 2 label categories to train a classifier (got {categories})")
        if len(set(categories)) != len(categories):
            raise ValueError("label categories must be unique")
        self.model = model
        self.categories = categories
        self.label_key = label_key
        self.modalities = list(modalities) if modalities else list(model.modalities)
        unknown = [m for m in self.modalities if m not in model.vocabularies]
        if unknown:
            raise ValueError(f"modalities {unknown} are not in the model (has {model.modalities})")
        self.head = keras.layers.Dense(len(categories), name=HEAD_NAME)  # logits; softmax in probabilities()
        self.head.build((None, model.config.embedding_dim))
        self.history: list[dict] = []
        self.params: dict = {}
        self.path = None

    # -- forward ---------------------------------------------------------------------
    def logits(self, batch, training=False):
        return self.head(teacher_output(self.model.network, batch, training, training))

    def probabilities(self, batch):
        """Class probabilities (B, C) at inference (softmax of the head)."""
        return tf.nn.softmax(self.logits(batch, training=False), axis=-1)

    def head_variables(self) -> dict:
        return {f"{HEAD_NAME}/{v.name}": v for v in self.head.weights}

    # -- training ------------------------------------------------------------------
    def _codes(self, adata, label_key):
        valid, raw = _labels(adata, label_key)
        lookup = {c: i for i, c in enumerate(self.categories)}
        codes = np.array([lookup.get(str(v), -1) if ok else -1 for v, ok in zip(raw, valid)], np.int32)
        foreign = valid & (codes < 0)
        if foreign.any():
            raise ValueError(f"labels {sorted(set(map(str, raw[foreign])))[:10]} are not among the classifier's "
                             f"categories {self.categories}")
        return codes, np.flatnonzero(valid)

    def fit(self, adata, label_key: str | None = None, epochs: int = 1, lr: float = 1e-3, batch_size: int = 32,
            freeze_teacher: bool = False, seed: int | None = None, target_adata=None,
            consistency_weight: float = 1.0, batch_key=MODEL_BATCH_KEY, target_batch_key=MODEL_BATCH_KEY,
            min_gene_overlap: float | None = None) -> "ConcertoClassifier":
        """Supervised fine-tuning (eq 12), plus the consistency loss (eq 13) on
        ``target_adata`` when given. See :func:`fine_tune`."""
        label_key = label_key or self.label_key
        for name, value, ok, what in (("epochs", epochs, epochs >= 1, ">= 1"), ("lr", lr, lr > 0, "> 0"),
                                      ("batch_size", batch_size, batch_size >= 1, ">= 1"),
                                      ("consistency_weight", consistency_weight,
                                       consistency_weight >= 0 and np.isfinite(consistency_weight), "a finite number >= 0")):
            if not ok:
                raise ValueError(f"{name} must be {what} (got {value})")
        codes, rows = self._codes(adata, label_key)
        model, mods = self.model, self.modalities
        seed = model.config.seed if seed is None else int(seed)
        n_before = model.n_sources
        inputs, _ = model.training_inputs(adata, batch_key, mods, min_gene_overlap, default_source="train")
        target = None
        if target_adata is not None:  # add_sources appends slots, so the codes of ``inputs`` stay valid
            target, _ = model.training_inputs(target_adata, target_batch_key, mods, min_gene_overlap,
                                              default_source="target")
        net = model.network  # after add_sources (which may rebuild it)
        # BatchNorm statistics of every slot used here: exact statistics of its cells. New
        # slots need them; with a trainable teacher all are re-estimated (they move anyway).
        used = [(inputs, rows)] + ([] if target is None else [(target, None)])
        for data, data_rows in used:
            slots = np.unique(data.source if data_rows is None else data.source[data_rows])
            engine.estimate_slot_statistics(net, data, data_rows, [s for s in slots if not freeze_teacher or s >= n_before], mods)
        if model.verbose:
            engine.log.info(f"fine-tuning a {len(self.categories)}-class head on {len(rows)} labelled cells "
                            f"({'frozen' if freeze_teacher else 'trainable'} teacher, {epochs} epoch(s)"
                            f"{'' if target is None else f', consistency on {target.n_cells} target cells, lambda={consistency_weight}'})")
        self.history += fit_supervised(net, self.head, inputs, codes, rows, mods, epochs=epochs, lr=lr,
                                       batch_size=batch_size, seed=seed, train_teacher=not freeze_teacher,
                                       target=target, consistency_weight=consistency_weight, verbose=model.verbose)
        if not freeze_teacher and model.config.precise_bn:
            for data, data_rows in used:
                slots = np.unique(data.source if data_rows is None else data.source[data_rows])
                engine.estimate_slot_statistics(net, data, data_rows, slots, mods)
        if not freeze_teacher or model.n_sources != n_before:
            engine.reset_fallback_statistics(net)
        self.label_key = label_key
        self.params = {"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
                       "freeze_teacher": bool(freeze_teacher), "seed": int(seed),
                       "consistency_weight": float(consistency_weight) if target is not None else None,
                       "domain_adaptation": target is not None, "n_labelled_cells": int(len(rows)),
                       "n_target_cells": 0 if target is None else int(target.n_cells)}
        return self

    @classmethod
    def end_to_end(cls, adata, label_key: str, batch_key=None, modalities=None, config: ConcertoConfig | None = None,
                   epochs: int = 1, lr: float = 1e-3, batch_size: int = 32, seed: int | None = None,
                   target_adata=None, consistency_weight: float = 1.0, target_batch_key=MODEL_BATCH_KEY,
                   verbose: bool = False, **hyperparameters) -> "ConcertoClassifier":
        """Concerto-E2E: the same teacher + head trained from scratch with the supervised
        loss only (no contrastive pretraining)."""
        if config is None:
            config = ConcertoConfig()
        if seed is not None:
            config = config.replace(seed=int(seed))
        model = Concerto(adata, batch_key=batch_key, modalities=modalities, config=config, verbose=verbose, **hyperparameters)
        model.drop_training_data()  # E2E trains through fit() only
        return fine_tune(model, adata, label_key, epochs=epochs, lr=lr, batch_size=batch_size, freeze_teacher=False,
                         seed=seed, target_adata=target_adata, consistency_weight=consistency_weight,
                         target_batch_key=target_batch_key, copy_model=False, _kind="end_to_end")

    # -- prediction ------------------------------------------------------------------
    def _prob_fn(self):
        head, mods = self.head, tuple(self.modalities)

        def make(net):
            def probabilities(batch):
                return tf.nn.softmax(head(teacher_output(net, batch, False, False)), axis=-1)

            return tf.function(probabilities, input_signature=[engine.batch_signature(mods)])

        return engine.compiled(self.model.network).custom(("probabilities", id(head)) + mods, make)

    def predict(self, adata, threshold: float | None = None, batch_key=MODEL_BATCH_KEY, unseen_source: str = "adapt",
                min_gene_overlap: float | None = None, batch_size: int = 512,
                unknown_label: str = UNKNOWN, scale_check: str = "warn") -> ClassifierPrediction:
        """Class probabilities, ``conf_score`` (max probability) and labels of every cell;
        with ``threshold`` in [0, 1], cells with ``conf_score < threshold`` get
        ``unknown_label`` (NOTA). ``batch_key``, ``unseen_source`` and ``scale_check`` as in
        ``Concerto.embed``."""
        threshold = _check_threshold(threshold)
        model = self.model
        query = engine.align_query(model, adata, self.modalities, batch_key, min_gene_overlap, unseen_source,
                                   scale_check, model.verbose)
        probs = np.zeros((query.inputs.n_cells, len(self.categories)), np.float32)
        fn = self._prob_fn()

        def run(rows):
            for part, batch in engine.ordered_batches(query.inputs, query.modalities, rows, batch_size):
                probs[part] = fn(batch).numpy()

        engine.with_unseen_sources(model, query, unseen_source, run)
        if not np.isfinite(probs).all():
            raise FloatingPointError("the classifier's probabilities are NaN/infinite; the model is broken")
        conf = probs.max(axis=1)
        cats = np.asarray(self.categories, dtype=object)
        if threshold is None:
            labels = cats[probs.argmax(axis=1)]
        else:
            labels = apply_rejection(probs, self.categories, threshold, unknown_label)
        return ClassifierPrediction(labels, conf, probs, list(self.categories), threshold,
                                    index=pd.Index(adata.obs_names))

    def annotate(self, adata, threshold: float | None = None, key_added: str = "predicted_label", copy: bool = False,
                 **kwargs):
        """:meth:`predict` and write ``obs[key_added]``, ``obs['conf_score']``,
        ``obsm['concerto_label_probs']`` and the provenance (categories, model path, seed,
        parameters) in ``uns[key_added]`` (and ``uns['concerto']``). Returns the AnnData
        written to when ``copy=True``, else the prediction (as ``Concerto.embed`` and
        ``transfer_labels``)."""
        pred = self.predict(adata, threshold=threshold, **kwargs)
        if copy:
            adata = adata.copy()
        cats = list(self.categories) + ([kwargs.get("unknown_label", UNKNOWN)] if threshold is not None else [])
        adata.obs[key_added] = pd.Categorical(pred.labels, categories=list(dict.fromkeys(cats)))
        adata.obs["conf_score"] = pred.conf_score.astype(np.float32)
        adata.obsm["concerto_label_probs"] = pred.probs
        info = self.model.provenance(
            key_added=key_added, label_categories=list(self.categories), label_key=self.label_key or "",
            model_path=str(self.path or self.model.path or ""),
            seed=int(self.params.get("seed", self.model.config.seed)),
            threshold=-1.0 if threshold is None else float(threshold),
            classifier_params=json.dumps(self.params, sort_keys=True))
        adata.uns[key_added] = info
        legacy = dict(adata.uns["concerto"]) if isinstance(adata.uns.get("concerto"), dict) else {}
        adata.uns["concerto"] = {**legacy, **info}
        return adata if copy else pred

    # -- persistence -----------------------------------------------------------------
    def save(self, path, overwrite: bool = False) -> Path:
        """Model directory = the fine-tuned Concerto model + head weights + manifest section,
        written and signed as one directory."""
        section = {"categories": list(self.categories), "label_key": self.label_key,
                   "modalities": list(self.modalities), "head_layer": HEAD_NAME, "head_weights_file": HEAD_WEIGHTS,
                   "params": self.params, "history": self.history}
        self.path = self.model.save(path, overwrite=overwrite, extra_manifest={"classifier": section},
                                    extra_files={HEAD_WEIGHTS: self.head_variables()})
        return self.path

    @classmethod
    def load(cls, path, verbose: bool = False) -> "ConcertoClassifier":
        path = Path(path)
        manifest = model_io.read_model_directory(path)
        info = manifest.get("classifier")
        if not isinstance(info, dict):
            raise ValueError(f"{path} is a Concerto model directory without a classifier; use Concerto.load")
        head_file = model_io.contained_file(path, info.get("head_weights_file", HEAD_WEIGHTS))
        if head_file.name not in manifest["files"]:
            raise ValueError(f"classifier head weights {head_file.name} are not covered by the manifest's digests")
        model = Concerto.load(path, verbose=verbose)
        self = cls(model, info["categories"], info.get("label_key"), info.get("modalities"))
        model_io.load_variables(head_file, self.head_variables(), f"classifier head {path}")
        self.params = info.get("params", {})
        self.history = info.get("history", [])
        self.path = path
        return self

    def __repr__(self) -> str:
        return f"ConcertoClassifier({len(self.categories)} categories, label_key={self.label_key!r}; {self.model!r})"


def fine_tune(model: Concerto, adata, label_key: str, epochs: int = 1, lr: float = 1e-3, batch_size: int = 32,
              freeze_teacher: bool = False, seed: int | None = None, target_adata=None,
              consistency_weight: float = 1.0, batch_key=MODEL_BATCH_KEY, target_batch_key=MODEL_BATCH_KEY,
              modalities=None, min_gene_overlap: float | None = None, copy_model: bool = True,
              _kind: str = "pretrained") -> ConcertoClassifier:
    """Supervised fine-tuning of a pretrained Concerto (paper: Adam lr 1e-3, 1 epoch, batch 32).

    ``adata.obs[label_key]`` holds categorical labels (cells with NaN labels are excluded
    with a warning). The whole teacher is fine-tuned with the head, or kept fixed with
    ``freeze_teacher=True`` (no teacher weight or BatchNorm statistic changes; the
    teacher's dropout still augments the head's training inputs).
    With ``target_adata`` (unlabelled cells of another dataset), the domain-adaptation
    consistency loss (eq 13) weighted by ``consistency_weight`` (lambda) is added.
    ``batch_key`` / ``target_batch_key`` as in ``Concerto.embed``.
    ``copy_model=True`` leaves ``model`` untouched (the classifier owns a copy).
    """
    if not isinstance(model, Concerto):
        raise TypeError(f"expected a Concerto model, got {type(model).__name__}")
    _labels(adata, label_key)
    values = adata.obs[label_key]
    values = values[~pd.isna(values)]
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.astype(str))
        categories = [str(c) for c in values.cat.categories if str(c) in present]
    else:
        categories = sorted(set(values.astype(str)))
    base = model.copy() if copy_model else model
    clf = ConcertoClassifier(base, categories, label_key, modalities)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*NaN label.*", category=UserWarning)  # already given above
        clf.fit(adata, label_key, epochs=epochs, lr=lr, batch_size=batch_size, freeze_teacher=freeze_teacher,
                seed=seed, target_adata=target_adata, consistency_weight=consistency_weight, batch_key=batch_key,
                target_batch_key=target_batch_key, min_gene_overlap=min_gene_overlap)
    clf.params["kind"] = _kind
    return clf


def rejection_curves(classifier: ConcertoClassifier, valid_adata, unseen_adata, bins: int = 20, **predict_kwargs):
    """Confidence-score histograms of cells of known types vs types absent from training
    (the paper's Fig 2d), via :func:`concerto_core.label_transfer.confidence_distributions`."""
    a = classifier.predict(valid_adata, **predict_kwargs).conf_score
    b = classifier.predict(unseen_adata, **predict_kwargs).conf_score
    return confidence_distributions(a, b, bins=bins)


#: Query-to-reference mapping mode (b); implemented as :meth:`Concerto.finetune_query`.
finetune_query = Concerto.finetune_query
