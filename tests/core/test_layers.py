"""Network pieces: attention pooling (masking, factorised == naive), NT-Xent, source-aware BN."""

import numpy as np
import pytest
import tensorflow as tf

from concerto_core import kernels
from concerto_core.encoding import flat_batch
from concerto_core.layers import AttentionPooling, SourceAwareBatchNorm
from concerto_core.losses import nt_xent_loss

KERNELS = ["tensorflow", pytest.param("numba", marks=pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba missing"))]


def _random_cells(rng, n=6, vocab=40, max_len=12):
    """Flat (idx, val, row, length) of n cells with 1..max_len distinct expressed genes each."""
    length = rng.integers(1, max_len + 1, n).astype(np.int32)
    idx = np.concatenate([rng.choice(vocab, L, replace=False) for L in length]).astype(np.int32)
    val = rng.gamma(1.0, 1.0, int(length.sum())).astype(np.float32)
    row = np.repeat(np.arange(n, dtype=np.int32), length)
    return idx, val, row, length


def _pair(dtype, vocab=40, dim=16):
    fact = AttentionPooling(vocab, dim, factorized=True, dtype=dtype, name=f"fact_{dtype}")
    naive = AttentionPooling(vocab, dim, factorized=False, dtype=dtype, name=f"naive_{dtype}")
    for a, b in zip(fact.weights, naive.weights):
        b.assign(a)
    return fact, naive


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-5), ("float32", 1e-4)])
def test_factorised_attention_equals_naive(dtype, tol):
    rng = np.random.default_rng(0)
    fact, naive = _pair(dtype)
    idx, val, row, length = _random_cells(rng)
    val = val.astype(dtype)
    s_f, a_f = fact(idx, val, row, length, return_attention=True)
    s_n, a_n = naive(idx, val, row, length, return_attention=True)
    rel = np.linalg.norm(s_f.numpy() - s_n.numpy()) / np.linalg.norm(s_n.numpy())
    assert rel <= tol
    np.testing.assert_allclose(a_f.numpy(), a_n.numpy(), rtol=tol, atol=1e-7)


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_is_per_cell_and_sums_to_one(kernel):
    rng = np.random.default_rng(1)
    layer = AttentionPooling(40, 8, kernel=kernel, name=f"att_mask_{kernel}")
    idx, val, row, length = _random_cells(rng, max_len=10)
    pooled, alpha = layer(idx, val, row, length, return_attention=True)
    assert pooled.shape == (6, 8) and alpha.shape == (int(length.sum()),)
    sums = np.bincount(row, weights=alpha.numpy(), minlength=6)
    np.testing.assert_allclose(sums, 1, atol=1e-5)
    # A cell's output depends on its own genes only: pooling cells one at a time agrees.
    for i in range(6):
        sel = row == i
        alone = layer(idx[sel], val[sel], np.zeros(sel.sum(), np.int32), length[i : i + 1])
        np.testing.assert_allclose(alone.numpy()[0], pooled.numpy()[i], rtol=1e-5, atol=1e-6)
    # Cells without any expressed gene (also trailing ones) pool to zero, without NaN.
    row2 = np.where(row >= 3, row + 1, row).astype(np.int32)
    length2 = np.insert(length, 3, 0).astype(np.int32)
    length2 = np.append(length2, 0).astype(np.int32)
    out = layer(idx, val, row2, length2).numpy()
    assert out.shape == (8, 8) and np.isfinite(out).all()
    np.testing.assert_array_equal(out[3], 0)
    np.testing.assert_array_equal(out[7], 0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_is_stable_for_large_values(kernel):
    layer = AttentionPooling(5, 4, kernel=kernel, name=f"att_big_{kernel}")
    idx = np.array([0, 1, 2], np.int32)
    val = np.array([1e4, 3e4, 1e3], np.float32)
    pooled, alpha = layer(idx, val, np.zeros(3, np.int32), np.array([3], np.int32), return_attention=True)
    assert np.isfinite(pooled.numpy()).all() and np.isfinite(alpha.numpy()).all()


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba missing")
def test_fused_kernels_match_tensorflow_values_and_gradients():
    """The numba kernels compute the same pooled vectors, attention weights and gradients
    (embedding, attention kernel/bias, context vector and the input values) as the graph."""
    rng = np.random.default_rng(4)
    idx, val, row, length = _random_cells(rng, n=9, vocab=60, max_len=25)
    # an empty cell in the middle and one at the end
    row = np.where(row >= 4, row + 1, row).astype(np.int32)
    length = np.append(np.insert(length, 4, 0), 0).astype(np.int32)
    fused = AttentionPooling(60, 16, kernel="numba", name="fused")
    graph = AttentionPooling(60, 16, kernel="tensorflow", name="graph")
    for a, b in zip(fused.weights, graph.weights):
        a.assign(b + rng.normal(0, 0.1, b.shape).astype(np.float32))  # non-zero bias too
        b.assign(a)
    upstream_pooled = rng.normal(size=(len(length), 16)).astype(np.float32)
    upstream_alpha = rng.normal(size=len(idx)).astype(np.float32)
    results = []
    for layer in (fused, graph):
        v = tf.Variable(val)
        with tf.GradientTape() as tape:
            pooled, alpha = layer(idx, v, row, length, return_attention=True)
            loss = tf.reduce_sum(pooled * upstream_pooled) + tf.reduce_sum(alpha * upstream_alpha)
        grads = tape.gradient(loss, layer.trainable_weights + [v])
        results.append([pooled, alpha] + grads)
    names = ["pooled", "alpha"] + [w.name for w in graph.trainable_weights] + ["values"]
    for name, a, b in zip(names, *results):
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        assert np.isfinite(a).all(), name
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-3), name
    np.testing.assert_array_equal(results[0][0].numpy()[[4, -1]], 0)


def test_unknown_cpu_kernels_setting_is_rejected():
    with pytest.raises(ValueError, match="cpu_kernels"):
        AttentionPooling(5, 4, kernel="cuda")


def test_flat_batch_round_trip():
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    X = sp.random(20, 50, density=0.2, format="csr", random_state=3, dtype=np.float32)
    rows = rng.permutation(20)[:7]
    idx, val, row, length = flat_batch(X, rows)
    assert idx.shape == val.shape == row.shape == (X[rows].nnz,) and (np.diff(row) >= 0).all()
    np.testing.assert_array_equal(length, np.diff(X[rows].indptr))
    dense = np.zeros((7, 50), np.float32)
    dense[row, idx] = val
    np.testing.assert_array_equal(dense, X[rows].toarray())


def _nt_xent_numpy(zt, zs, tau):
    z = np.concatenate([zt, zs])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(zt)
    sim = z @ z.T / tau
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        denom = sum(np.exp(sim[i, k]) for k in range(2 * n) if k != i)
        total += -np.log(np.exp(sim[i, j]) / denom)
    return total / (2 * n)


def test_nt_xent_matches_direct_computation():
    rng = np.random.default_rng(4)
    zt, zs = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    expected = _nt_xent_numpy(zt, zs, 0.1)
    got = float(nt_xent_loss(tf.constant(zt), tf.constant(zs), 0.1))
    assert np.isclose(got, expected, rtol=1e-6)
    # Perfectly aligned, well-separated views give a lower loss than random ones.
    eye = np.eye(7, 5 * 2)[:, :5] * 10 + rng.normal(scale=0.01, size=(7, 5))
    assert float(nt_xent_loss(tf.constant(eye), tf.constant(eye), 0.1)) < got


def test_source_aware_batchnorm_uses_per_source_statistics():
    rng = np.random.default_rng(5)
    bn = SourceAwareBatchNorm(2, 3, momentum=0.0, epsilon=1e-6, name="sabn")
    x0 = rng.normal(5.0, 2.0, (50, 3))
    x1 = rng.normal(-3.0, 0.5, (30, 3))
    x = np.concatenate([x0, x1]).astype(np.float32)
    src = np.array([0] * 50 + [1] * 30, np.int32)
    y = bn(x, src, training=True).numpy()
    # Each source is standardised by its own moments, not the pooled ones.
    for s, part in ((0, y[:50]), (1, y[50:])):
        np.testing.assert_allclose(part.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(part.std(0), 1, atol=1e-3)
    # With momentum 0 the running statistics are exactly the last batch's per-source moments.
    np.testing.assert_allclose(bn.moving_mean.numpy()[0], x0.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy()[1], x1.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy()[1], x1.var(0), rtol=1e-4)
    # A source absent from a batch keeps its running statistics.
    before = bn.moving_mean.numpy()[1].copy()
    bn(x0.astype(np.float32), np.zeros(50, np.int32), training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy()[1], before)
    # Inference uses the stored per-source statistics.
    y_inf = bn(x, src, training=False).numpy()
    np.testing.assert_allclose(y_inf[50:], y[50:], atol=1e-3)


def test_gather_rows_gradient_matches_tf_gather():
    from concerto_core.layers import gather_rows

    rng = np.random.default_rng(6)
    table = tf.constant(rng.normal(size=(30, 4)))
    idx = tf.constant(rng.integers(0, 30, (5, 7)).astype(np.int32))
    weights = tf.constant(rng.normal(size=(5, 7, 4)))
    grads = []
    for gather in (tf.gather, gather_rows):
        with tf.GradientTape() as tape:
            tape.watch(table)
            loss = tf.reduce_sum(gather(table, idx) * weights)
        grads.append(tf.convert_to_tensor(tape.gradient(loss, table)).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def _sparse_batch(rng, n=40, vocab=30, density=0.3):
    """Flat batch of n cells (rows sorted) with random sources 0/1 and its dense matrix."""
    dense = (rng.random((n, vocab)) < density) * rng.gamma(1.0, 2.0, (n, vocab))
    dense = dense.astype(np.float32)
    row, idx = np.nonzero(dense)
    return (idx.astype(np.int32), dense[row, idx], row.astype(np.int32),
            np.bincount(row, minlength=n).astype(np.int32), rng.integers(0, 2, n).astype(np.int32), dense)


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba missing")
def test_fused_batchnorm_dropout_matches_tensorflow():
    """Same output, moving statistics and gamma/beta gradients as SourceAwareBatchNorm +
    dropout in TensorFlow, with the fused kernel's mask applied to the TF output."""
    from concerto_core.layers import fused_batchnorm_dropout

    rng = np.random.default_rng(7)
    idx, val, row, length, source, dense = _sparse_batch(rng)
    up = rng.normal(size=dense.shape).astype(np.float32)
    fused_bn = SourceAwareBatchNorm(2, 30, momentum=0.5, name="bn_fused")
    graph_bn = SourceAwareBatchNorm(2, 30, momentum=0.5, name="bn_graph")
    for w in (fused_bn.gamma, graph_bn.gamma):
        w.assign(np.linspace(0.5, 1.5, 30).astype(np.float32))
    for w in (fused_bn.beta, graph_bn.beta):
        w.assign(np.linspace(-0.2, 0.3, 30).astype(np.float32))
    for rate in (0.0, 0.3):
        seed = tf.constant([11, 3], tf.int64)
        with tf.GradientTape() as tape:
            out = fused_batchnorm_dropout(fused_bn, rate, seed, idx, val, row, length, source)
            loss = tf.reduce_sum(out * up)
        g_fused = tape.gradient(loss, [fused_bn.gamma, fused_bn.beta])
        mask = (out.numpy() != 0) | (rate == 0)
        with tf.GradientTape() as tape:
            ref = graph_bn(dense, source, training=True) * mask / (1 - rate)
            loss = tf.reduce_sum(ref * up)
        g_graph = tape.gradient(loss, [graph_bn.gamma, graph_bn.beta])
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
        for a, b in zip(g_fused, g_graph):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(fused_bn.moving_mean.numpy(), graph_bn.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fused_bn.moving_variance.numpy(), graph_bn.moving_variance.numpy(), rtol=1e-4)


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba missing")
def test_fused_dropout_mask_is_bernoulli_and_seeded():
    rng = np.random.default_rng(8)
    idx, val, row, length, source, dense = _sparse_batch(rng, n=200, vocab=500)
    splits = np.concatenate([[0], np.cumsum(length)]).astype(np.int32)
    mean, var, _ = kernels.source_moments(idx, val, row, source, 3, 500)
    ones, zeros = np.ones(500, np.float32), np.zeros(500, np.float32)

    def mask(seed, keep=0.8):
        return kernels.bn_dropout_forward(idx, val, splits, source, mean, var, ones, zeros, 1e-3, keep,
                                          np.array(seed, np.int64))[1]

    m = mask([1, 0])
    n = m.size
    assert abs(m.mean() - 0.8) < 4 * np.sqrt(0.16 / n)  # within 4 binomial standard deviations
    np.testing.assert_array_equal(m, mask([1, 0]))  # reproducible for a seed
    other = mask([2, 0])
    assert 0.55 < (m == other).mean() < 0.8  # independent masks agree on ~0.8^2 + 0.2^2 = 0.68
    assert mask([1, 0], keep=1.0).all()
    # no structure along cells or features: per-row and per-column keep rates look binomial
    assert np.abs(m.mean(1) - 0.8).max() < 6 * np.sqrt(0.16 / m.shape[1])
    assert np.abs(m.mean(0) - 0.8).max() < 6 * np.sqrt(0.16 / m.shape[0])


@pytest.mark.skipif(not kernels.HAVE_NUMBA or kernels.nb.config.NUMBA_NUM_THREADS < 2, reason="needs numba, 2+ cores")
def test_thread_limit_applies_in_the_threads_that_call_the_kernels(monkeypatch):
    """numba's thread count is per calling thread; TensorFlow calls the kernels from its own
    worker threads, so a limit set once (set_cpu_threads) must be re-applied there."""
    import threading

    monkeypatch.setattr(kernels, "_REQUESTED_THREADS", 1)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(kernels._kernel_threads()))
    worker.start()
    worker.join()
    assert seen == [1]
