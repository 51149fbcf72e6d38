import numpy as np
import pandas as pd
import pytest

from concerto_core.label_transfer import (apply_rejection, confidence_distributions,
                                          hierarchical_knn_vote, knn_vote, transfer_labels,
                                          ReferenceIndexes)


def unit(cos):
    """2-D unit vector whose cosine with (1, 0) is ``cos`` (upper half-plane)."""
    return np.array([cos, np.sqrt(1 - cos ** 2)])


# query (1,0); reference cosines and labels
COS = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
LAB = np.array(["A", "B", "B", "A", "C", "C"], dtype=object)
REF = np.stack([unit(c) for c in COS])
Q = np.array([[1.0, 0.0]])


def test_hand_computed_votes():
    r = knn_vote(REF, LAB, Q, k=3)
    # A: .9 ; B: .8 + .7 = 1.5 ; total 2.4
    assert r.labels[0] == "B"
    assert r.conf_score[0] == pytest.approx(1.5 / 2.4)
    assert r.categories == ["A", "B", "C"]
    np.testing.assert_allclose(r.probs[0], [0.9 / 2.4, 1.5 / 2.4, 0.0])
    np.testing.assert_array_equal(r.neighbors[0], [0, 1, 2])


def test_tie_goes_to_most_similar_neighbour():
    r = knn_vote(REF, LAB, Q, k=4)  # A: .9+.6 = 1.5, B: .8+.7 = 1.5 -> tie, A has the top neighbour
    assert r.labels[0] == "A" and r.conf_score[0] == pytest.approx(0.5)
    lab2 = np.array(["B", "A", "A", "B", "C", "C"], dtype=object)
    assert knn_vote(REF, lab2, Q, k=4).labels[0] == "B"


def test_k_larger_than_reference():
    with pytest.warns(UserWarning, match="exceeds the reference size"):
        r = knn_vote(REF, LAB, Q, k=50)
    # A 1.5, B 1.5, C .6 ; total 3.6 ; tie -> A
    assert r.labels[0] == "A"
    np.testing.assert_allclose(r.probs[0], [1.5 / 3.6, 1.5 / 3.6, 0.6 / 3.6])


def test_negative_similarities_uniform_vote():
    r = knn_vote(REF, LAB, -Q, k=3)  # sims -.1 (C), -.5 (C), -.6 (A): all clipped to 0 -> majority
    assert r.labels[0] == "C"
    np.testing.assert_allclose(r.probs[0], [1 / 3, 0, 2 / 3])


def test_threshold_and_errors():
    assert knn_vote(REF, LAB, Q, k=3, threshold=0.6).labels[0] == "B"
    assert knn_vote(REF, LAB, Q, k=3, threshold=0.7).labels[0] == "Unknown"
    for t in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            knn_vote(REF, LAB, Q, threshold=t)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be"):
            knn_vote(REF, LAB, Q, k=k)
    with pytest.raises(ValueError, match="all reference labels"):
        knn_vote(REF, np.full(6, np.nan, dtype=object), Q)


def test_nan_labels_excluded_and_multilevel():
    lab = LAB.copy()
    lab[0] = np.nan
    with pytest.warns(UserWarning, match="excluded"):
        r = knn_vote(REF, {"fine": lab, "coarse": np.array(list("XXXYYY"), dtype=object)}, Q, k=3)
    assert set(r) == {"fine", "coarse"}
    assert 0 not in r["fine"].neighbors[0]           # NaN-labelled cell never votes
    np.testing.assert_array_equal(r["fine"].neighbors[0], [1, 2, 3])
    assert r["fine"].labels[0] == "B"
    assert r["coarse"].labels[0] == "X" and r["coarse"].conf_score[0] == pytest.approx(1.0)
    df = pd.DataFrame({"fine": LAB, "coarse": list("XXXYYY")})
    assert set(knn_vote(REF, df, Q, k=3)) == {"fine", "coarse"}


def _hier_data():
    # global nearest neighbour (cos .99) is a monocyte (level-1 M); the other neighbours are T cells
    cos = [0.99, 0.95, 0.9, 0.85, 0.2, 0.1, 0.05]
    l1 = ["M", "T", "T", "T", "M", "M", "T"]
    l2 = ["Mono", "CD4", "CD8", "CD8", "Mono", "DC", "CD4"]
    return np.stack([unit(c) for c in cos]), pd.DataFrame({"l1": l1, "l2": l2})


def test_hierarchical_restricts_to_level1_group():
    ref, labels = _hier_data()
    flat = knn_vote(ref, labels, Q, k=3)
    assert flat["l2"].labels[0] == "Mono"            # global vote is pulled to the monocyte
    res = hierarchical_knn_vote(ref, labels, Q, ["l1", "l2"], k=3)
    assert res["l1"].labels[0] == "T"
    assert res["l2"].labels[0] == "CD8"
    assert set(res["l2"].neighbors[0]) == {1, 2, 3}  # only T reference cells
    assert res["l2"].conf_score[0] == pytest.approx(1.75 / 2.7)
    with pytest.raises(KeyError, match="level"):
        hierarchical_knn_vote(ref, labels, Q, ["l1", "l3"], k=3)


def test_hierarchical_group_index_built_once_per_reference(monkeypatch):
    import concerto_core.label_transfer as lt

    built = []
    real = lt.NeighborIndex

    class Counting(real):
        def __init__(self, reference, *a, **kw):
            built.append(np.asarray(reference).shape[0])
            super().__init__(reference, *a, **kw)

    monkeypatch.setattr(lt, "NeighborIndex", Counting)
    ref, labels = _hier_data()
    cache = ReferenceIndexes(ref)
    q2 = np.vstack([Q, unit(0.15)])            # one query per Level-1 group (T, M)
    first = hierarchical_knn_vote(ref, labels, q2, ["l1", "l2"], k=3, index_cache=cache)
    assert list(first["l1"].labels) == ["T", "M"]
    assert cache.n_built == 3 and sorted(built) == [3, 4, 7]   # whole reference, M group, T group
    for _ in range(3):                          # later query batches reuse every index
        again = hierarchical_knn_vote(ref, labels, q2, ["l1", "l2"], k=3, index_cache=cache)
        np.testing.assert_array_equal(again["l2"].neighbors, first["l2"].neighbors)
    assert cache.n_built == 3 and len(built) == 3
    # Level-2 neighbours come from the predicted Level-1 group only
    l1 = labels["l1"].to_numpy()
    for qi, g in enumerate(first["l1"].labels):
        assert set(l1[first["l2"].neighbors[qi]]) == {g}
    # without a cache the result is the same
    np.testing.assert_array_equal(hierarchical_knn_vote(ref, labels, q2, ["l1", "l2"], k=3)["l2"].labels,
                                  first["l2"].labels)
    with pytest.raises(ValueError, match="different reference"):
        hierarchical_knn_vote(ref[:-1], labels.iloc[:-1], q2, ["l1", "l2"], k=3, index_cache=cache)
    relabelled = labels.assign(l1=["M", "M", "T", "T", "M", "M", "T"])
    with pytest.raises(ValueError, match="labels changed"):
        hierarchical_knn_vote(ref, relabelled, q2, ["l1", "l2"], k=3, index_cache=cache)


def test_transfer_labels_reuses_index_cache():
    ra, qa = _adatas()
    cache = ReferenceIndexes(ra.obsm["X_concerto"])
    transfer_labels(ra, qa, ["l1", "l2"], k=3, hierarchical=True, index_cache=cache)
    n = cache.n_built
    transfer_labels(ra, qa.copy(), ["l1", "l2"], k=3, hierarchical=True, index_cache=cache)
    assert cache.n_built == n == 3
    with pytest.raises(ValueError, match="hierarchical"):
        transfer_labels(ra, qa, "l1", index_cache=cache)


def _adatas():
    ad = pytest.importorskip("anndata")
    ref, labels = _hier_data()
    ra = ad.AnnData(np.zeros((7, 2)), obs=labels.set_axis([f"r{i}" for i in range(7)]))
    ra.obsm["X_concerto"] = ref
    qa = ad.AnnData(np.zeros((2, 2)))
    qa.obsm["X_concerto"] = np.vstack([Q, unit(0.15)])
    return ra, qa


def test_transfer_labels_anndata():
    ra, qa = _adatas()
    transfer_labels(ra, qa, "l1", k=3)
    assert list(qa.obs["predicted_label"]) == ["T", "M"]
    assert qa.obsm["concerto_label_probs"].shape == (2, 2)
    assert qa.uns["concerto"]["label_categories"] == ["M", "T"]
    assert qa.uns["concerto"]["label_transfer"]["k"] == 3
    assert "conf_score" in qa.obs
    transfer_labels(ra, qa, ["l1", "l2"], k=3, hierarchical=True, threshold=0.5)
    assert qa.obs["predicted_label_l2"].iloc[0] == "CD8"
    assert {"conf_score_l1", "conf_score_l2"} <= set(qa.obs.columns)
    assert qa.obsm["concerto_label_probs_l2"].shape == (2, 4)
    assert qa.uns["concerto"]["label_transfer"]["levels"] == ["l1", "l2"]


def test_transfer_labels_errors():
    ra, qa = _adatas()
    with pytest.raises(KeyError, match="label column"):
        transfer_labels(ra, qa, "celltype")
    with pytest.raises(KeyError, match="X_pca"):
        transfer_labels(ra, qa, "l1", use_rep="X_pca")
    with pytest.raises(KeyError, match="level"):
        transfer_labels(ra, qa, "l1", hierarchical=["l1", "nope"])
    ra.obs["empty"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        transfer_labels(ra, qa, "empty")


def test_apply_rejection_exact_cells():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=200)
    cats = ["a", "b", "c", "d"]
    lab = apply_rejection(p, cats, 0.45)
    under = p.max(1) < 0.45
    np.testing.assert_array_equal(lab == "Unknown", under)
    np.testing.assert_array_equal(lab[~under], np.array(cats, dtype=object)[p.argmax(1)][~under])
    with pytest.raises(ValueError):
        apply_rejection(p, cats, 2.0)


def test_confidence_distributions():
    rng = np.random.default_rng(0)
    df = confidence_distributions(rng.beta(8, 2, 500), rng.beta(2, 3, 300), bins=10)
    assert len(df) == 10
    w = df.bin_right - df.bin_left
    assert (df.valid * w).sum() == pytest.approx(1.0) and (df.unseen * w).sum() == pytest.approx(1.0)
    assert df.valid_kept_frac.iloc[0] == 1.0
    assert df.valid.iloc[-3:].sum() > df.unseen.iloc[-3:].sum()
