"""scDeepCluster (paper Fig 3a, 3b): GitHub source only, found through SCDEEPCLUSTER_HOME. Without
it the method is reported not_installed with what to do; with it, the adapter clusters three
separable groups (run only where the clone is present)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from concerto_workflow import figures, outputs
from concerto_workflow.columns import NOT_INSTALLED, ROLE, TRAIN
from concerto_workflow.methods import RunContext, missing_dependencies, scdeepcluster
from concerto_workflow.methods.runner import run_method


@pytest.fixture
def no_cache():
    missing_dependencies.cache_clear()
    yield
    missing_dependencies.cache_clear()


def _groups(n_per=60, n_genes=40, seed=0) -> ad.AnnData:
    """3 groups of cells, each with its own 10 highly expressed genes; X log-normalised as in a fold."""
    rng = np.random.default_rng(seed)
    rates = np.full((3, n_genes), 1.0)
    for g in range(3):
        rates[g, g * 10:(g + 1) * 10] = 12.0
    counts = rng.poisson(np.repeat(rates, n_per, axis=0) * rng.uniform(0.7, 1.3, size=(3 * n_per, 1)))
    norm = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    obs = pd.DataFrame({"cell_type": np.repeat(["a", "b", "c"], n_per), "batch": "b0", "tech": "t0", ROLE: TRAIN},
                       index=[f"c{i}" for i in range(3 * n_per)])
    return ad.AnnData(sp.csr_matrix(norm, dtype=np.float32), obs=obs,
                      var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def test_without_the_source_it_is_not_installed_with_what_to_do(tmp_path, monkeypatch, no_cache):
    monkeypatch.delenv(scdeepcluster.ENV_VAR, raising=False)
    assert "SCDEEPCLUSTER_HOME is not set" in " ".join(missing_dependencies("scdeepcluster"))
    cells = tmp_path / "cells.h5ad"
    _groups(n_per=5).write_h5ad(cells)
    out = str(tmp_path / "out.h5ad")
    status = run_method(method="scdeepcluster", task="cluster", cells_path=str(cells), output=out,
                        provenance=dict(experiment="e", dataset="d", split="s", fold="all", preprocessing="p",
                                        log="l"), params={}, ctx=RunContext(settings=(7, 8)))
    reason = outputs.read_output(out, "cluster").uns["reason"]
    assert status == NOT_INSTALLED and "git clone https://github.com/ttgump/scDeepCluster_pytorch" in reason

    monkeypatch.setenv(scdeepcluster.ENV_VAR, str(tmp_path))  # a directory without the tool's scripts
    missing_dependencies.cache_clear()
    assert "has no scDeepCluster.py, layers.py, preprocess.py" in " ".join(missing_dependencies("scdeepcluster"))
    with pytest.raises(ImportError, match="SCDEEPCLUSTER_HOME="):
        scdeepcluster.load_source()


def test_settings_must_be_numbers_of_clusters():
    assert scdeepcluster.numbers_of_clusters(("7", 8.0, 9), 100) == [7, 8, 9]
    for bad in ((0.4,), (1,), (100,), ()):
        with pytest.raises(ValueError, match="number"):
            scdeepcluster.numbers_of_clusters(bad, 100)


def test_own_settings_are_drawn_at_the_resolutions_and_umap_columns_fall_back():
    rows = pd.DataFrame({"method": ["pca"] * 3 + ["scdeepcluster"] * 3 + ["random"] * 3,
                         "setting": ["0.1", "0.2", "0.4", "9", "7", "8", "0.1", "0.2", "0.4"]})
    # a score table's runtime / memory rows have no setting ('' as read by the figure jobs, or NaN)
    rows = pd.concat([rows, pd.DataFrame({"method": ["pca", "scdeepcluster"], "setting": ["", np.nan]})])
    pos = figures.setting_positions(rows)
    assert pos["pca"] == {"0.1": 0.1, "0.2": 0.2, "0.4": 0.4}
    assert pos["scdeepcluster"] == {"7": 0.1, "8": 0.2, "9": 0.4}
    t = pd.DataFrame({"clusters_9": ["0"], "cell_type": ["a"]})
    assert figures.first_column(t, "clusters_0.4|clusters_9") == "clusters_9"
    with pytest.raises(ValueError, match="no such column"):
        figures.first_column(t, "clusters_0.4|clusters_10")


def test_clusters_three_separable_groups(no_cache):
    missing = missing_dependencies("scdeepcluster")
    if missing:
        pytest.skip(f"scDeepCluster not installed: {', '.join(missing)}")
    from sklearn.metrics import adjusted_rand_score

    a = _groups()
    torch_dtype = __import__("torch").get_default_dtype()
    # input noise sd 0.5, not the tool's 2.5: on 40 genes that much noise drowns the 10 marker genes
    # of each group (ARI 0.53 after 30 or 100 pretraining epochs; 1.0 with 0.5)
    clusters, emb = scdeepcluster.cluster(a, RunContext(seed=0, settings=(2, 3)), pretrain_epochs=30,
                                          pretrain_lr=1e-3, maxiter=20, batch_size=64, sigma=0.5, embedding_k=3)
    assert clusters.shape == (a.n_obs, 2) and emb.shape == (a.n_obs, 32)
    assert adjusted_rand_score(a.obs["cell_type"], clusters[:, 1]) > 0.8  # chance: 0
    assert len(np.unique(clusters[:, 0])) <= 2
    assert __import__("torch").get_default_dtype() == torch_dtype  # the tool's float64 default undone
