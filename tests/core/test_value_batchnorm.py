"""The teacher's value BatchNorm (``ConcertoConfig.value_batchnorm``): the authors' variant
(``'shared'``: every gene, zeros included, one mean/variance per source, scalar affine) against
hand computations, its documented effect, both CPU kernel paths and precise BN statistics."""

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from concerto_core import ConcertoConfig, kernels
from concerto_core.data import CellInputs
from concerto_core.engine import estimate_statistics
from concerto_core.io import model_variables
from concerto_core.layers import SharedValueBatchNorm
from concerto_core.network import build_network

VOCAB, EPS = 6, 1e-3


def _cells():
    """Five cells x six genes, many zeros, two sources (0: cells 0-2, 1: cells 3-4)."""
    dense = np.array([[0.0, 2.0, 0.0, 1.0, 0.0, 0.0],
                      [3.0, 0.0, 0.0, 0.0, 0.5, 0.0],
                      [0.0, 0.0, 4.0, 0.0, 0.0, 1.5],
                      [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 2.5, 0.0, 0.7]], np.float32)
    source = np.array([0, 0, 0, 1, 1], np.int32)
    return dense, source


def _batch(dense, source):
    return CellInputs({"rna": sp.csr_matrix(dense)}, source).batch(np.arange(len(dense)))


def _network(mode, kernel="tensorflow", seed=0):
    cfg = ConcertoConfig(embedding_dim=8, dropout=0.0, value_batchnorm=mode, cpu_kernels=kernel,
                         bn_momentum=0.0, bn_epsilon=EPS, seed=seed)
    return build_network({"rna": VOCAB}, 2, cfg, verbose=False)


def test_shared_value_batchnorm_equals_hand_computation():
    """One mean and variance per source over all of its cell x gene values, zeros included,
    and one scalar scale/offset; momentum 0 stores exactly those statistics."""
    dense, source = _cells()
    bn = SharedValueBatchNorm(2, VOCAB, momentum=0.0, epsilon=EPS, name="shared_bn")
    bn.gamma.assign([1.7])
    bn.beta.assign([-0.3])
    out = bn(dense, source, training=True).numpy()
    expected = np.empty_like(dense)
    for s in (0, 1):
        values = dense[source == s]  # (cells, 6): every entry, zeros too
        mean, var = values.sum() / values.size, ((values - values.sum() / values.size) ** 2).sum() / values.size
        expected[source == s] = (values - mean) / np.sqrt(var + EPS) * 1.7 - 0.3
        np.testing.assert_allclose(bn.moving_mean.numpy()[s], [mean], rtol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy()[s], [var], rtol=1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert bn.gamma.shape == (1,) and bn.moving_mean.shape == (3, 1)
    # the zeros of a source map to one shared (nonzero) value, whatever the gene
    zeros0 = out[:3][dense[:3] == 0]
    np.testing.assert_allclose(zeros0, zeros0[0], rtol=1e-6)
    assert abs(zeros0[0]) > 0.1
    # inference uses the stored statistics: same output as the training batch here
    np.testing.assert_allclose(bn(dense, source, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_shared_mode_feeds_every_gene_to_the_teacher():
    """'shared': the attention pools all V genes of each cell with the shared-BN values;
    'per_gene': expressed genes only, each gene standardised over its source's cells;
    None: expressed genes, raw values."""
    dense, source = _cells()
    batch = {k: tf.constant(v) for k, v in _batch(dense, source).items()}
    nnz = int((dense != 0).sum())

    idx, val, row, length = (t.numpy() for t in _network("shared").teacher_inputs(batch, "rna", training=True))
    assert len(idx) == dense.size and (length == VOCAB).all()
    np.testing.assert_array_equal(idx, np.tile(np.arange(VOCAB), 5))
    np.testing.assert_array_equal(row, np.repeat(np.arange(5), VOCAB))
    for s in (0, 1):
        part = dense[source == s]
        expected = (part - part.mean()) / np.sqrt(part.var() + EPS)  # gamma 1, beta 0
        np.testing.assert_allclose(val.reshape(5, VOCAB)[source == s], expected, rtol=1e-5, atol=1e-6)

    idx, val, row, length = (t.numpy() for t in _network("per_gene").teacher_inputs(batch, "rna", training=True))
    assert len(idx) == nnz
    for s in (0, 1):
        part = dense[source == s]
        standard = (part - part.mean(0)) / np.sqrt(part.var(0) + EPS)
        cells = np.flatnonzero(source == s)
        mine = np.isin(row, cells)
        np.testing.assert_allclose(val[mine], standard[row[mine] - cells[0], idx[mine]], rtol=1e-5, atol=1e-6)

    idx, val, row, length = (t.numpy() for t in _network(None).teacher_inputs(batch, "rna"))
    np.testing.assert_array_equal(val, dense[row, idx])


@pytest.mark.parametrize("mode", [None, "per_gene", "shared"])
def test_only_shared_mode_lets_unexpressed_genes_move_the_teacher(mode):
    """The documented difference: with 'shared' a cell's teacher embedding depends on the
    embeddings of genes it does not express; otherwise it does not."""
    dense, source = _cells()
    batch = {k: tf.constant(v) for k, v in _batch(dense, source).items()}
    net = _network(mode)
    net.teacher(batch, training=True)  # inference statistics := this batch's
    before = net.teacher(batch).numpy()
    layer = net.teacher_rna_attention
    table = layer.embedding.numpy()
    table[4] += np.random.default_rng(0).normal(0, 0.5, table.shape[1])  # gene 4: expressed by cell 1 only
    layer.embedding.assign(table)
    moved = np.abs(net.teacher(batch).numpy() - before).max(axis=1)
    assert moved[1] > 1e-3  # the cell that expresses gene 4
    others = np.delete(moved, 1)
    if mode == "shared":
        assert (others > 1e-3).all()
    else:
        np.testing.assert_array_equal(others, 0.0)


def test_shared_mode_attention_reports_expressed_genes():
    import anndata as ad

    from concerto_core import Concerto

    dense, _ = _cells()
    rng = np.random.default_rng(1)
    dense = np.vstack([dense] * 8) * rng.uniform(0.5, 1.5, (40, VOCAB)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(dense))
    adata.var_names = [f"g{i}" for i in range(VOCAB)]
    cfg = ConcertoConfig(embedding_dim=8, batch_size=20, epochs=1, value_batchnorm="shared", seed=0)
    model = Concerto(adata, config=cfg, verbose=False)
    model.train()
    att = model.attention(adata)["rna"]
    assert att.shape == (40, VOCAB) and att.nnz == int((dense != 0).sum())
    sums = np.asarray(att.sum(1)).ravel()
    assert (sums > 0).all() and (sums < 1 + 1e-5).all()  # the rest of the weight is on unexpressed genes


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba missing")
def test_shared_mode_numba_and_tensorflow_paths_agree():
    """The value BN runs in TensorFlow on both paths and feeds the attention pooling as values;
    the numba kernels then give the same teacher output and the same gradients (value BN
    scale/offset included) as the TensorFlow graph."""
    dense, source = _cells()
    batch = {k: tf.constant(v) for k, v in _batch(dense, source).items()}
    nets = {k: _network("shared", kernel=k, seed=2) for k in ("numba", "tensorflow")}
    values = {k: v.numpy() for k, v in model_variables(nets["tensorflow"]).items()}
    rng = np.random.default_rng(3)
    for path, var in model_variables(nets["numba"]).items():
        value = values[path]
        if path.startswith("teacher_rna_value_bn/") and var.trainable:
            value = value + rng.normal(0, 0.3, value.shape).astype(np.float32)  # non-trivial gamma/beta
        var.assign(value)
        model_variables(nets["tensorflow"])[path].assign(value)
    assert nets["numba"].teacher_rna_attention.kernel == "numba"
    assert nets["tensorflow"].teacher_rna_attention.kernel == "tensorflow"
    up = rng.normal(size=(5, 8)).astype(np.float32)
    results = {}
    for k, net in nets.items():
        with tf.GradientTape() as tape:
            z = net.teacher(batch, training=True)
            loss = tf.reduce_sum(z * up)
        weights = [net.teacher_rna_value_bn.gamma, net.teacher_rna_value_bn.beta, net.teacher_rna_attention.embedding]
        results[k] = [z] + [tf.convert_to_tensor(g) for g in tape.gradient(loss, weights)]
    for name, a, b in zip(["teacher", "value_bn gamma", "value_bn beta", "embedding"], results["numba"], results["tensorflow"]):
        a, b = a.numpy(), b.numpy()
        assert np.abs(b).max() > 0, name
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-3), name


def test_precise_statistics_of_shared_value_batchnorm_count_every_gene():
    """Precise BN (streamed sums over the sparse entries) gives the same per-source mean and
    variance as the dense matrix with its zeros."""
    rng = np.random.default_rng(4)
    dense = (rng.random((30, VOCAB)) < 0.4) * rng.gamma(1.0, 2.0, (30, VOCAB))
    dense = dense.astype(np.float32)
    source = (np.arange(30) % 2).astype(np.int32)
    net = _network("shared")
    estimate_statistics(net, CellInputs({"rna": sp.csr_matrix(dense)}, source), batch_size=7)
    layer = net.teacher_rna_value_bn
    for s in (0, 1):
        part = dense[source == s].astype(np.float64)
        np.testing.assert_allclose(layer.moving_mean.numpy()[s], [part.mean()], rtol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy()[s], [part.var()], rtol=1e-4)


def test_value_batchnorm_names_and_legacy_manifests():
    assert ConcertoConfig(value_batchnorm=False).value_batchnorm is None
    with pytest.raises(ValueError, match="value_batchnorm"):
        ConcertoConfig(value_batchnorm=True)  # ambiguous: say 'shared' or 'per_gene'
    with pytest.raises(ValueError, match="value_batchnorm"):
        ConcertoConfig(value_batchnorm="per_source")
    # manifests written when True meant the only (per-gene) value BatchNorm still load as that
    assert ConcertoConfig.from_dict({"value_batchnorm": True}).value_batchnorm == "per_gene"
    assert ConcertoConfig.from_dict({"value_batchnorm": False}).value_batchnorm is None
    assert ConcertoConfig.from_dict(ConcertoConfig(value_batchnorm="shared").to_dict()).value_batchnorm == "shared"
