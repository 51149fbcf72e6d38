"""Exact, chunked Gamma-Poisson (negative binomial) count sampling for Splat-style models.

Drawing a Gamma and a Poisson variate for every cell x gene entry is slow, and most entries of a
realistic single-cell matrix are zero. Both samplers here are exact and skip most of that work.

Model (Splatter's BCV model): ``bcv = (bcv_common + 1/sqrt(mu)) * sqrt(bcv_df / chi2_g)`` with
one chi-squared draw per gene; ``lambda ~ Gamma(shape=1/bcv^2, scale=mu*bcv^2)``;
``count ~ Poisson(lambda)``, i.e. ``count ~ NB(mean mu, dispersion phi = bcv^2)``; "experiment"
dropout keeps an entry with probability ``1 - 1/(1 + exp(-shape * (log(lambda) - mid)))``.
For a nonzero count ``y`` the dropout's ``lambda`` is drawn from its exact posterior
``Gamma(1/phi + y, scale=mu*phi/(1+mu*phi))`` (Gamma-Poisson conjugacy), so zeros never need it.

``method="numba"`` (default; compiled, 2 threads = ``numba.get_num_threads()`` over cells): one
float64 uniform ``u`` (53 bits) per entry. Since ``P(count > 0) <= 1 - exp(-mu) <= 2mu/(2+mu)``,
entries with ``u >= 2mu/(2+mu)`` are zero at the cost of a compare. For the others
``P(count = 0) = (1 + mu*phi)^(-1/phi)`` is computed (``exp``/``log``; absolute error ~1e-16) and
the entry is nonzero iff ``u < P(count > 0)``. For ``mu <= NUMBA_WALK_MAX_MEAN`` the same ``u``
then gives the count by inversion of the NB CDF with ``v = 1 - u``
(``y = min k: sum_{j=1..k} pmf(j) >= P(count > 0) - u``); above it ``u`` only decides between
1 and ``>= 2``, and a count ``>= 2`` is drawn as Gamma-Poisson (Marsaglia-Tsang gamma, Hoermann
PTRS / multiplication Poisson), rejecting draws below 2.
Nonzeros are written row by row into a reused (chunk_cells x genes) slot buffer, then copied once.
Random numbers come from xoshiro256** streams, one per cell, seeded by splitmix64 from one
64-bit key drawn from ``rng`` per :func:`iter_count_chunks` / :func:`sample_counts` call and the
cell's index in that call, so results depend on the seed only -- not on ``chunk_cells`` or the
number of threads (``numba.set_num_threads``). The kernels are compiled on first use (~5-10 s)
and cached in ``__pycache__``.

``method="numpy"`` (reference; the implementation before the compiled path): vectorised chunks,
a float32 uniform per entry as candidate filter, the exact ``P(count > 0)`` test, then a
vectorised inverse-CDF walk (``mu <= 10``) or Gamma-Poisson rejection for the nonzero value.

Both give the same count distribution (tested in ``tests/workflow/test_sampling_speed_paths.py``)
but different random streams: for a fixed seed the numba path does not reproduce counts of the
numpy path (or of versions before the compiled path was added).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import scipy.sparse as sp

try:  # numba is a scanpy dependency; without it the (slower) numpy path is used
    import numba as _nb
except ImportError:  # pragma: no cover
    _nb = None

#: entries per chunk (cells x genes) processed at once; ~4M keeps temporaries near 50 MB.
CHUNK_ENTRIES = 4_000_000
#: above this mean the truncated NB is drawn by Gamma-Poisson rejection instead of a CDF walk.
WALK_MAX_MEAN = 10.0
#: same threshold for the compiled path, where a CDF step costs ~1 ns and a Gamma-Poisson draw
#: ~100 ns (walks take ~mu steps; break-even near mu = 80).
NUMBA_WALK_MAX_MEAN = 50.0
#: compiled path: cells of a chunk are split into this many pieces per thread (load balance).
PIECES_PER_THREAD = 4
#: default sampler: "numba" when numba imports, else "numpy".
DEFAULT_METHOD = "numba" if _nb is not None else "numpy"


def draw_bcv_gene_factor(n_genes: int, bcv_df: float, rng: np.random.Generator) -> np.ndarray:
    """Per-gene BCV multiplier ``sqrt(bcv_df / chi2(bcv_df))``, shape (n_genes,); 1 if df is inf."""
    if not np.isfinite(bcv_df):
        return np.ones(n_genes)
    return np.sqrt(bcv_df / rng.chisquare(bcv_df, size=n_genes))


def _truncated_nb(mu, phi, log1p_term, p_nonzero, rng):
    """Draw counts >= 1 from NB(mean mu, dispersion phi) conditioned on being nonzero."""
    y = np.ones(mu.shape[0], dtype=np.int64)
    r = 1.0 / phi
    p = mu * phi / (1.0 + mu * phi)
    small = mu <= WALK_MAX_MEAN
    # inverse-CDF walk on the truncated law: w ~ U(0, P(y>0)); y = min k with sum_{1..k} pmf > w
    idx = np.flatnonzero(small)
    if idx.size:
        w = rng.random(idx.size) * p_nonzero[idx]
        rr, pp = r[idx], p[idx]
        pmf = np.exp(-log1p_term[idx] / phi[idx]) * rr * pp  # pmf(1) = P0 * r * p
        cum = pmf.copy()
        k = 1
        while idx.size and k < 100_000:
            more = cum < w
            idx, w, rr, pp, pmf, cum = idx[more], w[more], rr[more], pp[more], pmf[more], cum[more]
            if not idx.size:
                break
            k += 1
            pmf = pmf * ((k - 1 + rr) / k) * pp
            cum = cum + pmf
            y[idx] = k
    big = np.flatnonzero(~small)
    while big.size:  # zeros are rare here (P0 < e^-1 at least), so this loop ends fast
        draw = rng.poisson(rng.gamma(r[big], mu[big] / r[big]))
        ok = draw > 0
        y[big[ok]] = draw[ok]
        big = big[~ok]
    return y


def _iter_count_chunks_numpy(
    state_props: np.ndarray,
    cell_state: np.ndarray,
    lib_size: np.ndarray,
    *,
    bcv_common: float,
    bcv_gene_factor: np.ndarray,
    rng: np.random.Generator,
    dropout_mid: float | None = None,
    dropout_shape: float = -1.0,
    chunk_cells: int | None = None,
) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Reference numpy path of :func:`iter_count_chunks` (``method="numpy"``)."""
    props32 = np.asarray(state_props, dtype=np.float32)
    n_states, n_genes = props32.shape
    gfac = np.asarray(bcv_gene_factor, dtype=np.float64)
    cell_state = np.asarray(cell_state)
    lib_size = np.asarray(lib_size, dtype=np.float64)
    n = cell_state.shape[0]
    if chunk_cells is None:
        chunk_cells = max(8, CHUNK_ENTRIES // max(n_genes, 1))
    for start in range(0, n, chunk_cells):
        stop = min(n, start + chunk_cells)
        st = cell_state[start:stop]
        lib = lib_size[start:stop]
        mu32 = props32[st]
        mu32 *= lib.astype(np.float32)[:, None]
        u = rng.random(mu32.shape, dtype=np.float32)
        flat = np.flatnonzero(u < mu32)
        rows = flat // n_genes
        cols = flat - rows * n_genes
        uu = u.ravel()[flat].astype(np.float64)
        mu = mu32.ravel()[flat].astype(np.float64)  # float32 mean: relative error ~6e-8
        del u, flat, mu32
        bcv = (bcv_common + 1.0 / np.sqrt(mu)) * gfac[cols]
        phi = bcv * bcv
        l1p = np.log1p(mu * phi)
        p_nz = -np.expm1(-l1p / phi)
        acc = uu < p_nz
        rows, cols, mu, phi, l1p, p_nz = rows[acc], cols[acc], mu[acc], phi[acc], l1p[acc], p_nz[acc]
        y = _truncated_nb(mu, phi, l1p, p_nz, rng)
        if dropout_mid is not None:
            r = 1.0 / phi
            lam = rng.gamma(r + y, mu * phi / (1.0 + mu * phi))
            with np.errstate(over="ignore", divide="ignore"):
                p_drop = 1.0 / (1.0 + np.exp(-dropout_shape * (np.log(lam) - dropout_mid)))
            kept = rng.random(y.shape[0]) >= p_drop
            rows, cols, y = rows[kept], cols[kept], y[kept]
        indptr = np.zeros(stop - start + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=stop - start), out=indptr[1:])
        yield start, stop, sp.csr_matrix(
            (y.astype(np.float32), cols.astype(np.int32), indptr), shape=(stop - start, n_genes)
        )


# --------------------------------------------------------------------------------------------
# compiled path (numba): per-entry exact sampling, threads over cells, CSR written directly
# --------------------------------------------------------------------------------------------
if _nb is not None:
    _SM_GAMMA = np.uint64(0x9E3779B97F4A7C15)
    _SM_M1 = np.uint64(0xBF58476D1CE4E5B9)
    _SM_M2 = np.uint64(0x94D049BB133111EB)
    _U5, _U7, _U9, _U11, _U17 = (np.uint64(v) for v in (5, 7, 9, 11, 17))
    _U27, _U30, _U31, _U45, _U57, _U64 = (np.uint64(v) for v in (27, 30, 31, 45, 57, 64))
    _TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53
    _WALK_CAP = 1_000_000
    _INV_K = 1.0 / np.arange(1, 2049, dtype=np.float64)  # _INV_K[k - 1] = 1/k
    _jit = _nb.njit(cache=True, nogil=True)

    @_jit
    def _seed_state(key, idx, s):
        """xoshiro256** state for stream ``idx`` of ``key`` via splitmix64 (never all zero)."""
        x = key ^ (idx * _SM_M2)
        for j in range(4):
            x = x + _SM_GAMMA
            z = x
            z = (z ^ (z >> _U30)) * _SM_M1
            z = (z ^ (z >> _U27)) * _SM_M2
            s[j] = z ^ (z >> _U31)

    @_jit
    def _uniform(s):
        """xoshiro256** step -> float64 uniform on [0, 1) with 53 random bits."""
        s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
        m = s1 * _U5
        r = ((m << _U7) | (m >> _U57)) * _U9
        t = s1 << _U17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = (s3 << _U45) | (s3 >> (_U64 - _U45))
        s[0], s[1], s[2], s[3] = s0, s1, s2, s3
        return (r >> _U11) * _TO_UNIT

    @_jit
    def _normal(s):
        """Standard normal, Marsaglia polar method (exact)."""
        while True:
            x = 2.0 * _uniform(s) - 1.0
            y = 2.0 * _uniform(s) - 1.0
            r2 = x * x + y * y
            if 0.0 < r2 < 1.0:
                return x * np.sqrt(-2.0 * np.log(r2) / r2)

    @_jit
    def _gamma(a, s):
        """Gamma(shape a, scale 1): Marsaglia-Tsang; a < 1 via Gamma(a+1) * U^(1/a)."""
        boost = 1.0
        if a < 1.0:
            boost = (1.0 - _uniform(s)) ** (1.0 / a)
            a += 1.0
        d = a - 1.0 / 3.0
        c = 1.0 / np.sqrt(9.0 * d)
        while True:
            x = _normal(s)
            v = 1.0 + c * x
            if v <= 0.0:
                continue
            v = v * v * v
            u = _uniform(s)
            x2 = x * x
            if u < 1.0 - 0.0331 * x2 * x2:
                return d * v * boost
            if np.log(u) < 0.5 * x2 + d * (1.0 - v + np.log(v)):
                return d * v * boost

    @_jit
    def _poisson(lam, s):
        """Poisson(lam): multiplication method below 10, Hoermann's PTRS above (both exact)."""
        if lam <= 0.0:
            return 0
        if lam < 10.0:
            lim = np.exp(-lam)
            k = 0
            p = _uniform(s)
            while p > lim:
                k += 1
                p *= _uniform(s)
            return k
        slam = np.sqrt(lam)
        loglam = np.log(lam)
        b = 0.931 + 2.53 * slam
        a = -0.059 + 0.02483 * b
        invalpha = 1.1239 + 1.1328 / (b - 3.4)
        vr = 0.9277 - 3.6224 / (b - 2.0)
        while True:
            u = _uniform(s) - 0.5
            v = _uniform(s)
            us = 0.5 - abs(u)
            k = np.floor((2.0 * a / us + b) * u + lam + 0.43)
            if us >= 0.07 and v <= vr:
                return int(k)
            if k < 0.0 or (us < 0.013 and v > us):
                continue
            if (np.log(v) + np.log(invalpha) - np.log(a / (us * us) + b)
                    <= -lam + k * loglam - math.lgamma(k + 1.0)):
                return int(k)

    @_jit
    def _nb_gp_at_least(mu, phi, kmin, s):
        """NB(mu, phi) conditioned on >= kmin by Gamma-Poisson draws, rejecting smaller ones."""
        r = 1.0 / phi
        while True:
            y = _poisson(_gamma(r, s) * mu * phi, s)
            if y >= kmin:
                return y

    @_nb.njit(cache=True, parallel=True, nogil=True)
    def _sample_rows(props, inv_sqrt_props, cell_state, lib, gfac, bcv_common, key, idx0,
                     walk_max, do_drop, drop_mid, drop_shape, n_pieces, scratch_f, scratch_i,
                     out_idx, out_val, row_nnz):
        """Counts of cells ``idx0 + i`` (i < C) as CSR pieces.

        Piece w (scheduled dynamically over the threads) handles the cells
        ``lo = w*C//n_pieces <= i < hi`` and writes their nonzeros, row after row, to
        ``out_*[lo*G:]`` (capacity (hi-lo)*G); ``row_nnz[i]`` = nonzeros of row i. Scratch rows
        are per thread (``numba.get_thread_id()``). Each cell has its own random stream, so
        results depend neither on the pieces nor on the threads.
        Per cell: (1) one uniform u per gene; genes with ``u < 2mu/(2+mu)`` (an upper bound of
        ``1 - exp(-mu) >= P(count > 0)``) become candidates; (2) exact ``P(count = 0)`` for the
        candidates, keeping those with ``u < P(count > 0)``; (3) the count of each kept entry.
        (1) and (2) append branch-free (in place: the write index never passes the read index).
        """
        n_cells = cell_state.shape[0]
        n_genes = props.shape[1]
        for w in _nb.prange(n_pieces):
            tid = _nb.get_thread_id()
            cand_g = scratch_i[tid]
            cand_u = scratch_f[tid, 0]
            cand_p0 = scratch_f[tid, 1]
            cand_r = scratch_f[tid, 2]
            cand_mu = scratch_f[tid, 3]
            s = np.empty(4, dtype=np.uint64)
            lo = w * n_cells // n_pieces
            hi = (w + 1) * n_cells // n_pieces
            pos = lo * n_genes
            for i in range(lo, hi):
                _seed_state(key, np.uint64(idx0 + i), s)
                st = cell_state[i]
                lib_i = lib[i]
                isl = 1.0 / np.sqrt(lib_i)
                m = 0
                for g in range(n_genes):  # (1)
                    u = _uniform(s)
                    mu = lib_i * props[st, g]
                    cand_g[m] = g
                    cand_u[m] = u
                    m += u * (2.0 + mu) < 2.0 * mu
                na = 0
                for j in range(m):  # (2)  bcv = (bcv_common + 1/sqrt(mu)) * gfac; r = 1/bcv^2
                    g = cand_g[j]
                    u = cand_u[j]
                    mu = lib_i * props[st, g]
                    b = (bcv_common + isl * inv_sqrt_props[st, g]) * gfac[g]
                    phi = b * b
                    r = 1.0 / phi
                    p0 = math.exp(-math.log(1.0 + mu * phi) * r)  # NB P(0) = (1 + mu phi)^-r
                    cand_g[na] = g
                    cand_u[na] = u
                    cand_p0[na] = p0
                    cand_r[na] = r
                    cand_mu[na] = mu
                    na += u < 1.0 - p0
                n = 0
                for j in range(na):  # (3)
                    u = cand_u[j]
                    p0 = cand_p0[j]
                    r = cand_r[j]
                    mu = cand_mu[j]
                    pp = mu / (r + mu)  # NB "success" probability mu*phi / (1 + mu*phi)
                    # inverse CDF with v = 1 - u: smallest k with sum_{1..k} pmf >= P(y>0) - u
                    wgt = (1.0 - p0) - u
                    pmf = p0 * r * pp  # pmf(1)
                    y = 1
                    if pmf < wgt:  # count >= 2
                        if mu <= walk_max:  # pmf(k) = pmf(k-1) * pp * (k - 1 + r) / k
                            cum = pmf
                            k = 1
                            rm1pp = (r - 1.0) * pp
                            # stop where rounding keeps cum below wgt (u within ~1e-16 of 0):
                            # once pmf < 1e-17 cum, adding terms no longer changes cum
                            while cum < wgt and pmf > 1e-17 * cum and k < _WALK_CAP:
                                k += 1
                                pmf *= pp + rm1pp * (_INV_K[k - 1] if k <= 2048 else 1.0 / k)
                                cum += pmf
                            y = k
                        else:  # NB given count >= 2 (rejection is rare: mu > walk_max)
                            y = _nb_gp_at_least(mu, 1.0 / r, 2, s)
                    if do_drop:
                        lam = _gamma(r + y, s) * pp  # exact posterior of the Gamma mean given y
                        p_drop = 1.0 / (1.0 + np.exp(-drop_shape * (np.log(lam) - drop_mid)))
                        if _uniform(s) < p_drop:
                            continue
                    out_idx[pos + n] = cand_g[j]
                    out_val[pos + n] = y
                    n += 1
                row_nnz[i] = n
                pos += n


def _numba_raw_chunks(props, cell_state, lib_size, bcv_common, gfac, rng, dropout_mid,
                      dropout_shape, chunk_cells, walk_max_mean):
    """Yield ``(start, stop, row_nnz, segments)``; segments: ``(a, b, idx, val)`` = the chunk's
    nonzeros a:b (in row order) as views of reused buffers (copy before the next chunk)."""
    props = np.ascontiguousarray(props, dtype=np.float64)
    n_genes = props.shape[1]
    cell_state = np.ascontiguousarray(cell_state, dtype=np.int64)
    lib_size = np.ascontiguousarray(lib_size, dtype=np.float64)
    gfac = np.ascontiguousarray(gfac, dtype=np.float64)
    n = cell_state.shape[0]
    key = np.uint64(rng.integers(0, 2**63, dtype=np.int64))  # one draw per call
    do_drop = dropout_mid is not None
    mid = float(dropout_mid) if do_drop else 0.0
    cap = min(chunk_cells, n)
    out_idx = np.empty(cap * n_genes, dtype=np.int32)
    out_val = np.empty(cap * n_genes, dtype=np.float32)
    with np.errstate(divide="ignore"):
        inv_sqrt_props = 1.0 / np.sqrt(props)
    n_threads = _nb.get_num_threads()
    scratch_f = np.empty((n_threads, 4, n_genes), dtype=np.float64)
    scratch_i = np.empty((n_threads, n_genes), dtype=np.int32)
    for start in range(0, n, chunk_cells):
        stop = min(n, start + chunk_cells)
        c = stop - start
        # several pieces per thread, handed out one at a time, so that a thread slowed down by
        # other processes on the machine does not hold up the chunk
        n_pieces = min(c, PIECES_PER_THREAD * n_threads)
        row_nnz = np.zeros(c, dtype=np.int64)
        with _nb.parallel_chunksize(1):
            _sample_rows(props, inv_sqrt_props, cell_state[start:stop], lib_size[start:stop],
                         gfac, float(bcv_common), key, np.int64(start), float(walk_max_mean),
                         do_drop, mid, float(dropout_shape), n_pieces, scratch_f, scratch_i,
                         out_idx, out_val, row_nnz)
        segments, a = [], 0
        for w in range(n_pieces):  # piece w's rows lie contiguously from lo*G in out_*
            lo, hi = w * c // n_pieces, (w + 1) * c // n_pieces
            k = int(row_nnz[lo:hi].sum())
            segments.append((a, a + k, out_idx[lo * n_genes: lo * n_genes + k],
                             out_val[lo * n_genes: lo * n_genes + k]))
            a += k
        yield start, stop, row_nnz, segments


def _iter_count_chunks_numba(*args):
    n_genes = np.shape(args[0])[1]
    for start, stop, row_nnz, segments in _numba_raw_chunks(*args):
        indptr = np.zeros(stop - start + 1, dtype=np.int64)
        np.cumsum(row_nnz, out=indptr[1:])
        nnz = int(indptr[-1])
        indices = np.empty(nnz, dtype=np.int32)
        data = np.empty(nnz, dtype=np.float32)
        for a, b, idx, val in segments:
            indices[a:b] = idx
            data[a:b] = val
        yield start, stop, sp.csr_matrix((data, indices, indptr), shape=(stop - start, n_genes))


def _sample_counts_numba(*args) -> sp.csr_matrix:
    """All chunks straight into one CSR (one copy; over-allocated capacity is never touched,
    so it costs address space, not memory)."""
    n_genes = np.shape(args[0])[1]
    n = np.shape(args[1])[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = data = None
    nnz = 0
    for start, stop, row_nnz, segments in _numba_raw_chunks(*args):
        np.cumsum(row_nnz, out=indptr[start + 1: stop + 1])
        indptr[start + 1: stop + 1] += nnz
        need = int(indptr[stop])
        if indices is None or need > indices.shape[0]:
            est = int(need / stop * n * 1.25) + 1024  # nonzeros so far, extrapolated
            grown_i = np.empty(max(est, need), dtype=np.int32)
            grown_v = np.empty(max(est, need), dtype=np.float32)
            if indices is not None:
                grown_i[:nnz], grown_v[:nnz] = indices[:nnz], data[:nnz]
            indices, data = grown_i, grown_v
        for a, b, idx, val in segments:
            indices[nnz + a: nnz + b] = idx
            data[nnz + a: nnz + b] = val
        nnz = need
    if indices is None:
        return sp.csr_matrix((n, n_genes), dtype=np.float32)
    return sp.csr_matrix((data[:nnz], indices[:nnz], indptr), shape=(n, n_genes))


def iter_count_chunks(
    state_props: np.ndarray,
    cell_state: np.ndarray,
    lib_size: np.ndarray,
    *,
    bcv_common: float,
    bcv_gene_factor: np.ndarray,
    rng: np.random.Generator,
    dropout_mid: float | None = None,
    dropout_shape: float = -1.0,
    chunk_cells: int | None = None,
    method: str | None = None,
) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """Yield ``(start, stop, counts)`` for consecutive cell chunks.

    state_props: (S, G) expression proportions per cell state (rows sum to 1).
    cell_state: (N,) int state of each cell; lib_size: (N,) expected library size (UMIs).
    Expected count of cell c, gene g is ``lib_size[c] * state_props[cell_state[c], g]``.
    counts: CSR float32 (stop-start, G). ``dropout_mid=None`` disables dropout.
    ``method``: "numba" (compiled, default when numba imports) or "numpy" (reference); both
    exact, with different random streams (see the module docstring).
    """
    method = method or DEFAULT_METHOD
    if method not in ("numba", "numpy"):
        raise ValueError(f"method must be 'numba' or 'numpy', got {method!r}")
    n_genes = np.shape(state_props)[1]
    if chunk_cells is None:
        chunk_cells = max(8, CHUNK_ENTRIES // max(n_genes, 1))
    if chunk_cells < 1:
        raise ValueError(f"chunk_cells must be >= 1, got {chunk_cells}")
    if method == "numpy":
        return _iter_count_chunks_numpy(
            state_props, cell_state, lib_size, bcv_common=bcv_common,
            bcv_gene_factor=bcv_gene_factor, rng=rng, dropout_mid=dropout_mid,
            dropout_shape=dropout_shape, chunk_cells=chunk_cells)
    if _nb is None:
        raise RuntimeError("method='numba' needs numba (pip install numba)")
    return _iter_count_chunks_numba(state_props, cell_state, lib_size, bcv_common,
                                    bcv_gene_factor, rng, dropout_mid, dropout_shape,
                                    chunk_cells, NUMBA_WALK_MAX_MEAN)


def sample_counts(state_means: np.ndarray, cell_state, lib_size, **kwargs) -> sp.csr_matrix:
    """Whole count matrix (N, G) as CSR float32; ``state_means`` (S, G) need not be normalised.

    Rows are normalised to proportions, as Splat does with ``cell.means / colSums``.
    Keyword arguments go to :func:`iter_count_chunks`; the numba path writes all chunks
    straight into the result (same counts as concatenating :func:`iter_count_chunks`).
    """
    means = np.asarray(state_means, dtype=np.float64)
    props = means / means.sum(axis=1, keepdims=True)
    method = kwargs.get("method") or DEFAULT_METHOD
    if method == "numba" and _nb is not None:
        kw = dict(kwargs)
        kw.pop("method", None)
        chunk_cells = kw.pop("chunk_cells", None)
        if chunk_cells is None:
            chunk_cells = max(8, CHUNK_ENTRIES // max(props.shape[1], 1))
        if chunk_cells < 1:
            raise ValueError(f"chunk_cells must be >= 1, got {chunk_cells}")
        return _sample_counts_numba(
            props, cell_state, lib_size, kw.pop("bcv_common"), kw.pop("bcv_gene_factor"),
            kw.pop("rng"), kw.pop("dropout_mid", None), kw.pop("dropout_shape", -1.0),
            chunk_cells, NUMBA_WALK_MAX_MEAN, **kw)
    parts = [c for _, _, c in iter_count_chunks(props, cell_state, lib_size, **kwargs)]
    return stack_csr_rows(parts, means.shape[1])


def stack_csr_rows(parts: list, n_cols: int) -> sp.csr_matrix:
    """Row-stack CSR float32 chunks (as yielded by :func:`iter_count_chunks`) with one copy.

    Faster than ``scipy.sparse.vstack`` (no checks or conversions); indices int32, indptr int64.
    """
    if not parts:
        return sp.csr_matrix((0, n_cols), dtype=np.float32)
    n_rows = sum(p.shape[0] for p in parts)
    nnz = sum(p.nnz for p in parts)
    indptr = np.empty(n_rows + 1, dtype=np.int64)
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    indptr[0] = 0
    r = a = 0
    for p in parts:
        n, k = p.shape[0], p.nnz
        indptr[r + 1: r + n + 1] = p.indptr[1:] + a
        indices[a:a + k] = p.indices
        data[a:a + k] = p.data
        r, a = r + n, a + k
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
