"""Network layers of Concerto: gene-embedding attention pooling and source-aware BatchNorm.

All tensors are float32 on the default device; shapes are given as (B, L, d) with B cells
in a mini-batch, L padded expressed-gene slots and d the embedding size.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from . import kernels

CPU_KERNELS = ("auto", "numba", "tensorflow")


def resolve_cpu_kernels(kernel: str) -> str:
    """``'numba'`` or ``'tensorflow'`` for a requested ``cpu_kernels`` setting.

    ``'auto'`` takes the fused numba kernels on a CPU-only machine and TensorFlow's graph
    where a GPU is visible (the numba kernels run on the host only).
    """
    if kernel not in CPU_KERNELS:
        raise ValueError(f"cpu_kernels={kernel!r}; expected one of {CPU_KERNELS}")
    if kernel == "numba" and not kernels.HAVE_NUMBA:
        raise ImportError("cpu_kernels='numba' needs the numba package: pip install numba")
    if kernel == "auto":
        return "numba" if kernels.HAVE_NUMBA and not tf.config.list_logical_devices("GPU") else "tensorflow"
    return kernel


def _row_splits(length):
    """(B + 1,) start of each cell's entries in a flat batch, from the per-cell lengths."""
    return tf.concat([tf.zeros([1], length.dtype), tf.cumsum(length)], axis=0)


def fused_attention_pooling(emb, projected, bias, context, idx, val, row, length):
    """Pooled (B, d) and attention (nnz,) of a flat batch via the numba kernels.

    Same function and gradients as the TensorFlow graph of :class:`AttentionPooling`
    (factorised path), including the gradient with respect to the values.
    """
    d = emb.shape[-1]
    splits = _row_splits(length)

    @tf.custom_gradient
    def pool(emb, projected, bias, context, val):
        pooled, alpha = tf.numpy_function(
            kernels.attention_forward, [projected, emb, bias, context, idx, val, splits],
            [tf.float32, tf.float32], stateful=False, name="fused_attention_forward")
        pooled.set_shape([length.shape[0], d])
        alpha.set_shape(idx.shape)

        def grad(dpooled, dalpha):
            dpooled = tf.zeros_like(pooled) if dpooled is None else dpooled
            dalpha = tf.zeros_like(alpha) if dalpha is None else dalpha
            grads = tf.numpy_function(
                kernels.attention_backward,
                [projected, emb, bias, context, idx, val, row, splits, alpha, dpooled, dalpha],
                [tf.float32] * 5, stateful=False, name="fused_attention_backward")
            for g, like in zip(grads, (emb, projected, bias, context, val)):
                g.set_shape(like.shape)
            return grads

        return (pooled, alpha), grad

    return pool(emb, projected, bias, context, val)


@tf.custom_gradient
def gather_rows(table, idx):
    """``tf.gather(table, idx)`` whose gradient scatters with ``tensor_scatter_nd_add``.

    TensorFlow's default gradient of a gather from a computed tensor densifies through
    ``unsorted_segment_sum``, which is single-threaded on CPU and dominated the teacher's
    backward pass (~2.3x slower than this scatter on 2 cores for 256k rows x 128).
    """
    out = tf.gather(table, idx)

    def grad(upstream):
        upstream = tf.cast(upstream, table.dtype)
        return tf.tensor_scatter_nd_add(tf.zeros_like(table), idx[..., None], upstream), None

    return out, grad


class AttentionPooling(keras.layers.Layer):
    """Teacher branch of one modality, Methods eqs (1)-(5).

    ``e_i = Embedding(g_i)``; ``h_i = v_i * e_i``; ``u_i = tanh(W h_i + b)``;
    ``alpha = softmax_i(u_i . u_w)`` over the cell's expressed genes only (padding masked);
    ``s = sum_i alpha_i h_i``.

    The factorised path (default) uses ``W (v e) = v (W e)``: the embedding table is
    projected once per call (V x d x d) and projected rows are gathered, instead of a
    d x d product per expressed gene (B x L x d x d). Both paths compute the same
    function with the same weights (tested).

    ``kernel``: ``'numba'`` runs the factorised float32 path as fused CPU kernels
    (:mod:`concerto_core.kernels`, ~7x faster on CPU), ``'tensorflow'`` as a TensorFlow
    graph (GPUs, float64, the naive path), ``'auto'`` picks numba on CPU-only machines.
    """

    def __init__(self, vocab_size: int, dim: int, factorized: bool = True, kernel: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.factorized = factorized
        self.kernel = resolve_cpu_kernels(kernel)
        self.embedding = self.add_weight(
            name="gene_embedding",
            shape=(self.vocab_size, self.dim),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
        )
        self.attention_kernel = self.add_weight(
            name="attention_kernel", shape=(self.dim, self.dim), initializer="glorot_uniform"
        )
        self.attention_bias = self.add_weight(name="attention_bias", shape=(self.dim,), initializer="zeros")
        self.context = self.add_weight(name="context_vector", shape=(self.dim,), initializer="glorot_uniform")

    def call(self, idx, val, row, length, return_attention: bool = False):
        """Pool one modality of a flat batch.

        ``idx``/``val``/``row``: (nnz,) feature index, value and cell position of every
        expressed feature (``row`` sorted); ``length``: (B,) features per cell.
        Returns pooled ``s`` (B, d) and, optionally, attention ``alpha`` (nnz,) summing to
        1 within each cell. The softmax runs over each cell's own features only.
        """
        n_cells = tf.shape(length)[0]
        if self.factorized and self.kernel == "numba" and self.compute_dtype == "float32":
            emb = tf.convert_to_tensor(self.embedding)
            projected = tf.matmul(emb, self.attention_kernel)
            pooled, alpha = fused_attention_pooling(emb, projected, tf.convert_to_tensor(self.attention_bias),
                                                    tf.convert_to_tensor(self.context), idx, val, row, length)
            return (pooled, alpha) if return_attention else pooled
        # Under a mixed-precision policy the (nnz, d) work runs in the compute dtype (float16 /
        # bfloat16) while the softmax and the pooled output stay float32.
        dtype = self.compute_dtype
        exact = tf.float64 if dtype == "float64" else tf.float32
        table = tf.cast(self.embedding, dtype)
        emb = gather_rows(table, idx)  # (nnz, d)
        v = tf.cast(val, dtype)[:, None]
        if self.factorized:
            projected = tf.matmul(table, tf.cast(self.attention_kernel, dtype))  # (V, d), once per call
            pre = v * gather_rows(projected, idx) + tf.cast(self.attention_bias, dtype)
        else:
            pre = tf.matmul(v * emb, tf.cast(self.attention_kernel, dtype)) + tf.cast(self.attention_bias, dtype)
        logits = tf.cast(tf.linalg.matvec(tf.tanh(pre), tf.cast(self.context, dtype)), exact)  # (nnz,)
        # Softmax per cell; subtracting the cell's max is exact (shift invariance) and stable.
        top = tf.stop_gradient(tf.math.unsorted_segment_max(logits, row, n_cells))
        weights = tf.exp(logits - tf.gather(top, row))
        alpha = weights / tf.gather(tf.math.unsorted_segment_sum(weights, row, n_cells), row)
        pooled = tf.math.segment_sum(tf.cast(alpha * tf.cast(val, exact), dtype)[:, None] * emb, row)  # rows sorted
        # segment_sum stops at the last cell with a feature; cells after it pool to zero.
        pooled = tf.cast(tf.pad(pooled, [[0, n_cells - tf.shape(pooled)[0]], [0, 0]]), exact)
        if return_attention:
            return pooled, alpha
        return pooled


class SourceAwareBatchNorm(keras.layers.Layer):
    """BatchNorm whose statistics are computed per data source (Methods, "Source-aware Batch
    Normalization"): within a mini-batch, each source's cells are normalised with that
    source's mean and variance, and each source keeps its own running statistics. The
    affine scale/offset is shared across sources.

    At inference a cell uses its source's stored statistics. Row ``n_sources`` is a
    fallback slot for sources never seen in training: it holds the average of the
    training sources' statistics, and :class:`concerto_core.Concerto` overwrites it with
    statistics computed over the unseen source's own cells when ``unseen_source='adapt'``
    (the default) — it warns in both cases. Without a batch key there is one source and
    this is an ordinary BatchNorm.

    Cells whose one-hot source row is all zero (padding cells) are ignored by the
    statistics.
    """

    def __init__(self, n_sources: int, n_features: int, momentum: float = 0.9, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.n_sources = int(n_sources)
        self.n_features = int(n_features)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        slots = self.n_sources + 1  # + fallback slot for unseen sources
        self.gamma = self.add_weight(name="gamma", shape=(self.n_features,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(self.n_features,), initializer="zeros")
        # Statistics are synchronised across replicas, so every replica holds the same values.
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(slots, self.n_features), initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(slots, self.n_features), initializer="ones", trainable=False,
            aggregation="only_first_replica",
        )

    def batch_moments(self, x, onehot):
        """Per-source mean and variance (S, F) of ``x`` (B, F) and cell counts (S,).

        Under a tf.distribute strategy with several replicas the sums are all-reduced, so
        the statistics are those of each source's cells in the *global* mini-batch (the same
        as on one device with the same global batch).
        """
        ctx = tf.distribute.get_replica_context()
        sync = ctx is not None and ctx.num_replicas_in_sync > 1
        counts = tf.reduce_sum(onehot, axis=0)
        sums = tf.matmul(onehot, x, transpose_a=True)
        if sync:
            counts, sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [counts, sums])
        denom = tf.maximum(counts, 1.0)[:, None]
        mean = sums / denom
        centred = x - tf.matmul(onehot, mean)
        squares = tf.matmul(onehot, tf.square(centred), transpose_a=True)
        if sync:
            squares = ctx.all_reduce(tf.distribute.ReduceOp.SUM, squares)
        return mean, squares / denom, counts

    def call(self, x, source, training=False):
        """``x``: (B, F) float; ``source``: (B,) int in [0, n_sources] (n_sources = fallback)."""
        onehot = tf.one_hot(source, self.n_sources + 1, dtype=x.dtype)
        if training:
            mean, var, counts = self.batch_moments(x, onehot)
            self.update_moving_statistics(mean, var, counts)
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            var = tf.convert_to_tensor(self.moving_variance)
        # Per-cell statistics by one-hot lookup: (B, S) @ (S, F).
        inv = tf.matmul(onehot, tf.math.rsqrt(var + self.epsilon))
        centre = tf.matmul(onehot, mean)
        return (x - centre) * inv * self.gamma + self.beta

    def update_moving_statistics(self, mean, var, counts) -> None:
        """Exponential moving average of each source present in the batch (counts > 0)."""
        present = (counts > 0)[:, None]
        m = self.momentum
        self.moving_mean.assign(tf.where(present, m * self.moving_mean + (1 - m) * mean, self.moving_mean))
        self.moving_variance.assign(tf.where(present, m * self.moving_variance + (1 - m) * var, self.moving_variance))

    def set_statistics(self, slot: int, mean, variance) -> None:
        """Overwrite the stored statistics of one source slot (used for precise/adapted BN)."""
        self.moving_mean.assign(tf.tensor_scatter_nd_update(self.moving_mean, [[slot]], [mean]))
        self.moving_variance.assign(tf.tensor_scatter_nd_update(self.moving_variance, [[slot]], [variance]))


class SharedValueBatchNorm(SourceAwareBatchNorm):
    """Source-aware BatchNorm of a (B, V) value matrix with *one* mean and variance per source,
    taken over all of the source's cell x gene values (zeros included), and a scalar
    scale/offset: ``(x - mean_s) / sqrt(var_s + eps) * gamma + beta``.

    This is the input BatchNorm of the authors' released teacher (a Keras BatchNormalization
    on the (B, V, 1) value tensor: one channel, so the statistics pool every cell and gene).
    Statistics have shape (n_sources + 1, 1); ``values_per_cell`` (V) turns cell counts into
    value counts where the statistics are computed outside the layer (precise BN).
    """

    def __init__(self, n_sources: int, values_per_cell: int, momentum: float = 0.9, epsilon: float = 1e-3, **kwargs):
        super().__init__(n_sources, 1, momentum=momentum, epsilon=epsilon, **kwargs)
        self.values_per_cell = int(values_per_cell)

    def batch_moments(self, x, onehot):
        """Per-source mean and variance (S, 1) over every entry of ``x`` (B, V), cell counts (S,)."""
        ctx = tf.distribute.get_replica_context()
        sync = ctx is not None and ctx.num_replicas_in_sync > 1
        counts = tf.reduce_sum(onehot, axis=0)
        sums = tf.matmul(onehot, tf.reduce_sum(x, axis=1, keepdims=True), transpose_a=True)
        if sync:
            counts, sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [counts, sums])
        denom = tf.maximum(counts * tf.cast(tf.shape(x)[1], x.dtype), 1.0)[:, None]
        mean = sums / denom
        centred = x - tf.matmul(onehot, mean)  # (B, V) - (B, 1)
        squares = tf.matmul(onehot, tf.reduce_sum(tf.square(centred), axis=1, keepdims=True), transpose_a=True)
        if sync:
            squares = ctx.all_reduce(tf.distribute.ReduceOp.SUM, squares)
        return mean, squares / denom, counts


def fused_batchnorm_dropout(bn: SourceAwareBatchNorm, rate: float, seed, idx, val, row, length, source):
    """Training-mode ``dropout(bn(x))`` of a flat batch's count vectors via the numba kernels.

    Updates ``bn``'s moving statistics like :meth:`SourceAwareBatchNorm.call` and returns the
    dense (B, V) output; gradients flow to ``bn.gamma`` and ``bn.beta`` (the input is data).
    ``seed`` (int tensor) seeds this step's dropout mask. One replica only: per-source
    moments are not all-reduced here.
    """
    n_slots, n_features = bn.n_sources + 1, bn.n_features
    mean, var, counts = tf.numpy_function(
        kernels.source_moments, [idx, val, row, source, n_slots, n_features], [tf.float32] * 3,
        stateful=False, name="fused_source_moments")
    mean.set_shape([n_slots, n_features])
    var.set_shape([n_slots, n_features])
    counts.set_shape([n_slots])
    bn.update_moving_statistics(mean, var, counts)
    splits = _row_splits(length)
    keep = 1.0 - float(rate)

    @tf.custom_gradient
    def block(gamma, beta):
        out, mask = tf.numpy_function(
            kernels.bn_dropout_forward, [idx, val, splits, source, mean, var, gamma, beta, bn.epsilon, keep, seed],
            [tf.float32, tf.uint8], stateful=False, name="fused_bn_dropout_forward")
        out.set_shape([length.shape[0], n_features])

        def grad(dout):
            dgamma, dbeta = tf.numpy_function(
                kernels.bn_dropout_backward, [dout, mask, idx, val, row, source, mean, var, bn.epsilon, keep],
                [tf.float32, tf.float32], stateful=False, name="fused_bn_dropout_backward")
            dgamma.set_shape([n_features])
            dbeta.set_shape([n_features])
            return dgamma, dbeta

        return out, grad

    return block(tf.convert_to_tensor(bn.gamma), tf.convert_to_tensor(bn.beta))
