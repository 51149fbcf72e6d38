"""Annotation competitors of the paper's Fig 2 (task ``annotate``: labelled training cells ->
class probabilities of the held-out cells; signatures in :mod:`.api`).

* ``singler``       SingleR (R/Bioconductor, Debian's r-bioc-singler) through rpy2;
* ``scibet_reimpl`` a re-implementation of SciBet's published algorithm (the R package cannot
                    be installed here): E-test gene selection + multinomial likelihood;
* ``concerto_e2e``  Concerto's network trained with the supervised loss only (no pretraining);
* ``logreg_expr``   logistic regression on the log-normalised expression (linear bound).

Inputs hold log-normalised values (normalised to 10,000 per cell, log1p) on the fold's genes.
Every function fits on ``train`` only and predicts ``test`` (validation + test cells).
Moana (:mod:`.moana`, its own legacy interpreter), MARS (:mod:`.mars`, a GitHub clone) and Cell
BLAST (:mod:`.cell_blast`) have their own modules.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..columns import BATCH
from .shared import dense, scaled_counts


def _dense(X) -> np.ndarray:
    return dense(X, np.float64)


def _labels(train, ctx) -> np.ndarray:
    return train.obs[ctx.label_key].astype(str).to_numpy()


# --------------------------------------------------------------------------- logistic regression
def logreg_expr_annotate(train, test, ctx, *, C: float = 1.0, max_iter: int = 500):
    """Multinomial logistic regression on every gene of the fold (log-normalised values of the
    training cells; no PCA): the strong linear bound of the OpenProblems label projection."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=ctx.seed)
    clf.fit(sp.csr_matrix(train.X), _labels(train, ctx))
    return clf.predict_proba(sp.csr_matrix(test.X)), [str(c) for c in clf.classes_]


# --------------------------------------------------------------------------------- SciBet (re-impl.)
def _type_means(expr: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(C, G) mean expression of each cell type and the C type names (sorted)."""
    classes = sorted(set(labels))
    return np.stack([expr[labels == c].mean(axis=0) for c in classes]), classes


def etest_scores(expr: np.ndarray, labels) -> np.ndarray:
    """SciBet's E-test statistic per gene (Li et al. 2020): with lambda_ig the mean expression
    of gene g in type i (non-log scale), ``log2(mean_i(lambda_ig + 1)) - mean_i log2(lambda_ig + 1)``.
    It is the entropy difference between the pooled and the per-type (exponential) models:
    zero for a gene expressed alike in every type, large for a type-specific gene. (G,)"""
    means, _ = _type_means(np.asarray(expr, dtype=np.float64), np.asarray(labels).astype(str))
    return np.log2(np.mean(means + 1.0, axis=0)) - np.mean(np.log2(means + 1.0), axis=0)


def scibet_fit(expr: np.ndarray, labels, n_genes: int = 1000):
    """Fit SciBet: (selected gene indices (k,), (C, k) log multinomial parameters, C classes).
    ``expr`` is (cells, genes) normalised expression on the linear scale."""
    expr = np.asarray(expr, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    if n_genes < 1:
        raise ValueError(f"n_genes must be >= 1 (got {n_genes})")
    scores = etest_scores(expr, labels)
    genes = np.sort(np.argsort(-scores, kind="stable")[:min(n_genes, expr.shape[1])])
    means, classes = _type_means(expr[:, genes], labels)
    # multinomial parameters of each type over the selected genes (pseudocount 1, as the E-test)
    log_p = np.log(means + 1.0) - np.log((means + 1.0).sum(axis=1, keepdims=True))
    return genes, log_p, classes


def scibet_log_likelihood(expr: np.ndarray, genes: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """(cells, C) multinomial log-likelihood ``sum_g x_g log p_ig`` of each cell under each type,
    up to a constant; ``x`` = the cell's normalised expression (linear scale) on the selected
    genes. (A log1p-tempered ``x`` gave 0.69-0.95 instead of 0.98-1.0 accuracy on the PBMC45k
    stand-in's folds, so the model's own count scale is kept.)"""
    return np.asarray(expr, dtype=np.float64)[:, genes] @ log_p.T


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def scibet_annotate(train, test, ctx, *, n_genes: int = 1000):
    """Re-implementation of SciBet (not the R package): E-test selects ``n_genes`` genes on the
    training cells, each type is a multinomial over them, a cell goes to the most likely type.
    Probabilities = the posterior under a uniform prior (softmax of the log-likelihoods); on
    expression normalised to 10,000 per cell it is nearly one-hot, so its confidence hardly
    separates unseen types (the R package instead scores confidence against a null dataset)."""
    genes, log_p, classes = scibet_fit(scaled_counts(train.X), _labels(train, ctx), n_genes)
    return _softmax(scibet_log_likelihood(scaled_counts(test.X), genes, log_p)), classes


# ------------------------------------------------------------------------------------- Concerto-E2E
def concerto_e2e_annotate(train, test, ctx, *, epochs: int = 5, lr: float = 1e-3, batch_size: int = 32,
                          source_aware: bool = True):
    """Concerto-E2E (paper Fig 2a/2b): the same teacher network + softmax head as ``concerto``,
    trained from random weights with the supervised loss only (no contrastive pretraining).
    More epochs than fine-tuning's one, since nothing is pretrained."""
    from .concerto import set_threads

    set_threads(ctx.threads)
    from concerto_core import ConcertoClassifier

    clf = ConcertoClassifier.end_to_end(train, ctx.label_key, batch_key=BATCH if source_aware else None,
                                        epochs=epochs, lr=lr, batch_size=batch_size, seed=ctx.seed)
    pred = clf.predict(test)
    return np.asarray(pred.probs, dtype=np.float64), [str(c) for c in pred.categories]


# ------------------------------------------------------------------------------------------ SingleR
def singler_probabilities(scores: np.ndarray, classes, labels, temperature: float) -> np.ndarray:
    """Class probabilities from SingleR's output. SingleR gives per-label correlation scores
    (cells, C) and a final label per cell after its fine-tuning rounds; it has no probabilities.
    Here: softmax(scores / temperature); when fine-tuning changed the call, the final label's
    entry is swapped with the top entry, so the argmax is SingleR's label and the confidence
    (max probability) reflects how far the best score stands above the others."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    return label_on_top(_softmax(np.asarray(scores, dtype=np.float64) / temperature), classes, labels)


def label_on_top(probs: np.ndarray, classes, labels) -> np.ndarray:
    """(cells, C) ``probs`` with each row's top entry swapped with the entry of the tool's own
    final label where the two differ, so the argmax is the tool's label (SingleR, Moana)."""
    index = {c: i for i, c in enumerate(classes)}
    final = np.array([index[str(v)] for v in labels])
    top = probs.argmax(axis=1)
    rows = np.flatnonzero(final != top)
    a, b = probs[rows, top[rows]].copy(), probs[rows, final[rows]].copy()
    probs[rows, top[rows]], probs[rows, final[rows]] = b, a
    return probs


def singler_annotate(train, test, ctx, *, de_method: str = "classic", temperature: float = 0.05,
                     fine_tune: bool = True):
    """SingleR (R) with the training cells as a single-cell reference on the log-normalised
    values. ``de.method`` 'classic' (SingleR's default: marker genes from the log-fold changes of
    per-label medians); 'wilcox', recommended for single-cell references, needs R's scran,
    which Debian's r-bioc-singler does not pull in."""
    import rpy2.robjects as ro

    from .seurat import put_sparse_matrix, r_library

    put_sparse_matrix("ref_m", train.X, train.var_names, train.obs_names)
    put_sparse_matrix("test_m", test.X, test.var_names, test.obs_names)
    g = ro.globalenv
    g["ref_labels"] = ro.StrVector(_labels(train, ctx).tolist())
    g["de_method"] = de_method
    g["fine_tune"] = bool(fine_tune)
    g["seed"] = int(ctx.seed)
    res = ro.r(r_library("SingleR") + """
        set.seed(seed)
        pred <- SingleR(test = test_m, ref = ref_m, labels = ref_labels, de.method = de_method,
                        fine.tune = fine_tune)
        list(scores = as.matrix(pred$scores), classes = colnames(pred$scores), labels = pred$labels)
    """)
    classes = [str(c) for c in res.rx2("classes")]
    scores = np.array(res.rx2("scores"), dtype=np.float64).reshape(test.n_obs, len(classes), order="F")
    labels = [str(v) for v in res.rx2("labels")]
    return singler_probabilities(scores, classes, labels, temperature), classes
