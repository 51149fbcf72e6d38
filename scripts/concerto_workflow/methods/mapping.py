"""The paper's query-to-reference mapping peers (Fig 4): Symphony, Seurat v4 reference mapping and
scArches (trVAE surgery).

Every function fits its reference on the reference (training) cells alone and then maps the query
onto it without refitting: Symphony's PCA loadings, gene means / standard deviations and Harmony
centroids come from the reference; Seurat's variable genes and PCA from the reference object;
scArches trains the reference trVAE on the reference and then only the query's new condition
weights (surgery).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .seurat import put_sparse_matrix, r_library
from .shared import dense


# ------------------------------------------------------------------------------------ Symphony
def symphony_reference(ref, ctx, *, max_iter_harmony: int = 10):
    """Symphony's reference (symphonypy): genes scaled with the reference's own mean / std, PCA
    and Harmony on the reference cells only. Returns the reference AnnData carrying
    ``var['mean'/'std']``, ``varm['PCs']``, ``obsm['X_pca_harmony']`` and ``uns['harmony']``."""
    import anndata as ad
    import scanpy as sc
    import symphonypy as sp_

    r = ad.AnnData(dense(ref.X), obs=ref.obs[[ctx.batch_key]].copy(), var=ref.var[[]].copy())
    sc.pp.scale(r, max_value=10)            # stores var['mean'], var['std'] (Symphony needs them)
    n = int(max(2, min(ctx.n_comps, r.n_obs - 1, r.n_vars - 1)))
    sc.pp.pca(r, n_comps=n, random_state=ctx.seed, zero_center=True)
    if r.obs[ctx.batch_key].nunique() > 1:
        sp_.pp.harmony_integrate(r, key=ctx.batch_key, random_seed=ctx.seed,
                                 max_iter_harmony=max_iter_harmony)
    return r


def symphony_map(ref, query, ctx, *, max_iter_harmony: int = 10):
    """Symphony (symphonypy): the query is projected with the reference's loadings, assigned to
    the reference's Harmony clusters and corrected for its own batches."""
    import anndata as ad
    import symphonypy as sp_

    r = symphony_reference(ref, ctx, max_iter_harmony=max_iter_harmony)
    q = ad.AnnData(dense(query.X), obs=query.obs[[ctx.batch_key]].copy(), var=query.var[[]].copy())
    q.uns["log1p"] = {"base": None}          # the engine's inputs are log-normalised
    sp_.tl.map_embedding(q, r, key=ctx.batch_key, use_genes_column=None)
    # a one-batch reference has no Harmony step: its space is the PCA (symphonypy still writes
    # uns['harmony'] while mapping, so the obsm key decides)
    ref_emb = r.obsm["X_pca_harmony"] if "X_pca_harmony" in r.obsm else r.obsm["X_pca"]
    return np.asarray(ref_emb, dtype=np.float32), np.asarray(q.obsm["X_pca_harmony"], dtype=np.float32)


# ------------------------------------------------------------------------------ Seurat v4
#: R code shared by the Seurat v4 tasks: reference object (its own variable genes + PCA), query
#: object, transfer anchors. Expects ref_m / query_m (genes x cells, log-normalised) in R.
#: ``k_filter`` is Seurat's anchor filtering (default 200; 0 = off, Seurat's NA).
_SEURAT_REFERENCE = """
    set.seed(seed)
    ref <- CreateSeuratObject(counts = ref_m)
    ref <- SetAssayData(ref, slot = "data", new.data = ref_m)
    ref$cell_type <- ref_labels
    ref <- FindVariableFeatures(ref, nfeatures = n_features, verbose = FALSE)
    ref <- ScaleData(ref, verbose = FALSE)
    ref <- RunPCA(ref, npcs = n_dims, verbose = FALSE)
"""


def _query_anchors(reduction: str) -> str:
    """R code: the query object and its transfer anchors on the reference's ``reduction``."""
    return f"""
    q <- CreateSeuratObject(counts = query_m)
    q <- SetAssayData(q, slot = "data", new.data = query_m)
    k_filter <- if (k_filter_max > 0) min(k_filter_max, ncol(ref) - 1, ncol(q) - 1) else NA
    anchors <- FindTransferAnchors(reference = ref, query = q, normalization.method = "LogNormalize",
                                   reference.reduction = "{reduction}", dims = 1:n_dims, k.filter = k_filter,
                                   k.score = min(30, ncol(ref) - 2, ncol(q) - 2), verbose = FALSE)
    n_anchors <- nrow(slot(anchors, "anchors"))
    k_weight <- max(2, min(50, n_anchors - 1))
"""


_SEURAT_ANCHORS = _SEURAT_REFERENCE + _query_anchors("pca")


def _prediction_scores(n_classes: int) -> str:
    """R code: TransferData's ``pred`` -> (query cells x n_classes) scores of classes L0.. in order
    (a class absent from the anchors scores 0)."""
    return f"""
        pred <- pred[colnames(query_m), ]
        codes <- paste0("L", seq_len({n_classes}) - 1)
        sapply(codes, function(cl) {{
            col <- paste0("prediction.score.", cl)
            if (col %in% colnames(pred)) pred[[col]] else rep(0, nrow(pred))
        }})
    """


def _seurat_setup(ref, query, ctx, n_features: int, k_filter: int) -> int:
    """Put the reference and query matrices and the settings into R's global environment."""
    import rpy2.robjects as ro

    n_dims = int(min(ctx.n_comps, 50, ref.n_vars - 1, ref.n_obs - 2, query.n_obs - 2))
    if n_dims < 2:
        raise ValueError(f"Seurat v4 mapping needs more cells / genes: reference {ref.shape}, query {query.shape}")
    g = ro.globalenv
    put_sparse_matrix("ref_m", ref.X, ref.var_names, ref.obs_names)
    put_sparse_matrix("query_m", query.X, query.var_names, query.obs_names)
    codes = {c: f"L{i}" for i, c in enumerate(sorted(set(ref.obs[ctx.label_key].astype(str))))}
    g["ref_labels"] = ro.StrVector([codes[c] for c in ref.obs[ctx.label_key].astype(str)])
    g["n_dims"], g["seed"] = n_dims, int(ctx.seed)
    g["n_features"] = int(min(n_features, ref.n_vars))
    g["k_filter_max"] = int(k_filter)
    ro.r(r_library("Seurat", "Matrix"))
    return n_dims


def seurat_v4_map(ref, query, ctx, *, n_features: int = 2000, k_filter: int = 200):
    """Seurat v4 reference mapping: ``FindTransferAnchors`` on the reference PCA, then
    ``MapQuery`` (``IntegrateEmbeddings``): the query in the reference's PCA space."""
    import rpy2.robjects as ro

    _seurat_setup(ref, query, ctx, n_features, k_filter)
    out = ro.r(_SEURAT_ANCHORS + """
        q <- MapQuery(anchorset = anchors, reference = ref, query = q, refdata = list(cell_type = "cell_type"),
                      reference.reduction = "pca", transferdata.args = list(k.weight = k_weight),
                      integrateembeddings.args = list(k.weight = k_weight), verbose = FALSE)
        list(Embeddings(ref, "pca"), Embeddings(q, "ref.pca")[colnames(query_m), ])
    """)
    ref_emb = np.array(out[0], dtype=np.float32).reshape(ref.n_obs, -1, order="F")
    query_emb = np.array(out[1], dtype=np.float32).reshape(query.n_obs, -1, order="F")
    return ref_emb, query_emb


def seurat_v4_annotate(train, test, ctx, *, n_features: int = 2000, k_filter: int = 200):
    """Seurat v4 label transfer (``TransferData``): its per-class prediction scores."""
    import rpy2.robjects as ro

    _seurat_setup(train, test, ctx, n_features, k_filter)
    classes = sorted(set(train.obs[ctx.label_key].astype(str)))
    out = ro.r(_SEURAT_ANCHORS + """
        pred <- TransferData(anchorset = anchors, refdata = ref$cell_type, k.weight = k_weight,
                             verbose = FALSE)
    """ + _prediction_scores(len(classes)))
    probs = np.array(out, dtype=np.float64).reshape(test.n_obs, len(classes), order="F")
    return probs, classes


def split_rna_adt(a, prefix: str = "ADT_"):
    """(RNA part, ADT part) of a feature matrix whose protein columns carry ``prefix`` (the
    ``rna+protein`` features of preprocessing). Raises when either part is missing."""
    is_adt = np.asarray(a.var_names.str.startswith(prefix))
    if is_adt.all() or not is_adt.any():
        raise ValueError("Seurat WNN reference mapping needs RNA and protein features side by side "
                         f"(preprocessing features: rna+protein); these cells have {int((~is_adt).sum())} RNA "
                         f"and {int(is_adt.sum())} {prefix}* features")
    return a[:, ~is_adt], a[:, is_adt]


def seurat_v4_wnn_annotate(train, test, ctx, *, n_features: int = 2000, k_filter: int = 200):
    """Seurat v4 multimodal reference mapping, as Azimuth builds its PBMC reference: WNN of the
    reference's RNA PCA and ADT PCA (``FindMultiModalNeighbors``), supervised PCA of the RNA on the
    WNN graph (``RunSPCA``), then ``FindTransferAnchors`` on that sPCA and ``TransferData``. Like
    Azimuth, the query is mapped by its RNA; the protein enters through the reference only."""
    import rpy2.robjects as ro

    ref_rna, ref_adt = split_rna_adt(train)
    test_rna, _ = split_rna_adt(test)
    _seurat_setup(ref_rna, test_rna, ctx, n_features, k_filter)
    # Seurat rewrites '_' in feature names, so the ADT rows get plain names of their own
    put_sparse_matrix("ref_adt", ref_adt.X, [f"adt-{i}" for i in range(ref_adt.n_vars)], ref_adt.obs_names)
    ro.globalenv["n_adt_dims"] = int(max(2, min(ref_adt.n_vars - 1, ctx.n_comps)))
    classes = sorted(set(train.obs[ctx.label_key].astype(str)))
    out = ro.r(_SEURAT_REFERENCE + """
        ref[["ADT"]] <- CreateAssayObject(counts = ref_adt)
        ref <- SetAssayData(ref, assay = "ADT", slot = "data", new.data = ref_adt)
        DefaultAssay(ref) <- "ADT"
        VariableFeatures(ref) <- rownames(ref_adt)
        ref <- ScaleData(ref, verbose = FALSE)
        ref <- RunPCA(ref, npcs = n_adt_dims, reduction.name = "apca", reduction.key = "APC_", verbose = FALSE)
        DefaultAssay(ref) <- "RNA"
        ref <- FindMultiModalNeighbors(ref, reduction.list = list("pca", "apca"),
                                       dims.list = list(1:n_dims, 1:n_adt_dims), verbose = FALSE)
        ref <- RunSPCA(ref, assay = "RNA", graph = "wsnn", npcs = n_dims, verbose = FALSE)
    """ + _query_anchors("spca") + """
        pred <- TransferData(anchorset = anchors, refdata = ref$cell_type, k.weight = k_weight, verbose = FALSE)
    """ + _prediction_scores(len(classes)))
    probs = np.array(out, dtype=np.float64).reshape(test.n_obs, len(classes), order="F")
    return probs, classes


def seurat_v4_impute(ref, query, ctx, *, n_features: int = 2000, k_filter: int = 200):
    """Seurat v4 imputation of a modality the query lacks: ``TransferData`` of the reference's
    ``obsm[ctx.feature_key]`` (e.g. the ADT assay) through the RNA transfer anchors."""
    import rpy2.robjects as ro

    values = np.asarray(ref.obsm[ctx.feature_key], dtype=np.float64)
    _seurat_setup(ref, query, ctx, n_features, k_filter)
    feats = [f"F{i}" for i in range(values.shape[1])]
    put_sparse_matrix("ref_values", sp.csr_matrix(values), feats, ref.obs_names)
    out = ro.r(_SEURAT_ANCHORS + """
        imp <- TransferData(anchorset = anchors, refdata = as.matrix(ref_values), k.weight = k_weight,
                            verbose = FALSE)
        as.matrix(GetAssayData(imp, slot = "data"))[, colnames(query_m)]
    """)
    return np.array(out, dtype=np.float32).reshape(len(feats), query.n_obs, order="F").T


# ---------------------------------------------------------------------------------- scArches
def _scarches():
    """The scarches module; it imports ``anndata.read``, gone from anndata 0.11, so that name is
    pointed at ``read_h5ad`` first."""
    import anndata as ad

    if getattr(ad, "read", None) is None:
        ad.read = ad.read_h5ad
    import scarches

    return scarches


def _trvae(cells, ctx, *, epochs: int, latent_dim: int, hidden_layer_sizes: tuple, alpha_kl: float):
    """scArches' TRVAE (MSE reconstruction of the log-normalised values) trained on ``cells``
    with their batches as conditions; returns (model, the dense AnnData it was trained on)."""
    import anndata as ad
    import torch

    sca = _scarches()
    torch.manual_seed(ctx.seed)
    np.random.seed(ctx.seed)
    torch.set_num_threads(max(1, int(ctx.threads)))
    key = ctx.batch_key
    a = ad.AnnData(dense(cells.X), obs=cells.obs[[key]].astype(str).copy(), var=cells.var[[]].copy())
    model = sca.models.TRVAE(adata=a, condition_key=key, conditions=sorted(a.obs[key].unique()),
                             hidden_layer_sizes=list(hidden_layer_sizes), latent_dim=latent_dim,
                             recon_loss="mse")
    model.train(n_epochs=epochs, alpha_epoch_anneal=max(1, epochs // 2), alpha_kl=alpha_kl, seed=ctx.seed)
    return model, a


def _trvae_latent(model, a, key) -> np.ndarray:
    # the posterior means (get_latent samples z by default)
    return np.asarray(model.get_latent(a.X, a.obs[key].to_numpy(), mean=True), dtype=np.float32)


def scarches_embed(adata, ctx, *, epochs: int = 50, latent_dim: int = 10, hidden_layer_sizes: tuple = (128, 128),
                   alpha_kl: float = 1.0):
    """trVAE integration (paper Fig 3e/3g: scArches' TRVAE as a de novo integration method): one
    conditional VAE trained on every cell with its batch as the condition; the embedding is the
    latent posterior mean."""
    model, a = _trvae(adata, ctx, epochs=epochs, latent_dim=latent_dim, hidden_layer_sizes=hidden_layer_sizes,
                      alpha_kl=alpha_kl)
    return _trvae_latent(model, a, ctx.batch_key)


def scarches_map(ref, query, ctx, *, epochs: int = 50, query_epochs: int = 50, latent_dim: int = 10,
                 hidden_layer_sizes: tuple = (128, 128), alpha_kl: float = 1.0):
    """scArches trVAE surgery: a conditional VAE (trVAE, MSE reconstruction of the log-normalised
    values) trained on the reference with its batches as conditions; the query's batches are
    added as new conditions and only their weights are trained (``load_query_data``)."""
    import anndata as ad

    sca = _scarches()
    key = ctx.batch_key
    model, r = _trvae(ref, ctx, epochs=epochs, latent_dim=latent_dim, hidden_layer_sizes=hidden_layer_sizes,
                      alpha_kl=alpha_kl)
    q = ad.AnnData(dense(query.X), obs=query.obs[[key]].astype(str).copy(), var=query.var[[]].copy())
    q.obs[key] = "query_" + q.obs[key]       # a query batch name never aliases a reference condition
    surgery = sca.models.TRVAE.load_query_data(adata=q, reference_model=model)
    surgery.train(n_epochs=query_epochs, alpha_epoch_anneal=max(1, query_epochs // 2), alpha_kl=alpha_kl,
                  seed=ctx.seed)
    return _trvae_latent(surgery, r, key), _trvae_latent(surgery, q, key)
