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

Classifier directories are Concerto model directories (``Concerto.load`` reads the
fine-tuned teacher from them) plus ``classifier_head.weights.h5`` and a ``classifier``
section in ``manifest.json`` (categories, label key, sha256 of the head weights,
fine-tuning parameters). Weights are strict HDF5; no pickle.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from . import io as model_io
from .config import ConcertoConfig
from .label_transfer import UNKNOWN, _check_threshold, apply_rejection, confidence_distributions
from .model import Concerto

__all__ = ["ConcertoClassifier", "ClassifierPrediction", "fine_tune", "finetune_query", "rejection_curves",
           "HEAD_NAME", "HEAD_WEIGHTS"]

HEAD_NAME = "classifier_head"
HEAD_WEIGHTS = "classifier_head.weights.h5"
PAPER_FINETUNE = {"lr": 1e-3, "epochs": 1, "batch_size": 32}


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
    """An independent copy of a Concerto model (same weights, own network)."""
    new = Concerto.__new__(Concerto)
    new.__dict__.update({k: v for k, v in model.__dict__.items() if k not in ("network", "_fn_cache")})
    new.sources = list(model.sources)
    new.history = list(model.history)
    new.network = new._build_network()
    old = model_io.model_variables(model.network)
    for path, var in model_io.model_variables(new.network).items():
        var.assign(old[path].numpy())
    return new


def _teacher(net, batch, bn_training: bool, dropout: bool):
    """The teacher forward pass (as ``ConcertoNetwork.teacher``) with BatchNorm mode and
    dropout switched separately (a frozen teacher can still draw augmentation masks)."""
    h = net.teacher_bn(net.pooled(batch, bn_training), batch["source"], training=bn_training)
    h = net.teacher_dropout(h, training=dropout)
    return net.teacher_dense(h)


def _branch_variables(net, branch: str):
    """Trainable variables of the ``'teacher'`` or ``'student'`` branch."""
    return [v for v in net.trainable_variables if model_io.variable_path(v, net.name).startswith(branch)]


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
        self._fn = None

    # -- forward ---------------------------------------------------------------------
    def logits(self, batch, training=False):
        return self.head(_teacher(self.model.network, batch, training, training))

    def probabilities(self, batch):
        """Class probabilities (B, C) at inference (softmax of the head)."""
        return tf.nn.softmax(self.logits(batch, training=False), axis=-1)

    def head_variables(self) -> dict:
        return {f"{HEAD_NAME}/{v.name}": v for v in self.head.weights}

    # -- training ------------------------------------------------------------------
    def fit(self, adata, label_key: str | None = None, epochs: int = 1, lr: float = 1e-3, batch_size: int = 32,
            freeze_teacher: bool = False, seed: int | None = None, target_adata=None,
            consistency_weight: float = 1.0, batch_key="__model__", target_batch_key="__model__",
            min_gene_overlap: float | None = None) -> "ConcertoClassifier":
        """Supervised fine-tuning (eq 12), plus the consistency loss (eq 13) on
        ``target_adata`` when given. See :func:`fine_tune`."""
        label_key = label_key or self.label_key
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1 (got {epochs})")
        if lr <= 0:
            raise ValueError(f"lr must be > 0 (got {lr})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        if consistency_weight < 0 or not np.isfinite(consistency_weight):
            raise ValueError(f"consistency_weight must be a finite number >= 0 (got {consistency_weight})")
        valid, raw = _labels(adata, label_key)
        lookup = {c: i for i, c in enumerate(self.categories)}
        codes = np.array([lookup.get(str(v), -1) if ok else -1 for v, ok in zip(raw, valid)], np.int32)
        foreign = valid & (codes < 0)
        if foreign.any():
            raise ValueError(f"labels {sorted(set(map(str, raw[foreign])))[:10]} are not among the classifier's "
                             f"categories {self.categories}")
        rows = np.flatnonzero(valid)
        model, net, mods = self.model, self.model.network, self.modalities
        seed = model.config.seed if seed is None else int(seed)

        n_before = model.n_sources
        inputs, _ = model.training_inputs(adata, batch_key, mods, min_gene_overlap, default_source="train")
        target = None
        if target_adata is not None:
            # add_sources appends slots, so the codes of ``inputs`` stay valid
            target, _ = model.training_inputs(target_adata, target_batch_key, mods, min_gene_overlap,
                                              default_source="target")
        net = model.network  # after add_sources (which may rebuild it)
        # BatchNorm statistics of every slot used here: exact statistics of its cells. New
        # slots need them; with a trainable teacher all are re-estimated (they move anyway).
        for data, data_rows in ((inputs, rows), (target, None if target is None else np.arange(target.n_cells))):
            if data is None:
                continue
            for slot in np.unique(data.source[data_rows]):
                if not freeze_teacher or slot >= n_before:
                    model._estimate_statistics(data, data_rows[data.source[data_rows] == slot], int(slot), mods)

        variables = list(self.head.trainable_variables)
        if not freeze_teacher:
            variables += _branch_variables(net, "teacher") + (_branch_variables(net, "student") if target is not None else [])
        optimizer = keras.optimizers.Adam(learning_rate=lr)
        optimizer.build(variables)
        keras.utils.set_random_seed(seed)
        train_teacher = not freeze_teacher
        lam = tf.constant(float(consistency_weight), tf.float32)
        sig = model._signature(mods)
        head = self.head

        def supervised(batch, y):
            logits = head(_teacher(net, batch, train_teacher, True))
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

        @tf.function(input_signature=[sig, tf.TensorSpec([None], tf.int32)], reduce_retracing=True)
        def step(batch, y):
            with tf.GradientTape() as tape:
                loss = supervised(batch, y)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss, tf.constant(0.0)

        @tf.function(input_signature=[sig, tf.TensorSpec([None], tf.int32), sig], reduce_retracing=True)
        def step_da(batch, y, tbatch):
            # p_{theta~}(y|x): fixed copy of the parameters, no dropout, stored BN statistics.
            fixed = tf.stop_gradient(tf.nn.softmax(head(_teacher(net, tbatch, False, False)), axis=-1))
            with tf.GradientTape() as tape:
                sup = supervised(batch, y)
                aug = head(net.student(tbatch, training=True))  # augmented view: student embedding, dropout on
                cons = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=fixed, logits=aug))
                loss = sup + lam * cons
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss, cons

        n = len(rows)
        steps = max(1, math.ceil(n / batch_size))
        model._say(f"fine-tuning a {len(self.categories)}-class head on {n} labelled cells "
                   f"({'frozen' if freeze_teacher else 'trainable'} teacher, {steps} steps/epoch, {epochs} epoch(s)"
                   f"{'' if target is None else f', consistency on {target.n_cells} target cells, lambda={consistency_weight}'})")
        for epoch in range(epochs):
            rng = np.random.default_rng([seed, epoch])
            batches = np.array_split(rows[rng.permutation(n)], steps)
            t_order = None if target is None else rng.permutation(target.n_cells)
            t0, losses, cons_losses, pos = time.perf_counter(), [], [], 0
            for part in batches:
                batch = inputs.batch(part, mods)
                y = codes[part]
                if target is None:
                    loss, cons = step(batch, y)
                else:
                    t_rows = t_order[(pos + np.arange(len(part))) % target.n_cells]
                    pos += len(part)
                    loss, cons = step_da(batch, y, target.batch(np.sort(t_rows), mods))
                losses.append(float(loss))
                cons_losses.append(float(cons))
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - t0, 3)}
            if target is not None:
                record["consistency_loss"] = float(np.mean(cons_losses))
            self.history.append(record)
            model._say(f"fine-tune epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}")
        if train_teacher and model.config.precise_bn:
            for data, data_rows in ((inputs, rows), (target, None if target is None else np.arange(target.n_cells))):
                if data is None:
                    continue
                for slot in np.unique(data.source[data_rows]):
                    model._estimate_statistics(data, data_rows[data.source[data_rows] == slot], int(slot), mods)
        if train_teacher or model.n_sources != n_before:
            model._reset_fallback_statistics()
        self.label_key = label_key
        self.params = {"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
                       "freeze_teacher": bool(freeze_teacher), "seed": int(seed),
                       "consistency_weight": float(consistency_weight) if target is not None else None,
                       "domain_adaptation": target is not None, "n_labelled_cells": int(n),
                       "n_target_cells": 0 if target is None else int(target.n_cells)}
        self._fn = None
        return self

    @classmethod
    def end_to_end(cls, adata, label_key: str, batch_key=None, modalities=None, config: ConcertoConfig | None = None,
                   epochs: int = 1, lr: float = 1e-3, batch_size: int = 32, seed: int | None = None,
                   target_adata=None, consistency_weight: float = 1.0, target_batch_key="__model__",
                   verbose: bool = False, **hyperparameters) -> "ConcertoClassifier":
        """Concerto-E2E: the same teacher + head trained from scratch with the supervised
        loss only (no contrastive pretraining)."""
        if config is None:
            config = ConcertoConfig()
        if seed is not None:
            config = config.replace(seed=int(seed))
        model = Concerto(adata, batch_key=batch_key, modalities=modalities, config=config, verbose=verbose, **hyperparameters)
        model._train_inputs = None  # E2E trains through fit() only
        return fine_tune(model, adata, label_key, epochs=epochs, lr=lr, batch_size=batch_size, freeze_teacher=False,
                         seed=seed, target_adata=target_adata, consistency_weight=consistency_weight,
                         target_batch_key=target_batch_key, copy_model=False, _kind="end_to_end")

    # -- prediction ------------------------------------------------------------------
    def _prob_fn(self):
        if self._fn is None:
            self._fn = tf.function(self.probabilities, input_signature=[self.model._signature(self.modalities)])
        return self._fn

    def predict(self, adata, threshold: float | None = None, batch_key="__model__", unseen_source: str = "adapt",
                min_gene_overlap: float | None = None, batch_size: int = 512,
                unknown_label: str = UNKNOWN) -> ClassifierPrediction:
        """Class probabilities, ``conf_score`` (max probability) and labels of every cell;
        with ``threshold`` in [0, 1], cells with ``conf_score < threshold`` get
        ``unknown_label`` (NOTA). Sources unseen by the model use ``unseen_source``
        BatchNorm statistics (see ``Concerto.embed``)."""
        threshold = _check_threshold(threshold)
        model = self.model
        inputs, mods, unseen = model._query_inputs(adata, self.modalities, batch_key, min_gene_overlap, unseen_source)
        probs = np.zeros((inputs.n_cells, len(self.categories)), np.float32)
        fn = self._prob_fn()

        def run(rows):
            for start in range(0, len(rows), batch_size):
                part = rows[start : start + batch_size]
                probs[part] = fn(inputs.batch(part, mods)).numpy()

        model._with_unseen_sources(inputs, mods, unseen, unseen_source, run)
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
        ``obsm['concerto_label_probs']`` and ``uns['concerto']`` (categories, model path,
        seed, parameters). Returns the AnnData when ``copy=True``, else the prediction."""
        if copy:
            adata = adata.copy()
        pred = self.predict(adata, threshold=threshold, **kwargs)
        cats = list(self.categories) + ([kwargs.get("unknown_label", UNKNOWN)] if threshold is not None else [])
        adata.obs[key_added] = pd.Categorical(pred.labels, categories=list(dict.fromkeys(cats)))
        adata.obs["conf_score"] = pred.conf_score.astype(np.float32)
        adata.obsm["concerto_label_probs"] = pred.probs
        info = dict(adata.uns["concerto"]) if isinstance(adata.uns.get("concerto"), dict) else {}
        info.update({
            "label_categories": list(self.categories),
            "label_key": self.label_key or "",
            "model_path": str(self.path or getattr(self.model, "path", "") or ""),
            "seed": int(self.params.get("seed", self.model.config.seed)),
            "threshold": -1.0 if threshold is None else float(threshold),
            "classifier_params": json.dumps(self.params, sort_keys=True),
            "params": json.dumps(self.model.config.to_dict(), sort_keys=True),
        })
        adata.uns["concerto"] = info
        return adata if copy else pred

    # -- persistence -----------------------------------------------------------------
    def save(self, path, overwrite: bool = False) -> Path:
        """Model directory = the fine-tuned Concerto model + head weights + manifest section."""
        path = Path(path)
        if (path / model_io.MANIFEST).exists() and not overwrite:
            raise FileExistsError(f"{path} already holds a model; pass overwrite=True to replace it")
        path.mkdir(parents=True, exist_ok=True)
        model_io.save_variables(path / HEAD_WEIGHTS, self.head_variables())
        self.model.save(path, overwrite=True)
        manifest = model_io.read_manifest(path)
        manifest["classifier"] = {
            "categories": list(self.categories),
            "label_key": self.label_key,
            "modalities": list(self.modalities),
            "head_layer": HEAD_NAME,
            "head_weights_file": HEAD_WEIGHTS,
            "head_weights_sha256": model_io.sha256_file(path / HEAD_WEIGHTS),
            "params": self.params,
            "history": self.history,
        }
        model_io.write_manifest(path, manifest)
        self.path = path
        return path

    @classmethod
    def load(cls, path, verbose: bool = False) -> "ConcertoClassifier":
        path = Path(path)
        manifest = model_io.read_manifest(path)
        info = manifest.get("classifier")
        if not isinstance(info, dict):
            raise ValueError(f"{path} is a Concerto model directory without a classifier; use Concerto.load")
        head_file = path / info.get("head_weights_file", HEAD_WEIGHTS)
        if not head_file.exists():
            raise FileNotFoundError(f"classifier head weights {head_file} listed in the manifest are missing")
        if model_io.sha256_file(head_file) != info.get("head_weights_sha256"):
            raise ValueError(f"{head_file} does not match the sha256 in the manifest (file changed or corrupt)")
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
              consistency_weight: float = 1.0, batch_key="__model__", target_batch_key="__model__",
              modalities=None, min_gene_overlap: float | None = None, copy_model: bool = True,
              _kind: str = "pretrained") -> ConcertoClassifier:
    """Supervised fine-tuning of a pretrained Concerto (paper: Adam lr 1e-3, 1 epoch, batch 32).

    ``adata.obs[label_key]`` holds categorical labels (cells with NaN labels are excluded
    with a warning). The whole teacher is fine-tuned with the head, or kept fixed with
    ``freeze_teacher=True`` (no teacher weight or BatchNorm statistic changes; the
    teacher's dropout still augments the head's training inputs).
    With ``target_adata`` (unlabelled cells of another dataset), the domain-adaptation
    consistency loss (eq 13) weighted by ``consistency_weight`` (lambda) is added.
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
    base = clone_model(model) if copy_model else model
    clf = ConcertoClassifier(base, categories, label_key, modalities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the NaN-label warning was already given above
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


# ---------------------------------------------------------------------------- query fine-tuning
def _directory_digests(path: Path) -> dict:
    return {str(p.relative_to(path)): model_io.sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def finetune_query(reference_model_dir, query_adata, output_dir, batch_key="__model__", epochs: int = 1,
                   lr: float | None = None, lr_end: float | None = None, batch_size: int | None = None,
                   seed: int | None = None, min_gene_overlap: float | None = None, overwrite: bool = False,
                   verbose: bool = False) -> Concerto:
    """Query-to-reference mapping mode (b): unsupervised contrastive fine-tuning on the query.

    Loads the reference model (read only), gives query sources unseen in the reference
    their own BatchNorm slots (``Concerto.add_sources``: reference weights and statistics
    copied, new slots initialised from the fallback statistics, then set to the query
    cells' exact statistics after training), continues the contrastive training on the
    query cells from the reference weights, and saves a new model directory
    ``output_dir`` whose manifest records the reference (path and weights sha256).
    ``batch_key`` defaults to the reference's key; ``None`` = one query source.
    ``lr`` defaults to the reference's final learning rate (``config.lr_end``), constant
    unless ``lr_end`` is given. A reference trained without a ``batch_key`` has one
    BatchNorm slot: fine-tuning then replaces its statistics with the query's.
    Returns the fine-tuned model. Mode (a) is ``Concerto.load(reference).embed(query)``.
    """
    ref = Path(reference_model_dir)
    out = Path(output_dir)
    if out.resolve() == ref.resolve():
        raise ValueError("output_dir must differ from reference_model_dir (the reference is never modified)")
    if (out / model_io.MANIFEST).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a model; pass overwrite=True to replace it")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1 (got {epochs})")
    manifest = model_io.read_manifest(ref)
    model = Concerto.load(ref, verbose=verbose)
    added = model.set_training_data(query_adata, batch_key, min_gene_overlap)
    if model.batch_key is None:
        warnings.warn("the reference has no batch_key (one BatchNorm slot): query fine-tuning replaces its "
                      "statistics with the query's", UserWarning, stacklevel=2)
    lr = model.config.lr_end if lr is None else float(lr)
    lr_end = lr if lr_end is None else float(lr_end)
    model.train(epochs=epochs, lr=lr, lr_end=lr_end, batch_size=batch_size, seed=seed)
    model.save(out, overwrite=overwrite)
    final = model_io.read_manifest(out)
    final["query_finetune"] = {
        "reference_path": str(ref.resolve()),
        "reference_weights_sha256": manifest.get("weights_sha256"),
        "reference_sources": [s for s in model.sources if s not in added],
        "added_sources": added,
        "n_query_cells": int(query_adata.n_obs),
        "epochs": int(epochs), "lr": lr, "lr_end": lr_end,
    }
    model_io.write_manifest(out, final)
    return model
