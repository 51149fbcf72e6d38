"""scDeepCluster (Tian et al. 2019, Nature Machine Intelligence; PyTorch version
github.com/ttgump/scDeepCluster_pytorch): a denoising autoencoder with a zero-inflated
negative-binomial (ZINB) loss on counts, then refined jointly with a DEC clustering layer for a
given number of clusters k. A clustering competitor of the paper's Fig 3a (k = 7 ... 11) and 3b
(UMAP at k = 9).

It has no release on PyPI or conda, only scripts on GitHub. A user clones the repository and
sets ``SCDEEPCLUSTER_HOME`` to the clone (``envs/scdeepcluster.yaml``); the adapter imports its
``scDeepCluster`` model and its ``preprocess.normalize`` from there. Without the variable, or
with a directory lacking its scripts, the registry reports the method ``not_installed`` with a
reason saying what to do (:func:`unavailable`).

Input. The fold holds log1p(counts / total * 10,000) on its genes and no raw counts, so the
model is given ``expm1`` of them: counts scaled to 10,000 per cell on the full profile (not
integers; the ZINB likelihood uses lgamma and accepts them, so the tool's integer check of
``read_dataset`` is not applied). The tool's own ``normalize`` then computes what it expects:
size factors (each cell's total on these genes / the median total) and the network input
(per-cell normalised, log1p, scaled per gene); the ZINB loss is taken on the expm1 values.

The numbers of clusters are the cluster settings of the job (``ctx.settings``, config
``cluster_settings.scdeepcluster``). The autoencoder is pretrained once; every k starts from
those pretrained weights (the tool's ``--ae_weights`` route) with the same seed, so each k's
result does not depend on which other k were asked. One embedding is returned for the whole
output: the final latent space of the k = ``embedding_k`` model (the paper's UMAP is at k = 9),
so the cluster silhouette of every other k is measured in that space.
"""
from __future__ import annotations

import copy
import importlib
import os
import sys
import tempfile

import numpy as np

#: environment variable naming a clone of the scDeepCluster_pytorch repository
ENV_VAR = "SCDEEPCLUSTER_HOME"
REPOSITORY = "https://github.com/ttgump/scDeepCluster_pytorch"
#: the scripts the adapter imports from the clone (scDeepCluster.py imports layers.py)
SOURCE_FILES = ("scDeepCluster.py", "layers.py", "preprocess.py")
#: top-level module names of the clone; generic ones (``layers``, ``preprocess``) would shadow
#: or be shadowed by other modules, so they are only importable while the clone is loaded
_MODULES = ("scDeepCluster", "layers", "preprocess", "single_cell_tools")


def unavailable() -> str | None:
    """What is missing to run scDeepCluster beyond Python packages: None when ``SCDEEPCLUSTER_HOME``
    names a clone with the tool's scripts, else one line telling the user what to do."""
    home = os.environ.get(ENV_VAR, "")
    todo = f"git clone {REPOSITORY} and set {ENV_VAR} to the clone's directory"
    if not home:
        return f"scDeepCluster source ({ENV_VAR} is not set; {todo})"
    absent = [f for f in SOURCE_FILES if not os.path.isfile(os.path.join(home, f))]
    if absent:
        return f"scDeepCluster source ({ENV_VAR}={home} has no {', '.join(absent)}; {todo})"
    return None


def load_source():
    """(the ``scDeepCluster`` model class, the tool's ``preprocess.normalize``) from the clone in
    ``SCDEEPCLUSTER_HOME``; modules of the same names imported before are put back afterwards."""
    why = unavailable()
    if why:
        raise ImportError(why)
    home = os.path.abspath(os.environ[ENV_VAR])
    shadowed = {n: sys.modules.pop(n) for n in _MODULES if n in sys.modules}
    sys.path.insert(0, home)
    try:
        model = importlib.import_module("scDeepCluster")
        preprocess = importlib.import_module("preprocess")
    finally:
        sys.path.remove(home)
        for n in _MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(shadowed)
    return model.scDeepCluster, preprocess.normalize


def numbers_of_clusters(settings, n_cells: int) -> list[int]:
    """The cluster settings as numbers of clusters k (integers, 2 <= k < n_cells)."""
    ks = []
    for s in settings:
        k = float(s)
        if not k.is_integer() or not 2 <= k < n_cells:
            raise ValueError(f"scDeepCluster's cluster settings are numbers of clusters (integers from 2 to "
                             f"{n_cells - 1}, the fold's cells - 1), got {s!r}; set them under the experiment's "
                             "cluster_settings.scdeepcluster (the paper: [7, 8, 9, 10, 11])")
        ks.append(int(k))
    if not ks:
        raise ValueError("scDeepCluster needs at least one number of clusters (cluster settings are empty)")
    return ks


def model_inputs(adata, normalize) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(network input, counts for the ZINB loss, size factors), float64, one row per cell of
    ``adata`` (log-normalised X), prepared by the tool's ``normalize`` from expm1(X)."""
    import anndata as ad

    from .shared import scaled_counts

    counts = scaled_counts(adata.X)
    empty = int((counts.sum(axis=1) <= 0).sum())
    if empty:
        raise ValueError(f"{empty} cells have no counts on the fold's {adata.n_vars} genes; scDeepCluster's "
                         "size factors need at least one (its normalisation would drop these cells)")
    a = normalize(ad.AnnData(counts), filter_min_counts=False, size_factors=True, normalize_input=True,
                  logtrans_input=True)
    if a.n_obs != adata.n_obs:
        raise RuntimeError(f"scDeepCluster's normalize kept {a.n_obs} of {adata.n_obs} cells")
    return (np.asarray(a.X, dtype=np.float64), np.asarray(a.raw.X, dtype=np.float64),
            a.obs["size_factors"].to_numpy(dtype=np.float64))


def cluster(adata, ctx, *, pretrain_epochs: int = 50, pretrain_lr: float = 1e-4, maxiter: int = 2000,
            batch_size: int = 256, z_dim: int = 32, encode_layers: tuple = (256, 64),
            decode_layers: tuple = (64, 256), sigma: float = 2.5, gamma: float = 1.0,
            update_interval: int = 1, tol: float = 1e-3, embedding_k: int = 9):
    """(n_cells, len(ctx.settings)) scDeepCluster clusters, one column per k of ``ctx.settings``,
    and the (n_cells, z_dim) final latent space of the k = ``embedding_k`` model.

    Defaults: pretraining as in the paper's Methods (50 epochs, Adam at 1e-4; the tool's script:
    300 epochs at 1e-3), everything else the tool's script defaults (network 256-64-32, noise
    sigma 2.5, clustering loss weight gamma 1, up to ``maxiter`` clustering epochs of Adadelta,
    stopped when fewer than ``tol`` of the labels change between epochs)."""
    import torch

    Net, normalize = load_source()
    ks = numbers_of_clusters(ctx.settings, adata.n_obs)
    if embedding_k not in ks:
        raise ValueError(f"embedding_k={embedding_k} (the k whose latent space is kept for the UMAP and the "
                         f"silhouette) is not among the numbers of clusters {ks}; set params.scdeepcluster.embedding_k")
    X, X_raw, size_factors = model_inputs(adata, normalize)
    torch.set_num_threads(max(1, ctx.threads))
    default_dtype = torch.get_default_dtype()  # the tool's constructor sets float64 for the process

    def network():
        return Net(input_dim=X.shape[1], z_dim=z_dim, encodeLayer=list(encode_layers),
                   decodeLayer=list(decode_layers), sigma=sigma, gamma=gamma, device="cpu")

    def seed():  # the tool's k-means initialisation draws from numpy's global generator
        torch.manual_seed(ctx.seed)
        np.random.seed(ctx.seed)

    clusters = np.empty((adata.n_obs, len(ks)), dtype=np.int64)
    embedding = None
    try:
        seed()
        net = network()
        net.pretrain_autoencoder(X=X, X_raw=X_raw, size_factor=size_factors, batch_size=batch_size,
                                 lr=pretrain_lr, epochs=pretrain_epochs, ae_save=False)
        pretrained = copy.deepcopy(net.state_dict())
        # the clustering stage writes checkpoints every 10 epochs: into a scratch directory
        with tempfile.TemporaryDirectory(prefix="scdeepcluster_") as scratch:
            for j, k in enumerate(ks):
                seed()
                net = network()
                net.load_state_dict(pretrained)
                labels, *_ = net.fit(X=X, X_raw=X_raw, size_factor=size_factors, n_clusters=k,
                                     batch_size=batch_size, num_epochs=maxiter, update_interval=update_interval,
                                     tol=tol, save_dir=scratch)
                clusters[:, j] = np.asarray(labels, dtype=np.int64)
                if k == embedding_k:
                    embedding = net.encodeBatch(torch.tensor(X, dtype=torch.float64)).cpu().numpy()
    finally:
        torch.set_default_dtype(default_dtype)
    return clusters, embedding.astype(np.float32)
