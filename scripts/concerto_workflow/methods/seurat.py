"""Seurat v3 (CCA anchors) integration through rpy2.

Runs only where R, Seurat and rpy2 are installed (``make setup`` tries Debian's
r-cran-seurat); otherwise the registry reports it as ``not_installed``.
"""
from __future__ import annotations

import numpy as np


def missing_r_packages(packages) -> list[str]:
    try:
        from rpy2.robjects.packages import isinstalled
    except Exception as e:  # rpy2 present but R missing/broken
        return [f"R ({type(e).__name__}: {e})"]
    return [p for p in packages if not isinstalled(p)]


def seurat_integrate(adata, batch_key, n_comps, seed, n_features=2000, **_):
    import rpy2.robjects as ro
    import scipy.sparse as sp

    X = sp.csc_matrix(adata.X.T)  # genes x cells, log-normalised
    dims = int(min(n_comps, 50, adata.n_vars - 1))
    g = ro.globalenv
    # plain R vectors (numpy2ri would hand R 1-d arrays, which Matrix slots reject)
    g["x_i"] = ro.IntVector(X.indices.tolist())
    g["x_p"] = ro.IntVector(X.indptr.tolist())
    g["x_x"] = ro.FloatVector(X.data.astype(float).tolist())
    g["dims_xy"] = ro.IntVector(list(X.shape))
    g["genes"] = ro.StrVector([str(v).replace("_", "-") for v in adata.var_names])
    g["cells"] = ro.StrVector([str(v) for v in adata.obs_names])
    g["batches"] = ro.StrVector(adata.obs[batch_key].astype(str).tolist())
    g["n_dims"] = dims
    g["n_comps"] = int(n_comps)
    g["n_features"] = int(min(n_features, adata.n_vars))
    g["seed"] = int(seed)
    emb = ro.r("""
        suppressPackageStartupMessages({library(Seurat); library(Matrix)})
        set.seed(seed)
        m <- sparseMatrix(i = x_i + 1, p = x_p, x = x_x, dims = dims_xy,
                          dimnames = list(genes, cells))
        so <- CreateSeuratObject(counts = m)
        so <- SetAssayData(so, slot = "data", new.data = m)
        so$batch <- batches
        objs <- lapply(SplitObject(so, split.by = "batch"), function(o)
            FindVariableFeatures(o, nfeatures = n_features, verbose = FALSE))
        k <- min(100, min(sapply(objs, ncol)) - 1)
        anchors <- FindIntegrationAnchors(objs, dims = 1:n_dims, k.filter = k, verbose = FALSE)
        integ <- IntegrateData(anchors, dims = 1:n_dims, k.weight = min(100, k), verbose = FALSE)
        DefaultAssay(integ) <- "integrated"
        integ <- ScaleData(integ, verbose = FALSE)
        integ <- RunPCA(integ, npcs = min(n_comps, nrow(integ) - 1), verbose = FALSE)
        Embeddings(integ, "pca")[cells, ]
    """)
    return np.array(emb, dtype=np.float32).reshape(adata.n_obs, -1, order="F")
