import numpy as np

from concerto_workflow import embedding_io
from concerto_workflow.methods import REGISTRY, missing_dependencies
from concerto_workflow.methods.runner import run_isolated
from concerto_workflow.preprocessing import preprocess_integration


def _cells(raw, path):
    a = preprocess_integration(raw, min_genes=1, min_cells=3, target_sum=1e4, n_top_genes=None,
                               flavor="seurat")
    a.write_h5ad(path)
    return a


def test_registry_tasks():
    assert "integration" in REGISTRY["harmony"].tasks and "mapping" not in REGISTRY["harmony"].tasks
    assert REGISTRY["pca"].tasks == ("integration", "mapping")


def test_pca_and_harmony_run_isolated(tmp_path, raw_adata):
    a = _cells(raw_adata, tmp_path / "cells.h5ad")
    for m in ("pca", "harmony"):
        out = str(tmp_path / f"{m}.h5ad")
        status = run_isolated(m, "integration", [str(tmp_path / "cells.h5ad")], out, params={},
                              batch_key="batch", n_comps=20, seed=0, threads=1, log="log.txt")
        assert status == "ok"
        e = embedding_io.read_embedding(out)
        assert e.obsm["X_emb"].shape == (a.n_obs, 20)


def test_crash_becomes_failed_row(tmp_path, raw_adata):
    a = _cells(raw_adata, tmp_path / "cells.h5ad")
    a.X = a.X.toarray()
    a.X[0, 0] = np.nan  # PCA refuses NaN -> the child exits non-zero
    a.write_h5ad(tmp_path / "nan.h5ad")
    out = str(tmp_path / "pca.h5ad")
    status = run_isolated("pca", "integration", [str(tmp_path / "nan.h5ad")], out, params={},
                          batch_key="batch", n_comps=5, seed=0, threads=1, log="the.log")
    assert status == "failed"
    e = embedding_io.read_embedding(out)
    assert "exit code" in e.uns["reason"] and e.uns["log"] == "the.log"


def test_missing_dependency_becomes_not_installed(tmp_path, raw_adata):
    _cells(raw_adata, tmp_path / "cells.h5ad")
    if not missing_dependencies(REGISTRY["seurat"]):
        return  # R + Seurat present on this machine: nothing to check
    out = str(tmp_path / "seurat.h5ad")
    status = run_isolated("seurat", "integration", [str(tmp_path / "cells.h5ad")], out, params={},
                          batch_key="batch", n_comps=5, seed=0, threads=1, log="l")
    assert status == "not_installed"
    assert "not installed" in embedding_io.read_embedding(out).uns["reason"]
