"""Python baselines and controls: cheap, deterministic given ``ctx.seed``."""
from __future__ import annotations

import numpy as np

from .shared import dense


def _pca(X, n_comps: int, seed: int):
    from sklearn.decomposition import PCA

    n = int(max(2, min(n_comps, X.shape[0] - 1, X.shape[1] - 1)))
    return PCA(n_components=n, svd_solver="randomized", random_state=seed).fit(X)


# ---------------------------------------------------------------------------- methods


def pca_embed(adata, ctx):
    X = dense(adata.X)
    return _pca(X, ctx.n_comps, ctx.seed).transform(X)


def pca_map(ref, query, ctx):
    """PCA fitted on the reference only; the query is projected."""
    pca = _pca(dense(ref.X), ctx.n_comps, ctx.seed)
    return pca.transform(dense(ref.X)), pca.transform(dense(query.X))


def harmony_embed(adata, ctx, *, max_iter_harmony: int = 10):
    import harmonypy

    pcs = pca_embed(adata, ctx)
    ho = harmonypy.run_harmony(pcs, adata.obs[[ctx.batch_key]], [ctx.batch_key],
                               max_iter_harmony=max_iter_harmony, random_state=ctx.seed)
    Z = np.asarray(ho.Z_corr)
    # harmonypy returns (d, n) in older releases and (n, d) in newer ones
    return Z.T if Z.shape[0] == pcs.shape[1] and Z.shape[1] == pcs.shape[0] else Z


def logreg_annotate(train, test, ctx, *, C: float = 1.0, max_iter: int = 1000):
    """Logistic regression on PCA (fitted on the training cells): the paper-style linear bound."""
    from sklearn.linear_model import LogisticRegression

    pca = _pca(dense(train.X), ctx.n_comps, ctx.seed)
    y = train.obs[ctx.label_key].astype(str).to_numpy()
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=ctx.seed)
    clf.fit(pca.transform(dense(train.X)), y)
    return clf.predict_proba(pca.transform(dense(test.X))), list(clf.classes_)


# ---------------------------------------------------------------------------- controls


def random_embed(adata, ctx):
    return np.random.default_rng(ctx.seed).normal(size=(adata.n_obs, ctx.n_comps)).astype(np.float32)


def random_map(ref, query, ctx):
    rng = np.random.default_rng(ctx.seed)
    return rng.normal(size=(ref.n_obs, ctx.n_comps)), rng.normal(size=(query.n_obs, ctx.n_comps))


def _classes(train, ctx) -> list[str]:
    return sorted(set(train.obs[ctx.label_key].astype(str)))


def random_annotate(train, test, ctx):
    """Random class probabilities (Dirichlet): lower bound of every annotation metric."""
    classes = _classes(train, ctx)
    return np.random.default_rng(ctx.seed).dirichlet(np.ones(len(classes)), size=test.n_obs), classes


def majority_annotate(train, test, ctx):
    """Every cell gets the training set's most frequent label with its training frequency."""
    counts = train.obs[ctx.label_key].astype(str).value_counts()
    classes = sorted(counts.index)
    p = (counts.reindex(classes) / counts.sum()).to_numpy()
    return np.tile(p, (test.n_obs, 1)), classes


def true_labels_annotate(train, test, ctx):
    """Positive control: the test cells' own labels (uniform over the classes for a label
    absent from training, i.e. perfect rejection of unseen types)."""
    classes = _classes(train, ctx)
    index = {c: i for i, c in enumerate(classes)}
    probs = np.full((test.n_obs, len(classes)), 1.0 / len(classes))
    for row, label in enumerate(test.obs[ctx.label_key].astype(str)):
        if label in index:
            probs[row] = 0.0
            probs[row, index[label]] = 1.0
    return probs, classes


def _one_hot_labels(a, ctx, categories) -> np.ndarray:
    rng = np.random.default_rng(ctx.seed)
    codes = {c: i for i, c in enumerate(categories)}
    out = np.zeros((a.n_obs, max(2, len(categories))), dtype=np.float32)
    out[np.arange(a.n_obs), [codes[c] for c in a.obs[ctx.label_key].astype(str)]] = 1.0
    return out + rng.normal(scale=0.05, size=out.shape).astype(np.float32)


def true_embedding_embed(adata, ctx):
    """Positive control: one-hot cell-type labels plus a little noise (no batch signal at all)."""
    return _one_hot_labels(adata, ctx, sorted(set(adata.obs[ctx.label_key].astype(str))))


def true_embedding_map(ref, query, ctx):
    cats = sorted(set(ref.obs[ctx.label_key].astype(str)) | set(query.obs[ctx.label_key].astype(str)))
    return _one_hot_labels(ref, ctx, cats), _one_hot_labels(query, ctx, cats)


def random_cluster(adata, ctx):
    rng = np.random.default_rng(ctx.seed)
    n_types = adata.obs[ctx.label_key].nunique()
    return rng.integers(0, max(2, n_types), size=(adata.n_obs, len(ctx.settings)))


def true_labels_cluster(adata, ctx):
    codes = adata.obs[ctx.label_key].astype("category").cat.codes.to_numpy()
    return np.tile(codes[:, None], (1, len(ctx.settings)))


def mean_impute(ref, query, ctx):
    """Negative control: every query cell gets the reference mean of each feature."""
    return np.tile(np.asarray(ref.obsm[ctx.feature_key]).mean(axis=0), (query.n_obs, 1))


def true_values_impute(ref, query, ctx):
    return np.asarray(query.obsm[ctx.feature_key], dtype=np.float32)

