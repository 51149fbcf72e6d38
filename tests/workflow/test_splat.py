"""Splat model: distributional properties, seeding, errors, robustness grid, R backend message."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_workflow.simulate.robustness import robustness_grid, simulate_robustness
from concerto_workflow.simulate.splat import SplatParams, simulate
from concerto_workflow.simulate.splatter_r import splatter_simulate


def _zero_frac(a):
    return 1 - a.X.nnz / (a.n_obs * a.n_vars)


def test_output_format_and_var_columns():
    a = simulate(SplatParams(n_genes=300, batch_cells=(40, 60), group_prob=(0.5, 0.5)))
    assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32 and a.shape == (100, 300)
    assert np.all(a.X.data == np.round(a.X.data))
    for c in ("BaseGeneMean", "OutlierFactor", "GeneMean", "DEFacGroup1", "DEFacGroup2",
              "BatchFacBatch1", "BatchFacBatch2"):
        assert c in a.var
    assert list(a.obs["Batch"].cat.categories) == ["Batch1", "Batch2"]
    assert set(a.obs["Group"]) <= {"Group1", "Group2"}


def test_zero_fraction_rises_with_dropout_mid():
    zs = [_zero_frac(simulate(SplatParams(n_genes=500, batch_cells=(200,), dropout_type="experiment",
                                          dropout_mid=m, seed=1))) for m in (-0.5, 0.5, 1.5, 3.0)]
    assert all(np.diff(zs) > 0), zs


def test_mean_variance_follows_bcv():
    # one group, no outliers/dropout, equal library sizes; high-mean genes
    p = SplatParams(n_genes=400, batch_cells=(3000,), lib_scale=0.0, out_prob=0.0, bcv_common=0.2,
                    bcv_df=1e6, seed=3)
    a = simulate(p)
    X = a.X.toarray()
    mu, var = X.mean(0), X.var(0)
    hi = mu > 50
    assert hi.sum() > 20
    phi = (var[hi] - mu[hi]) / mu[hi] ** 2  # NB: var = mu + phi mu^2
    expected = (0.2 + 1 / np.sqrt(mu[hi])) ** 2
    assert np.median(phi / expected) == pytest.approx(1.0, abs=0.15)


def test_de_fraction_matches_de_prob():
    a = simulate(SplatParams(n_genes=5000, batch_cells=(10,), group_prob=(0.5, 0.5), de_prob=0.2))
    for g in ("DEFacGroup1", "DEFacGroup2"):
        frac = (a.var[g] != 1).mean()
        assert frac == pytest.approx(0.2, abs=0.02)
        down = (a.var[g] < 1).sum() / (a.var[g] != 1).sum()
        assert down == pytest.approx(0.5, abs=0.06)


def test_library_sizes_match_lib_params():
    p = SplatParams(n_genes=2000, batch_cells=(1500,), lib_loc=9.0, lib_scale=0.3, seed=2)
    a = simulate(p)
    assert np.log(a.obs["ExpLibSize"]).mean() == pytest.approx(9.0, abs=0.03)
    ll = np.log(np.asarray(a.X.sum(1)).ravel())
    assert ll.mean() == pytest.approx(9.0, abs=0.05)
    assert ll.std() == pytest.approx(0.3, abs=0.05)  # Poisson/BCV noise on sums is small here


def test_seeding():
    p = SplatParams(n_genes=300, batch_cells=(50,), seed=7)
    a, b, c = simulate(p), simulate(p), simulate(p.replace(seed=8))
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def _ari_kmeans(a, k):
    import scanpy as sc
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    sc.pp.pca(a, n_comps=15)
    lab = KMeans(k, n_init=5, random_state=0).fit_predict(a.obsm["X_pca"])
    return adjusted_rand_score(a.obs["Group"], lab)


def test_group_structure_ari_falls_with_de_strength():
    kw = dict(n_genes=1000, batch_cells=(600,), group_prob=(0.25,) * 4, de_prob=0.2, seed=4)
    strong = _ari_kmeans(simulate(SplatParams(de_fac_scale=0.8, **kw)), 4)
    weak = _ari_kmeans(simulate(SplatParams(de_fac_scale=0.05, de_fac_loc=0.0, **kw)), 4)
    assert strong > 0.9 and weak < strong - 0.3, (strong, weak)


def test_paths_branching():
    p = SplatParams(n_genes=500, batch_cells=(400,), method="paths", group_prob=(0.25,) * 4,
                    path_from=(0, 1, 2, 2), path_n_steps=20)
    a = simulate(p)
    assert "Step" in a.obs and a.obs["Step"].between(1, 20).all()
    assert set(a.obs["Group"]) == {"Path1", "Path2", "Path3", "Path4"}


@pytest.mark.parametrize("kw,name", [
    (dict(de_prob=-0.1), "de_prob"), (dict(group_prob=(0.5, 0.4)), "group_prob"),
    (dict(batch_cells=(0,)), "batch_cells"), (dict(dropout_type="cell"), "dropout_type"),
    (dict(method="trees"), "method"), (dict(n_genes=0), "n_genes"),
    (dict(method="paths", group_prob=(0.5, 0.5), path_from=(2, 1)), "path_from"),
])
def test_bad_parameters_name_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        SplatParams(**kw)


def test_from_splatter_names():
    p = SplatParams.from_splatter(**{"de.facScale": 0.2, "nGenes": 100, "batchCells": [5, 5],
                                     "dropout.type": "experiment", "group.prob": [0.5, 0.5]})
    assert p.de_fac_scale == (0.2,) and p.n_genes == 100 and p.n_cells == 10
    with pytest.raises(ValueError, match="bogus"):
        SplatParams.from_splatter(bogus=1)


def test_robustness_grid():
    g = robustness_grid()
    assert set(g) == {"de0.15", "de0.2", "de0.25", "de0.3", "dropout-0.5", "dropout0",
                      "dropout0.5", "dropout1"}
    a = simulate_robustness("dropout0", n_cells=100)
    assert a.shape == (100, 2500) and a.obs["cell_type"].nunique() == 5 and "batch" in a.obs
    with pytest.raises(ValueError, match="unknown"):
        simulate_robustness("de9")


def test_r_backend_missing_dependency_message():
    from concerto_workflow.simulate.splatter_r import _r_available

    try:
        _r_available()
    except RuntimeError:
        pass
    else:
        pytest.skip("R + splatter are installed here")
    with pytest.raises(RuntimeError, match=r"BiocManager::install\('splatter'\).*rpy2==3.5.17"):
        splatter_simulate(SplatParams(n_genes=10), backend="r")


def test_splat_robustness_standin_follows_de_strength_and_dropout():
    from concerto_workflow.simulate.standins import make_splat_robustness

    def group_spread(a):      # mean over genes of the sd of the group means of log1p(CPM-like) values
        x = np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4)
        means = pd.DataFrame(x).groupby(a.obs["cell_type"].to_numpy()).mean()
        return means.std(0).mean()

    weak, strong = (make_splat_robustness(80, 300, 0, de_fac_scale=s, dropout_mid=1.0) for s in (0.15, 0.6))
    assert weak.shape == (80, 300) and set(weak.obs["cell_type"]) == {f"Group{i}" for i in range(1, 6)}
    assert strong.uns["splat_de_fac_scale"] == 0.6 and group_spread(strong) > group_spread(weak)
    few, many = (make_splat_robustness(80, 300, 0, de_fac_scale=0.2, dropout_mid=m) for m in (-0.5, 1.0))
    assert _zero_frac(many) > _zero_frac(few)
    with pytest.raises(ValueError, match="de_fac_scale"):
        make_splat_robustness(10, 10, de_fac_scale=0)
