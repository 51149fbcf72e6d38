import anndata as ad
import numpy as np
import pandas as pd

from concerto_workflow import metrics


def _emb(n=300, mixed=True, seed=0):
    rng = np.random.default_rng(seed)
    batch = np.repeat(["a", "b", "c"], n // 3)
    ctype = np.tile(["x", "y"], n // 2)
    e = rng.normal(size=(n, 16)) + (ctype == "x")[:, None] * 6
    if not mixed:
        e += (batch[:, None] == np.array(["a", "b", "c"])) @ (rng.normal(size=(3, 16)) * 8)
    a = ad.AnnData(obs=pd.DataFrame({"batch": batch, "cell_type": ctype, "tech": batch},
                                    index=[f"c{i}" for i in range(n)]))
    a.obsm["X_emb"] = e.astype(np.float32)
    return a


def test_kbet_separates_mixed_from_split():
    mixed = metrics.kbet_accept_rate(_emb(mixed=True), k=15)
    split = metrics.kbet_accept_rate(_emb(mixed=False), k=15)
    assert mixed > 0.5 > split


def test_asw():
    a = _emb(mixed=True)
    assert metrics.asw_celltype(a) > 0.3
    assert abs(metrics.asw_batch(a)) < 0.1
    assert metrics.asw_batch(_emb(mixed=False)) > 0.2


def test_knn_vote_and_confusion():
    a = _emb()
    a.obs["role"] = np.where(np.arange(a.n_obs) % 5 == 0, "query", "reference")
    pred = metrics.transfer_labels(a, k=5)
    assert len(pred) == (a.obs["role"] == "query").sum()
    m = metrics.mapping_metrics(pred)
    assert m["accuracy"] > 0.95
    conf = metrics.confusion(pred)
    assert set(conf.columns) == {"true", "predicted", "fraction", "n"}
    np.testing.assert_allclose(conf.groupby("true")["fraction"].sum(), 1.0)


def test_own_knn_vote_is_cosine_weighted():
    ref = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    labels, conf = metrics._knn_vote_cosine(ref, ["a", "a", "b"], np.array([[1.0, 0.05]]), k=3)
    assert labels[0] == "a" and 0.5 < conf[0] <= 1.0
