import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_core.modality import impute_modality, per_feature_pearson


def _bimodal(n, seed):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    centers = np.array([[1.0, 0.2, 0, 0.1], [0.1, 0, 1.0, 0.3]])
    emb = np.maximum(centers[g] + 0.15 * rng.standard_normal((n, 4)), 0)
    prot = np.column_stack([5.0 * g + 0.2 * rng.standard_normal(n),      # group marker
                            rng.standard_normal(n)])                     # pure noise
    return emb, prot, g


@pytest.mark.parametrize("weighted", [True, False])
def test_impute_recovers_group_protein(weighted):
    ref_emb, ref_prot, _ = _bimodal(600, 0)
    q_emb, q_prot, _ = _bimodal(200, 1)
    pred = impute_modality(ref_emb, pd.DataFrame(ref_prot, columns=["CD8", "noise"]), q_emb,
                           k=5, weighted=weighted)
    assert list(pred.columns) == ["CD8", "noise"] and pred.shape == (200, 2)
    r = per_feature_pearson(pred, pd.DataFrame(q_prot, columns=["CD8", "noise"]))
    assert r.loc["CD8", "pearson_r"] >= 0.9
    assert abs(r.loc["noise", "pearson_r"]) < 0.5
    pred_sp = impute_modality(ref_emb, sp.csr_matrix(ref_prot), q_emb, k=5, weighted=weighted)
    np.testing.assert_allclose(pred_sp.to_numpy(), pred.to_numpy())


def test_impute_weighted_mean_by_hand():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    vals = np.array([[1.0], [3.0], [10.0]])
    out = impute_modality(ref, vals, np.array([[1.0, 0.2]]), k=2, weighted=True)
    s0, s2 = 1 / np.hypot(1, 0.2), 1.2 / (np.hypot(1, 0.2) * np.sqrt(2))
    assert out.iloc[0, 0] == pytest.approx((s2 * 10 + s0 * 1) / (s0 + s2))
    out = impute_modality(ref, vals, np.array([[1.0, 0.2]]), k=2, weighted=False)
    assert out.iloc[0, 0] == pytest.approx(5.5)
    with pytest.raises(ValueError, match="rows"):
        impute_modality(ref, vals[:2], ref)


def test_pearson_constant_column_nan():
    pred = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    meas = np.array([[1.0, 0.0], [2.5, 1.0], [2.9, 3.0]])
    r = per_feature_pearson(pred, meas)
    assert r.pearson_r.iloc[0] == pytest.approx(np.corrcoef(pred[:, 0], meas[:, 0])[0, 1])
    assert np.isnan(r.pearson_r.iloc[1]) and r.note.iloc[1] == "constant predicted"
