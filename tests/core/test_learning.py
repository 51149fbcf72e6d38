"""Does pretraining learn? 5-NN accuracy of the embedding on held-out cells, next to PCA."""

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from synthetic_data import shared_data_dir, simulate_groups

from concerto_core import Concerto, ConcertoConfig

SHARED = shared_data_dir()


def knn_accuracy(train_x, train_y, test_x, test_y, k=5):
    clf = KNeighborsClassifier(k, metric="cosine").fit(train_x, train_y)
    return float((clf.predict(test_x) == np.asarray(test_y)).mean())


def pca_fit_transform(train, test, n=50):
    svd = TruncatedSVD(min(n, train.shape[1] - 1), random_state=0).fit(train.X)
    return svd.transform(train.X), svd.transform(test.X)


@pytest.mark.slow
def test_embedding_separates_groups_on_held_out_cells():
    adata = simulate_groups(n_cells=2500, n_genes=400, n_groups=5, n_batches=2, seed=7)
    rng = np.random.default_rng(0)
    test_mask = rng.random(adata.n_obs) < 0.2
    train, test = adata[~test_mask].copy(), adata[test_mask].copy()
    model = Concerto(train, batch_key="batch", config=ConcertoConfig(epochs=3, seed=0), verbose=False)
    model.train()
    z_train, z_test = model.get_latent_representation(train), model.get_latent_representation(test)
    acc = knn_accuracy(z_train, train.obs["group"], z_test, test.obs["group"])
    p_train, p_test = pca_fit_transform(train, test)
    acc_pca = knn_accuracy(p_train, train.obs["group"], p_test, test.obs["group"])
    print(f"\nheld-out 5-NN accuracy: Concerto {acc:.3f}  PCA {acc_pca:.3f}")
    assert acc >= 0.9


@pytest.mark.slow
@pytest.mark.realdata
def test_pbmc3k_real_data():
    path = SHARED / "pbmc3k_labeled.h5ad"
    if not path.exists():
        pytest.skip(f"real-data check skipped: {path} not found (needs <repo>/../shared/data or $CONCERTO_SHARED_DATA)")
    adata = ad.read_h5ad(path)
    labels = adata.obs["classified"].astype(str).to_numpy()
    accs, accs_pca = [], []
    folds = StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(labels)), labels)
    for fold, (tr, te) in enumerate(folds):
        train, test = adata[tr].copy(), adata[te].copy()
        model = Concerto(train, config=ConcertoConfig(epochs=5, seed=fold), verbose=False)
        model.train()
        accs.append(knn_accuracy(model.get_latent_representation(train), labels[tr],
                                 model.get_latent_representation(test), labels[te]))
        p_train, p_test = pca_fit_transform(train, test)
        accs_pca.append(knn_accuracy(p_train, labels[tr], p_test, labels[te]))
    print(f"\npbmc3k 5-fold 5-NN accuracy: Concerto {np.mean(accs):.3f} ± {np.std(accs):.3f}   "
          f"PCA(50) {np.mean(accs_pca):.3f} ± {np.std(accs_pca):.3f}")
    # Labels come from clustering the PCA space (Seurat tutorial), which favours the PCA baseline;
    # the floor checks the embedding is far above the majority-class rate (~0.45).
    assert np.mean(accs) >= 0.7
