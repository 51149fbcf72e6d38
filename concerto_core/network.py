"""The teacher-student network of Concerto (Methods: teacher, student, multimodal integration).

A mini-batch is a dict of tensors:

* ``"<m>_idx"``, ``"<m>_val"``, ``"<m>_row"`` (nnz_m,): feature index (int32), value
  (float32) and cell position (int32, sorted) of every expressed feature of modality ``m``
  (flat, no padding); ``"<m>_len"`` (B,) int32 the number of features per cell;
* ``"source"`` (B,) int32: the source (batch) slot of each cell.

Teacher (eqs 1-6, 11): per modality gene-embedding attention pooling, summed over
modalities, source-aware BatchNorm, dropout, Dense + ReLU. With ``value_batchnorm='shared'``
(the authors' code) the attention pools every gene of the vocabulary, zeros included, after a
BatchNorm of the values (:meth:`ConcertoNetwork.teacher_inputs`).
Student (eq 10): per modality count vector -> source-aware BatchNorm -> dropout ->
Dense + ReLU, summed over modalities.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from . import kernels
from .config import ConcertoConfig
from .layers import (
    AttentionPooling,
    SharedValueBatchNorm,
    SourceAwareBatchNorm,
    fused_batchnorm_dropout,
    resolve_cpu_kernels,
)


class ConcertoNetwork(keras.Model):
    """Teacher and student for the modalities ``vocab_sizes`` (ordered dict name -> n features)."""

    def __init__(self, vocab_sizes: dict, n_sources: int, config: ConcertoConfig, **kwargs):
        super().__init__(name=kwargs.pop("name", "concerto"), **kwargs)
        self.modalities = list(vocab_sizes)
        self.vocab_sizes = dict(vocab_sizes)
        self.n_sources = int(n_sources)
        self.config = config
        d = config.embedding_dim
        bn = dict(momentum=config.bn_momentum, epsilon=config.bn_epsilon)  # BatchNorm stays float32
        mixed = {None: None, "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}[config.mixed_precision]
        kernel = resolve_cpu_kernels(config.cpu_kernels)  # 'numba' or 'tensorflow', once per network
        self.fused_student = kernel == "numba"
        seed = config.seed
        for i, (m, vocab) in enumerate(self.vocab_sizes.items()):
            setattr(self, f"teacher_{m}_attention", AttentionPooling(vocab, d, kernel=kernel, dtype=mixed,
                                                                             name=f"teacher_{m}_attention"))
            value_bn = {"shared": SharedValueBatchNorm, "per_gene": SourceAwareBatchNorm}.get(config.value_batchnorm)
            if value_bn is not None:
                setattr(self, f"teacher_{m}_value_bn", value_bn(n_sources, vocab, name=f"teacher_{m}_value_bn", **bn))
            setattr(self, f"student_{m}_bn", SourceAwareBatchNorm(n_sources, vocab, name=f"student_{m}_bn", **bn))
            setattr(self, f"student_{m}_dropout", keras.layers.Dropout(config.dropout, seed=seed + 1 + i, name=f"student_{m}_dropout"))
            for h in range(config.student_hidden_layers):
                setattr(self, f"student_{m}_hidden{h}", keras.layers.Dense(d, activation="relu", dtype=mixed,
                                                                                     name=f"student_{m}_hidden{h}"))
            setattr(self, f"student_{m}_dense", keras.layers.Dense(d, activation="relu", dtype=mixed,
                                                                          name=f"student_{m}_dense"))
        self.teacher_bn = SourceAwareBatchNorm(n_sources, d, name="teacher_bn", **bn)
        self.teacher_dropout = keras.layers.Dropout(config.dropout, seed=seed, name="teacher_dropout")
        self.teacher_dense = keras.layers.Dense(d, activation="relu", dtype=mixed, name="teacher_dense")

    # -- helpers -------------------------------------------------------------------------
    def layer_of(self, name: str):
        return getattr(self, name)

    def dense_values(self, batch, m):
        """Scatter a modality's padded (idx, val) into its (B, V) count vector."""
        coords = tf.stack([batch[f"{m}_row"], batch[f"{m}_idx"]], axis=-1)
        b = tf.shape(batch[f"{m}_len"])[0]
        return tf.scatter_nd(coords, batch[f"{m}_val"], shape=tf.stack([b, self.vocab_sizes[m]]))

    def teacher_inputs(self, batch, m, training=False):
        """``(idx, val, row, length)`` the teacher's attention pools for modality ``m``.

        ``value_batchnorm=None``: the batch's expressed entries, values as they are.
        ``'per_gene'``: the same entries, values per-gene BatchNormed.
        ``'shared'``: all V genes of every cell (B x V entries, ``length`` = V), values
        BatchNormed with one shared mean/variance, so unexpressed genes take part too.
        """
        idx, val, row, length = (batch[f"{m}_{k}"] for k in ("idx", "val", "row", "len"))
        mode = self.config.value_batchnorm
        if mode is None:
            return idx, val, row, length
        dense = self.layer_of(f"teacher_{m}_value_bn")(self.dense_values(batch, m), batch["source"], training=training)
        if mode == "per_gene":
            return idx, tf.gather_nd(dense, tf.stack([row, idx], axis=-1)), row, length
        n_cells, vocab = tf.shape(dense)[0], self.vocab_sizes[m]
        return (tf.tile(tf.range(vocab, dtype=tf.int32), [n_cells]), tf.reshape(dense, [-1]),
                tf.repeat(tf.range(n_cells, dtype=tf.int32), vocab), tf.fill([n_cells], tf.constant(vocab, tf.int32)))

    # -- forward passes --------------------------------------------------------------------
    def present(self, batch):
        """Modalities present in the batch (a missing modality contributes nothing to the sums)."""
        return [m for m in self.modalities if f"{m}_idx" in batch]

    def pooled(self, batch, training=False, return_attention=False):
        """Sum over modalities of attention-pooled vectors s (B, d) (input of the teacher BN)."""
        total, attention = None, {}
        for m in self.present(batch):
            layer = self.layer_of(f"teacher_{m}_attention")
            out = layer(*self.teacher_inputs(batch, m, training), return_attention=return_attention)
            if return_attention:
                out, attention[m] = out
                if self.config.value_batchnorm == "shared":
                    # Report the expressed entries only (the rest of each cell's weight sits on
                    # its unexpressed genes), aligned with the batch's idx/row like the other modes.
                    attention[m] = tf.gather(attention[m], batch[f"{m}_row"] * self.vocab_sizes[m] + batch[f"{m}_idx"])
            if self.config.tanh_after_pooling:
                out = tf.tanh(out)
            total = out if total is None else total + out
        return (total, attention) if return_attention else total

    def teacher(self, batch, training=False):
        """Teacher embedding Z_t (B, d), eqs 1-6 and 11."""
        h = self.teacher_bn(self.pooled(batch, training), batch["source"], training=training)
        h = self.teacher_dropout(h, training=training)
        return tf.cast(self.teacher_dense(h), tf.float32)

    def student(self, batch, training=False):
        """Student embedding Z_s (B, d), eq 10."""
        total = None
        ctx = tf.distribute.get_replica_context()
        fused = self.fused_student and training and (ctx is None or ctx.num_replicas_in_sync == 1)
        for m in self.present(batch):
            bn, dropout = self.layer_of(f"student_{m}_bn"), self.layer_of(f"student_{m}_dropout")
            if fused:
                # Keras creates no seed generator for rate 0; the mask is then all ones anyway.
                seed = dropout.seed_generator.next() if dropout.rate > 0 else tf.zeros([2], tf.int64)
                x = fused_batchnorm_dropout(bn, dropout.rate, seed, batch[f"{m}_idx"],
                                            batch[f"{m}_val"], batch[f"{m}_row"], batch[f"{m}_len"], batch["source"])
            else:
                x = dropout(bn(self.dense_values(batch, m), batch["source"], training=training), training=training)
            for h in range(self.config.student_hidden_layers):
                x = self.layer_of(f"student_{m}_hidden{h}")(x)
            z = tf.cast(self.layer_of(f"student_{m}_dense")(x), tf.float32)
            total = z if total is None else total + z
        return total

    def call(self, batch, training=False):
        return self.teacher(batch, training), self.student(batch, training)

    def source_aware_layers(self):
        """(name, layer, kind) of every source-aware BatchNorm in forward order.

        ``kind`` is ``"counts:<m>"`` when the layer's input is modality m's count vector
        (per-feature statistics), ``"values:<m>"`` when it is the same vector with one
        statistic over all its entries (:class:`SharedValueBatchNorm`), ``"pooled"`` for the
        teacher BN after attention pooling.
        """
        out = []
        for m in self.modalities:
            if self.config.value_batchnorm is not None:
                kind = "values" if self.config.value_batchnorm == "shared" else "counts"
                out.append((f"teacher_{m}_value_bn", self.layer_of(f"teacher_{m}_value_bn"), f"{kind}:{m}"))
            out.append((f"student_{m}_bn", self.layer_of(f"student_{m}_bn"), f"counts:{m}"))
        out.append(("teacher_bn", self.teacher_bn, "pooled"))
        return out


def build_network(vocab_sizes: dict, n_sources: int, config: ConcertoConfig, verbose: bool = True) -> ConcertoNetwork:
    """A seeded network with every weight created (by a two-cell dummy batch) and, when the
    fused CPU kernels are used, those kernels compiled or loaded from numba's cache."""
    keras.utils.set_random_seed(config.seed)
    net = ConcertoNetwork(vocab_sizes, n_sources, config)
    if net.fused_student:
        seconds = kernels.warm_up()
        if seconds > 2 and verbose:
            logging.getLogger("concerto_core").info(f"compiled the CPU kernels ({seconds:.0f}s, cached for later runs)")
    dummy = {"source": np.zeros(2, np.int32)}
    for m in vocab_sizes:
        dummy.update({f"{m}_idx": np.zeros(2, np.int32), f"{m}_val": np.zeros(2, np.float32),
                      f"{m}_row": np.arange(2, dtype=np.int32), f"{m}_len": np.ones(2, np.int32)})
    net(dummy, training=False)
    return net


def extended_values(values: dict, network: ConcertoNetwork, n_old: int) -> dict:
    """Weights of a network with ``n_old`` sources, fitted to ``network`` (more sources).

    Per-source statistics keep their rows; every new slot (and the fallback slot) starts
    from the old fallback statistics (the average of the old sources).
    """
    from .io import model_variables

    out = {}
    for path, var in model_variables(network).items():
        if path not in values:
            raise RuntimeError(f"variable {path!r} is missing from the network being extended")
        value = values[path]
        if tuple(value.shape) != tuple(var.shape):
            if value.ndim != 2 or value.shape[0] != n_old + 1 or var.shape[0] != network.n_sources + 1:
                raise RuntimeError(f"cannot extend variable {path!r} from {value.shape} to {tuple(var.shape)}")
            fallback = np.repeat(value[n_old:], network.n_sources - n_old + 1, axis=0)
            value = np.concatenate([value[:n_old], fallback], axis=0)
        out[path] = value
    return out
