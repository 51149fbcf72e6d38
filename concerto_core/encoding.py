"""Input encoding: AnnData -> per-cell (gene index, value) lists, and gene vocabularies.

The teacher reads, for every cell, the indices of its expressed genes and their values
(Methods, "Input encoding scheme"); the student reads the same values as a count vector.
We keep each modality as a CSR matrix whose columns follow the model's gene vocabulary
and cut padded index/value blocks per mini-batch, so the whole matrix is never dense.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger("concerto_core")

#: Default minimum fraction of the vocabulary a query must share before we refuse it.
DEFAULT_MIN_GENE_OVERLAP = 0.5


@dataclass(frozen=True)
class AlignmentReport:
    """How a query's features matched a model vocabulary."""

    modality: str
    n_vocabulary: int
    n_query: int
    n_shared: int
    n_missing: int  # vocabulary genes absent from the query (treated as zero)
    n_extra: int  # query genes not in the vocabulary (dropped)

    @property
    def overlap(self) -> float:
        return self.n_shared / self.n_vocabulary if self.n_vocabulary else 0.0

    def to_dict(self) -> dict:
        return {
            "modality": self.modality,
            "n_vocabulary": self.n_vocabulary,
            "n_query": self.n_query,
            "n_shared": self.n_shared,
            "n_missing": self.n_missing,
            "n_extra": self.n_extra,
            "overlap": round(self.overlap, 6),
        }

    def __str__(self) -> str:
        return (
            f"[{self.modality}] {self.n_shared}/{self.n_vocabulary} vocabulary features found in the "
            f"query ({100 * self.overlap:.1f}%); {self.n_missing} missing (set to 0), "
            f"{self.n_extra} extra query features dropped"
        )


class GeneVocabulary:
    """Ordered feature names of one modality, fitted on training data and saved with the model."""

    def __init__(self, names):
        names = np.asarray(list(names), dtype=object).astype(str)
        if names.size == 0:
            raise ValueError("a gene vocabulary needs at least one gene")
        dup = pd.Index(names)[pd.Index(names).duplicated()]
        if len(dup):
            raise ValueError(
                f"duplicate feature names in the training data: {list(dup[:5])} "
                f"({len(dup)} in all); make them unique first (e.g. adata.var_names_make_unique())"
            )
        self.names = names
        self._index = pd.Index(names)

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other) -> bool:
        return isinstance(other, GeneVocabulary) and np.array_equal(self.names, other.names)

    def positions(self, query_names) -> np.ndarray:
        """For each vocabulary gene, its column in ``query_names`` or -1."""
        q = pd.Index(np.asarray(list(query_names)).astype(str))
        if q.has_duplicates:
            dup = q[q.duplicated()]
            raise ValueError(f"duplicate feature names in the query: {list(dup[:5])}; make them unique first")
        return q.get_indexer(self._index)

    def align(self, X: sp.csr_matrix, query_names, modality: str = "rna", min_overlap: float = DEFAULT_MIN_GENE_OVERLAP):
        """Reorder query columns to the vocabulary (missing genes -> 0, extra genes dropped).

        Returns the aligned CSR matrix (n_cells, len(vocabulary)) and an AlignmentReport.
        Raises ValueError when fewer than ``min_overlap`` of the vocabulary is shared.
        """
        query_names = np.asarray(list(query_names)).astype(str)
        pos = self.positions(query_names)
        found = pos >= 0
        report = AlignmentReport(
            modality=modality,
            n_vocabulary=len(self),
            n_query=len(query_names),
            n_shared=int(found.sum()),
            n_missing=int((~found).sum()),
            n_extra=int(len(query_names) - found.sum()),
        )
        if report.n_shared == 0:
            raise ValueError(
                f"[{modality}] the query shares no features with the model's vocabulary of {len(self)} "
                f"(first model genes: {list(self.names[:3])}, first query genes: {list(query_names[:3])}); "
                "check that both use the same gene identifiers (symbols vs Ensembl IDs, species)"
            )
        if report.overlap < min_overlap:
            raise ValueError(
                f"{report}; this is below min_gene_overlap={min_overlap}. Use the same gene identifiers as "
                "the reference, or lower min_gene_overlap if the missing genes are expected"
            )
        if report.n_missing or report.n_extra or not np.array_equal(pos, np.arange(len(self))):
            # Column selection as a sparse product keeps everything sparse.
            sel = sp.csr_matrix(
                (np.ones(found.sum(), dtype=np.float32), (pos[found], np.flatnonzero(found))),
                shape=(X.shape[1], len(self)),
            )
            X = (X @ sel).tocsr()
            X.sort_indices()
        return X, report


def as_csr(X, what: str = "X") -> sp.csr_matrix:
    """Validate a cells x features matrix and return it as float32 CSR without explicit zeros.

    Raises ValueError for an empty matrix, non-numeric, NaN/inf or negative values.
    """
    if X is None:
        raise ValueError(f"{what} is missing")
    if hasattr(X, "to_memory"):  # backed sparse datasets
        X = X.to_memory()
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    if sp.issparse(X):
        kind = X.dtype.kind
    else:
        X = np.asarray(X)
        kind = X.dtype.kind
    if kind not in "fiub":
        raise ValueError(f"{what} has dtype {X.dtype}; expected numeric (float or integer) expression values")
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-dimensional (cells x features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {X.shape}); need at least one cell and one feature")
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    else:
        X = sp.csr_matrix(X.astype(np.float32, copy=False))
    if not np.isfinite(X.data).all():
        raise ValueError(f"{what} contains NaN or infinite values; remove or impute them first")
    if X.data.size and X.data.min() < 0:
        raise ValueError(
            f"{what} contains negative values (min {X.data.min():.3g}); Concerto expects counts or "
            "log-normalised values, not scaled/centred data (do not run sc.pp.scale first)"
        )
    X.eliminate_zeros()
    X.sort_indices()
    return X


def looks_like_counts(X: sp.csr_matrix, n: int = 10000) -> bool:
    """True when the stored values are integers with a large maximum (raw counts, not log values)."""
    d = X.data[:n]
    return d.size > 0 and np.allclose(d, np.round(d)) and d.max() > 30


def flat_batch(X: sp.csr_matrix, rows: np.ndarray):
    """The expressed features of ``rows`` as flat (ragged) arrays, without padding.

    Returns ``idx`` (nnz,) int32 feature indices, ``val`` (nnz,) float32 values,
    ``row`` (nnz,) int32 position of each entry's cell in ``rows`` (sorted), and
    ``length`` (B,) int32 expressed features per cell. Padding to the longest cell would
    cost 2-4x more work on real data, whose library sizes vary widely.
    """
    sub = X[np.asarray(rows)]
    length = np.diff(sub.indptr).astype(np.int32)
    row = np.repeat(np.arange(len(length), dtype=np.int32), length)
    return sub.indices.astype(np.int32, copy=False), sub.data.astype(np.float32, copy=False), row, length


def encode_sources(values, categories=None):
    """Map source labels to integer ids; unseen labels get -1.

    Returns (codes int32, categories list[str]). With ``categories=None`` they are fitted
    (sorted unique labels).
    """
    s = pd.Series(values)
    if s.isna().any():
        raise ValueError(f"the batch/source column has {int(s.isna().sum())} missing values; fill them first")
    s = s.astype(str)
    if categories is None:
        categories = sorted(s.unique().tolist())
    lookup = {c: i for i, c in enumerate(categories)}
    codes = s.map(lambda v: lookup.get(v, -1)).to_numpy(dtype=np.int32)
    return codes, list(categories)


def warn_once(message: str) -> None:
    """Warn once (a UserWarning, which Python's warning filters show once per call site).

    The message is not also logged: a configured logging handler would print it twice.
    """
    warnings.warn(message, UserWarning, stacklevel=3)


#: Values the model may be fed at query time differ from training ones by this factor at most
#: (99th percentile of the stored non-zero values) before a scale mismatch is reported.
SCALE_TOLERANCE = 3.0
SCALE_CHECKS = ("warn", "raise", "ignore")


@dataclass(frozen=True)
class ValueScale:
    """What the stored values of a matrix look like: raw counts or transformed, and how large.

    Measured on (up to ``n``, evenly spaced) stored non-zero values: ``integer_fraction`` of
    them that are whole numbers, their ``median`` and 99th percentile ``p99``. Raw counts are
    almost all integers; log-normalised values almost never are; a x1000 rescaling moves p99.
    """

    integer_fraction: float
    median: float
    p99: float

    @classmethod
    def of(cls, X: sp.csr_matrix, n: int = 200_000) -> "ValueScale | None":
        data = X.data
        if data.size == 0:
            return None
        d = data[np.linspace(0, data.size - 1, min(n, data.size)).astype(np.int64)].astype(np.float64)
        return cls(float(np.mean(d == np.round(d))), float(np.median(d)), float(np.percentile(d, 99)))

    @property
    def kind(self) -> str:
        return "raw counts" if self.integer_fraction >= 0.9 else "non-integer (e.g. log-normalised) values"

    def to_dict(self) -> dict:
        return {"integer_fraction": round(self.integer_fraction, 6), "median": self.median, "p99": self.p99}

    @classmethod
    def from_dict(cls, values) -> "ValueScale | None":
        return None if not values else cls(float(values["integer_fraction"]), float(values["median"]), float(values["p99"]))

    def mismatch(self, query: "ValueScale | None") -> str | None:
        """Why ``query`` values do not look like the values this scale was measured on, or None."""
        if query is None:
            return None
        counts_model, counts_query = self.integer_fraction >= 0.9, query.integer_fraction >= 0.9
        if counts_model != counts_query and abs(self.integer_fraction - query.integer_fraction) > 0.4:
            return (f"the model was trained on {self.kind} ({100 * self.integer_fraction:.0f}% integers), the query "
                    f"holds {query.kind} ({100 * query.integer_fraction:.0f}% integers)")
        ratio = query.p99 / self.p99 if self.p99 > 0 else np.inf
        if not 1 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE:
            return (f"the query's values are on another scale than the training values (99th percentile of "
                    f"non-zero values {query.p99:.3g} vs {self.p99:.3g} in training, x{ratio:.3g})")
        return None


def check_value_scale(expected: "ValueScale | None", X: sp.csr_matrix, modality: str, mode: str = "warn") -> None:
    """Compare a query's values (aligned to the vocabulary) with the training values.

    ``mode``: ``'warn'`` (default), ``'raise'`` (ValueError) or ``'ignore'``.
    """
    if mode not in SCALE_CHECKS:
        raise ValueError(f"scale_check={mode!r}; allowed: {SCALE_CHECKS}")
    if mode == "ignore" or expected is None:
        return
    problem = expected.mismatch(ValueScale.of(X))
    if problem is None:
        return
    message = (f"[{modality}] {problem}. Embeddings and label transfer are unreliable on mismatched values: "
               "preprocess the query like the training data (e.g. sc.pp.normalize_total(target_sum=1e4); "
               "sc.pp.log1p), or pass scale_check='ignore' if the difference is intended")
    if mode == "raise":
        raise ValueError(message)
    warnings.warn(message, UserWarning, stacklevel=4)
