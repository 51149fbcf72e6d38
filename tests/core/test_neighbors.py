import warnings

import numpy as np
import pytest

from concerto_core.neighbors import NeighborIndex, knn_search


def _clustered(n, d=32, n_clusters=20, seed=0):
    rs = np.random.default_rng(123)
    centers = rs.standard_normal((n_clusters, d))
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n_clusters, n)
    x = np.maximum(centers[lab] + 0.6 * rng.standard_normal((n, d)), 0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(ref, q, k):
    r = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    qq = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qq @ r.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k], s


@pytest.mark.parametrize("n_ref", [7, 300, 5000])
def test_exact_matches_bruteforce(n_ref):
    rng = np.random.default_rng(1)
    ref, q = rng.random((n_ref, 16)), rng.random((40, 16))
    idx, sims = NeighborIndex(ref, "exact", memory_limit_mb=0.05).query(q, 5)
    gt, s = _brute(ref, q, 5)
    assert idx.shape == sims.shape == (40, 5)
    np.testing.assert_array_equal(idx, gt)
    np.testing.assert_allclose(sims, np.take_along_axis(s, idx, 1), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-7).all()  # sorted by decreasing similarity


def test_cosine_not_dot_product():
    ref = np.array([[10.0, 0.0], [1.0, 1.0]])
    idx, sims = knn_search(ref, np.array([[1.0, 1.2]]), k=1)
    assert idx[0, 0] == 1 and sims[0, 0] == pytest.approx(np.cos(np.arctan(1.2) - np.pi / 4), abs=1e-6)


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        NeighborIndex(np.eye(3)).query(np.eye(3), k)


def test_k_larger_than_reference_clamped():
    with pytest.warns(UserWarning, match="exceeds the reference size"):
        idx, sims = NeighborIndex(np.eye(3)).query(np.ones((2, 3)), 10)
    assert idx.shape == (2, 3)
    assert sorted(idx[0]) == [0, 1, 2]


def test_nan_and_shape_errors():
    bad = np.ones((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        NeighborIndex(bad)
    ix = NeighborIndex(np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        ix.query(bad, 1)
    with pytest.raises(ValueError, match="dims"):
        ix.query(np.ones((2, 4)), 1)


@pytest.mark.parametrize("method,storage", [("ivf", "flat"), ("ivf", "sq8"), ("hnsw", "flat")])
def test_approximate_recall(method, storage):
    if method == "ivf":
        pytest.importorskip("faiss")
    ref, q = _clustered(4000), _clustered(300, seed=5)
    gt, _ = NeighborIndex(ref, "exact").query(q, 5)
    # exact_threshold=0 with auto also forces the approximate path
    kw = {"method": "auto", "exact_threshold": 0} if method == "ivf" else {"method": "hnsw"}
    ix = NeighborIndex(ref, n_threads=1, ivf_storage=storage, **kw)
    assert ix.method == method
    idx, sims = ix.query(q, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, gt)])
    assert recall >= 0.95
    assert idx.shape == (300, 5) and (idx >= 0).all()


def test_ivf_tiny_lists_fall_back():
    pytest.importorskip("faiss")
    ref = _clustered(200)
    idx, _ = NeighborIndex(ref, "ivf", nlist=50, nprobe=1).query(ref[:20], 8)
    assert (idx >= 0).all() and (idx[:, 0] == np.arange(20)).all()
