"""Count samplers in ``simulate.sampling``: exact NB law for both paths, dropout, seeding.

The compiled ("numba") path and the reference ("numpy") path use different random streams, so
they are compared through their distributions, against the exact negative binomial pmf (and, with
dropout, against the exact law of the kept counts by numerical integration over lambda).
"""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy import integrate, stats

from concerto_workflow.simulate import sampling as S

METHODS = ["numba", "numpy"] if S._nb is not None else ["numpy"]


def _single_gene_counts(mu, *, gfac=1.0, bcv_common=0.1, n=60_000, seed=0, method="numba", **kw):
    """n cells x 1 gene with mean ``mu`` exactly (library = mu, proportion = 1)."""
    props = np.ones((1, 1))
    X = S.sample_counts(props, np.zeros(n, dtype=int), np.full(n, float(mu)),
                        bcv_common=bcv_common, bcv_gene_factor=np.array([gfac]),
                        rng=np.random.default_rng(seed), method=method, **kw)
    return np.asarray(X.toarray()).ravel().astype(np.int64)


def _phi(mu, gfac, bcv_common):
    return ((bcv_common + 1 / np.sqrt(mu)) * gfac) ** 2


def _chi2_pvalue(y, pmf, kmax):
    """Chi-square GOF of integer draws y against pmf(k), k = 0..kmax, tail lumped; bins >= 5 expected."""
    k = np.arange(kmax + 1)
    p = pmf(k)
    p = np.append(p, max(0.0, 1 - p.sum()))
    obs = np.bincount(np.minimum(y, kmax + 1), minlength=kmax + 2).astype(float)
    exp = p * y.size
    # merge bins left to right until each expected count is >= 5
    o_m, e_m, o_acc, e_acc = [], [], 0.0, 0.0
    for o, e in zip(obs, exp):
        o_acc, e_acc = o_acc + o, e_acc + e
        if e_acc >= 5:
            o_m.append(o_acc), e_m.append(e_acc)
            o_acc = e_acc = 0.0
    if e_acc > 0 or o_acc > 0:
        o_m[-1] += o_acc
        e_m[-1] += e_acc
    o_m, e_m = np.array(o_m), np.array(e_m)
    e_m *= o_m.sum() / e_m.sum()
    return stats.chisquare(o_m, e_m).pvalue


# walk regime (mu <= 50 for numba, <= 10 for numpy) and Gamma-Poisson regime; (3, 2) and
# (60, 5) have phi > 1, i.e. gamma shape 1/phi < 1 (the boosted Marsaglia-Tsang branch at 60)
CASES = [(0.02, 1.0), (0.7, 1.0), (3.0, 0.8), (9.0, 1.3), (30.0, 1.0), (120.0, 1.0),
         (800.0, 0.7), (3.0, 2.0), (60.0, 5.0)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mu,gfac", CASES)
def test_counts_follow_exact_negative_binomial(method, mu, gfac):
    y = _single_gene_counts(mu, gfac=gfac, method=method, seed=int(mu * 10) + 1)
    phi = _phi(mu, gfac, 0.1)
    r = 1 / phi
    law = stats.nbinom(r, 1 / (1 + mu * phi))
    kmax = int(law.ppf(1 - 1e-6))
    assert _chi2_pvalue(y, law.pmf, kmax) > 1e-4
    assert y.mean() == pytest.approx(mu, rel=6 * np.sqrt(law.var() / y.size) / mu + 1e-9)


def _dropout_pmf(mu, phi, mid, shape):
    """Exact law of the observed count: Poisson(lambda), lambda ~ Gamma, kept w.p. 1 - logistic."""
    r = 1 / phi
    gam = stats.gamma(r, scale=mu * phi)
    keep = lambda lam: 1 - 1 / (1 + np.exp(-shape * (np.log(lam) - mid)))  # noqa: E731

    lo, hi = gam.ppf(1e-13), gam.ppf(1 - 1e-13)

    def pmf(ks):
        out = np.zeros(len(ks))
        for i, k in enumerate(ks):
            if k > 0:
                f = lambda lam: stats.poisson.pmf(k, lam) * gam.pdf(lam) * keep(lam)  # noqa: E731
                out[i] = integrate.quad(f, lo, hi, limit=400, points=[mu])[0]
        out[0] = 1 - out[1:].sum()  # zeros: everything not kept as a count >= 1 (tail < 1e-7)
        return out
    return pmf


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mu,mid", [(2.0, 0.5), (25.0, 3.0), (150.0, 4.5)])
def test_dropout_law_is_exact(method, mu, mid):
    shape = -1.0
    y = _single_gene_counts(mu, method=method, dropout_mid=mid, dropout_shape=shape, n=40_000,
                            seed=7)
    phi = _phi(mu, 1.0, 0.1)
    law = stats.nbinom(1 / phi, 1 / (1 + mu * phi))
    kmax = int(law.ppf(1 - 1e-7))
    assert _chi2_pvalue(y, _dropout_pmf(mu, phi, mid, shape), kmax) > 1e-4


def _splat_like(n_cells=400, n_genes=3000, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.gamma(0.6, 1 / 0.3, size=(3, n_genes))
    props = means / means.sum(1, keepdims=True)
    state = rng.integers(0, 3, size=n_cells)
    lib = rng.lognormal(11.0, 0.2, size=n_cells)
    gfac = S.draw_bcv_gene_factor(n_genes, 60.0, rng)
    return props, state, lib, gfac


@pytest.mark.skipif(S._nb is None, reason="numba not installed")
def test_numba_stream_ignores_chunking_and_threads():
    import numba
    props, state, lib, gfac = _splat_like()
    kw = dict(bcv_common=0.1, bcv_gene_factor=gfac, method="numba", dropout_mid=1.0)
    ref = S.sample_counts(props, state, lib, rng=np.random.default_rng(5), **kw)
    again = S.sample_counts(props, state, lib, rng=np.random.default_rng(5), chunk_cells=37, **kw)
    n0 = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = S.sample_counts(props, state, lib, rng=np.random.default_rng(5), chunk_cells=7, **kw)
    finally:
        numba.set_num_threads(n0)
    other = S.sample_counts(props, state, lib, rng=np.random.default_rng(6), **kw)
    for b in (again, one):
        assert (ref != b).nnz == 0 and ref.nnz == b.nnz
    assert (ref != other).nnz > 0
    assert sp.isspmatrix_csr(ref) and ref.dtype == np.float32 and ref.indices.dtype == np.int32
    assert ref.has_sorted_indices  # rows are written in gene order


@pytest.mark.skipif(S._nb is None, reason="numba not installed")
def test_numba_and_numpy_paths_agree_on_splat_defaults():
    props, state, lib, gfac = _splat_like(n_cells=600)
    kw = dict(bcv_common=0.1, bcv_gene_factor=gfac)
    a = S.sample_counts(props, state, lib, rng=np.random.default_rng(1), method="numba", **kw)
    b = S.sample_counts(props, state, lib, rng=np.random.default_rng(2), method="numpy", **kw)
    # zero fraction per cell and library sizes: same law
    za, zb = np.diff(a.indptr), np.diff(b.indptr)
    se = np.sqrt(za.var() / za.size + zb.var() / zb.size)
    assert abs(za.mean() - zb.mean()) < 5 * se
    # per-gene means: both unbiased for E[count] = lib * prop
    expect = (lib[:, None] * props[state]).mean(0)
    hi = expect > 5
    for m in (a, b):
        ratio = np.asarray(m.mean(0)).ravel()[hi] / expect[hi]
        assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
    # neighbouring cells (neighbouring random streams) are uncorrelated
    d = a[:, hi].toarray() / expect[hi]
    c = np.corrcoef(d[:-1].ravel() - 1, d[1:].ravel() - 1)[0, 1]
    assert abs(c) < 0.02


def test_bad_method():
    props, state, lib, gfac = _splat_like(n_cells=5, n_genes=10)
    with pytest.raises(ValueError, match="method"):
        S.sample_counts(props, state, lib, bcv_common=0.1, bcv_gene_factor=gfac,
                        rng=np.random.default_rng(0), method="cuda")


def test_stack_csr_rows_matches_vstack():
    rng = np.random.default_rng(0)
    parts = [sp.random(n, 50, density=0.2, format="csr", dtype=np.float32, random_state=rng)
             for n in (3, 0, 7, 1)]
    a = S.stack_csr_rows(parts, 50)
    b = sp.vstack(parts, format="csr")
    assert a.shape == b.shape and (a != b).nnz == 0
    assert S.stack_csr_rows([], 50).shape == (0, 50)


@pytest.mark.skipif(S._nb is None, reason="numba not installed")
def test_numba_sample_counts_equals_concatenated_chunks():
    props, state, lib, gfac = _splat_like(n_cells=250)
    kw = dict(bcv_common=0.1, bcv_gene_factor=gfac, method="numba", chunk_cells=19)
    direct = S.sample_counts(props, state, lib, rng=np.random.default_rng(3), **kw)
    chunks = list(S.iter_count_chunks(props, state, lib, rng=np.random.default_rng(3), **kw))
    assert [(a, b) for a, b, _ in chunks][:2] == [(0, 19), (19, 38)] and chunks[-1][1] == 250
    stacked = S.stack_csr_rows([c for _, _, c in chunks], props.shape[1])
    assert (direct != stacked).nnz == 0 and direct.nnz == stacked.nnz > 0
    empty = S.sample_counts(props, state[:0], lib[:0], rng=np.random.default_rng(3), **kw)
    assert empty.shape == (0, props.shape[1]) and empty.nnz == 0
