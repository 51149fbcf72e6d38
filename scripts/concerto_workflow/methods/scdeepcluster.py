"""scDeepCluster (Tian et al. 2019, github.com/ttgump/scDeepCluster_pytorch): a deep count
autoencoder with a clustering layer, run with k = 7...11 clusters in the paper's Fig 3a.

It has no release on PyPI or conda: its source is a set of scripts on GitHub, and this offline
environment cannot obtain it. The registry lists the module it would import, so without it the
engine reports scDeepCluster as ``not_installed`` with that reason. No adapter is written
against code we could not read and run here; :func:`cluster` says so if the module appears.
"""
from __future__ import annotations

#: importable name a user installing the GitHub source would provide
MODULE = "scDeepCluster"


def cluster(adata, ctx, *, n_clusters=(7, 8, 9, 10, 11)):
    raise NotImplementedError(
        f"a module {MODULE!r} is importable, but the workflow has no adapter for scDeepCluster yet: its "
        "source (github.com/ttgump/scDeepCluster_pytorch) was not available to write and test one against")
