"""Seurat through rpy2: v3 CCA-anchor integration and FindClusters, plus the one R bridge
(``r_library``, ``put_sparse_matrix``) every R method uses (Seurat v4 mapping, SingleR).

Runs only where R, Seurat and rpy2 are installed (``make setup`` tries Debian's
r-cran-seurat); otherwise the registry reports it as ``not_installed``.
"""
from __future__ import annotations

import numpy as np


def missing_r_packages(packages) -> list[str]:
    """R packages not installed, asked of a separate ``Rscript`` so that the calling process
    (Snakemake building its DAG) never loads R and its start-up warnings. Looks the packages
    up without loading them (loading Seurat takes ~10 s, and every Snakemake start asks): an
    installed package that fails to load surfaces as the job's ``failed`` row instead."""
    import shutil
    import subprocess

    rscript = shutil.which("Rscript")
    if rscript is None:
        return ["R (Rscript not on PATH)"]
    code = "for (p in commandArgs(TRUE)) if (!nzchar(system.file(package = p))) cat(p, '\\n')"
    try:
        r = subprocess.run([rscript, "--vanilla", "-e", code, *packages], capture_output=True, text=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"R ({type(e).__name__}: {e})"]
    if r.returncode != 0:
        return [f"R (Rscript exit {r.returncode}: {r.stderr.strip()[-200:]})"]
    return r.stdout.split()


def r_library(*packages: str) -> str:
    """R code attaching ``packages`` quietly. library() is given only non-empty library
    directories: it warns about empty ones (Debian's /usr/local/lib/R/site-library)."""
    loads = "; ".join(f"library({p}, lib.loc = libs)" for p in packages)
    return ("libs <- Filter(function(p) length(dir(p)) > 0, .libPaths())\n"
            f"suppressPackageStartupMessages({{{loads}}})\n")


def put_sparse_matrix(name: str, X, genes, cells) -> None:
    """Bind R variable ``name`` to a genes x cells ``dgCMatrix`` of the (cells x genes) matrix
    ``X``, with gene and cell names (``_`` in gene names becomes ``-``, as Seurat requires)."""
    import rpy2.robjects as ro
    import scipy.sparse as sp

    M = sp.csc_matrix(sp.csr_matrix(X).T)
    g = ro.globalenv
    # plain R vectors (numpy2ri would hand R 1-d arrays, which Matrix slots reject)
    g[".x_i"] = ro.IntVector(M.indices.tolist())
    g[".x_p"] = ro.IntVector(M.indptr.tolist())
    g[".x_x"] = ro.FloatVector(M.data.astype(float).tolist())
    g[".x_dim"] = ro.IntVector(list(M.shape))
    g[".x_genes"] = ro.StrVector([str(v).replace("_", "-") for v in genes])
    g[".x_cells"] = ro.StrVector([str(v) for v in cells])
    ro.r(r_library("Matrix") + f"{name} <- sparseMatrix(i = .x_i + 1, p = .x_p, x = .x_x, dims = .x_dim, "
         "dimnames = list(.x_genes, .x_cells))")


#: Seurat's anchor search needs a few cells per batch beyond the CCA dimensions
MIN_CELLS_PER_BATCH = 10


def seurat_dims(batch_sizes, n_comps: int, n_genes: int) -> int:
    """CCA dimensions that fit the data: at most 50, the PCA size, the gene count and the
    smallest batch minus one (Seurat crashes deep inside otherwise). Refuses data whose
    smallest batch is too small for any anchors."""
    smallest = int(min(batch_sizes))
    if smallest < MIN_CELLS_PER_BATCH:
        raise ValueError(f"Seurat integration needs >= {MIN_CELLS_PER_BATCH} cells per batch; the "
                         f"smallest batch has {smallest}")
    dims = int(min(n_comps, 50, n_genes - 1, smallest - 1))
    if dims < min(n_comps, 50):
        print(f"[seurat] using {dims} CCA dimensions (smallest batch: {smallest} cells, "
              f"{n_genes} genes)", flush=True)
    return dims


def seurat_embed(adata, ctx, *, n_features: int = 2000):
    """Seurat v3 CCA anchors (``FindIntegrationAnchors`` + ``IntegrateData``), then PCA."""
    import rpy2.robjects as ro

    batch_key, n_comps, seed = ctx.batch_key, ctx.n_comps, ctx.seed
    dims = seurat_dims(adata.obs[batch_key].value_counts().to_numpy(), n_comps, adata.n_vars)
    put_sparse_matrix("m", adata.X, adata.var_names, adata.obs_names)
    g = ro.globalenv
    g["cells"] = ro.StrVector([str(v) for v in adata.obs_names])
    g["batches"] = ro.StrVector(adata.obs[batch_key].astype(str).tolist())
    g["n_dims"] = dims
    g["n_comps"] = int(n_comps)
    g["n_features"] = int(min(n_features, adata.n_vars))
    g["seed"] = int(seed)
    emb = ro.r(r_library("Seurat") + """
        set.seed(seed)
        so <- CreateSeuratObject(counts = m)
        so <- SetAssayData(so, slot = "data", new.data = m)
        so$batch <- batches
        objs <- lapply(SplitObject(so, split.by = "batch"), function(o)
            FindVariableFeatures(o, nfeatures = n_features, verbose = FALSE))
        k <- min(100, min(sapply(objs, ncol)) - 1)
        anchors <- FindIntegrationAnchors(objs, dims = 1:n_dims, k.filter = k,
                                         k.score = min(30, k - 1), verbose = FALSE)
        integ <- IntegrateData(anchors, dims = 1:n_dims, k.weight = min(100, k), verbose = FALSE)
        DefaultAssay(integ) <- "integrated"
        integ <- ScaleData(integ, verbose = FALSE)
        integ <- RunPCA(integ, npcs = min(n_comps, nrow(integ) - 1), verbose = FALSE)
        Embeddings(integ, "pca")[cells, ]
    """)
    return np.array(emb, dtype=np.float32).reshape(adata.n_obs, -1, order="F")


#: engine cluster algorithm -> Seurat FindClusters(algorithm=): 1 = original Louvain, 4 = Leiden
SEURAT_ALGORITHMS = {"louvain": 1, "leiden": 4}


def leiden_on_graph(graph, resolution: float, *, seed: int, n_iterations: int = 10) -> np.ndarray:
    """What Seurat's ``FindClusters(algorithm = 4)`` does with its SNN graph: leidenalg's
    RBConfiguration partition (weighted, ``n.iter`` 10, ``random.seed``). Seurat calls it through
    reticulate, which crashes inside rpy2 (a GIL error), so the workflow makes the same call here."""
    import igraph as ig
    import leidenalg
    import scipy.sparse as sp

    up = sp.triu(sp.csr_matrix(graph), k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=list(zip(up.row.tolist(), up.col.tolist())), directed=False)
    g.es["weight"] = up.data.tolist()
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                    resolution_parameter=float(resolution), n_iterations=n_iterations, seed=seed)
    return np.asarray(part.membership, dtype=np.int64)


def seurat_cluster(adata, ctx, *, n_features: int = 2000, k_param: int = 20):
    """Seurat's own clustering: HVGs, ScaleData, PCA (``ctx.n_comps``), ``FindNeighbors`` (SNN,
    ``k_param``), then ``FindClusters`` at each resolution of ``ctx.settings`` with algorithm 1
    (Louvain, in R) or, for Leiden (algorithm 4), leidenalg on Seurat's SNN graph
    (:func:`leiden_on_graph`). Returns (clusters, the PCA embedding they came from)."""
    import rpy2.robjects as ro
    import scipy.sparse as sp

    if ctx.cluster_algorithm not in SEURAT_ALGORITHMS:
        raise ValueError(f"Seurat has no {ctx.cluster_algorithm!r} clustering; it has {sorted(SEURAT_ALGORITHMS)}")
    louvain = ctx.cluster_algorithm == "louvain"
    put_sparse_matrix("m", adata.X, adata.var_names, adata.obs_names)
    g = ro.globalenv
    g["cells"] = ro.StrVector([str(v) for v in adata.obs_names])
    g["n_comps"] = int(min(ctx.n_comps, adata.n_vars - 1, adata.n_obs - 1))
    g["n_features"] = int(min(n_features, adata.n_vars))
    g["k_param"] = int(k_param)
    g["resolutions"] = ro.FloatVector([float(r) for r in ctx.settings] if louvain else [])
    g["seed"] = int(ctx.seed)
    res = ro.r(r_library("Seurat", "Matrix") + """
        set.seed(seed)
        so <- CreateSeuratObject(counts = m)
        so <- SetAssayData(so, slot = "data", new.data = m)
        so <- FindVariableFeatures(so, nfeatures = n_features, verbose = FALSE)
        so <- ScaleData(so, verbose = FALSE)
        so <- RunPCA(so, npcs = n_comps, verbose = FALSE, seed.use = seed)
        so <- FindNeighbors(so, dims = 1:n_comps, k.param = k_param, verbose = FALSE)
        cl <- sapply(resolutions, function(r) {
            o <- FindClusters(so, resolution = r, algorithm = 1, random.seed = seed, verbose = FALSE)
            as.integer(as.character(Idents(o)[cells]))
        })
        snn <- as(so@graphs$RNA_snn[cells, cells], "CsparseMatrix")
        list(as.integer(unlist(cl)), Embeddings(so, "pca")[cells, ], snn@i, snn@p, snn@x)
    """)
    n = adata.n_obs
    emb = np.array(res[1], dtype=np.float32).reshape(n, -1, order="F")
    if louvain:
        clusters = np.array(res[0], dtype=np.int64).reshape(n, -1, order="F")
    else:
        snn = sp.csc_matrix((np.array(res[4]), np.array(res[2]), np.array(res[3])), shape=(n, n))
        clusters = np.column_stack([leiden_on_graph(snn, r, seed=ctx.seed) for r in ctx.settings])
    return clusters, emb
