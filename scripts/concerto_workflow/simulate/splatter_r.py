"""Run R's Splatter (``splatSimulate``) through rpy2 with a :class:`SplatParams`.

Only used when R, splatter and rpy2 are installed; nothing is faked otherwise.
"""
from __future__ import annotations

import dataclasses

from .splat import SPLATTER_NAME_MAP, SplatParams, simulate

INSTALL_HINT = ("install R >= 4.2, then in R: install.packages('BiocManager'); "
                "BiocManager::install('splatter'); and in Python: pip install rpy2==3.5.17")


def _r_available():
    """Return (robjects, splatter, anndata2ri-free converter) or raise RuntimeError."""
    try:
        import rpy2.robjects as ro  # noqa: F401
        from rpy2.robjects.packages import importr
    except Exception as e:  # ImportError, or R itself missing (rpy2 raises at import)
        raise RuntimeError(f"backend='r' needs rpy2 and R, which are not importable ({e}); "
                           + INSTALL_HINT) from e
    # library() warns about empty library directories (Debian's /usr/local/lib/R/site-library)
    libs = list(ro.r("Filter(function(p) length(dir(p)) > 0, .libPaths())"))
    try:
        splatter = importr("splatter", lib_loc=libs)
    except Exception as e:
        raise RuntimeError(f"backend='r' needs the R package 'splatter' ({e}); " + INSTALL_HINT) from e
    return ro, splatter


def splatter_simulate(params: SplatParams, backend: str = "python"):
    """Simulate with ``backend='python'`` (:func:`.splat.simulate`) or ``'r'`` (real Splatter).

    The R result is returned as AnnData (cells x genes counts, obs/var from colData/rowData).
    """
    if backend == "python":
        return simulate(params)
    if backend != "r":
        raise ValueError(f"backend must be 'python' or 'r', got {backend!r}")
    ro, splatter = _r_available()
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    inv = {v: k for k, v in SPLATTER_NAME_MAP.items()}
    kw = {}
    for f in dataclasses.fields(params):
        if f.name in ("method",):
            continue
        v = getattr(params, f.name)
        if f.name == "path_from" and params.method != "paths":
            continue
        if f.name == "dropout_type":
            kw[inv[f.name]] = v
        elif isinstance(v, tuple):
            kw[inv[f.name]] = ro.FloatVector(v) if f.name not in ("batch_cells", "path_from", "path_n_steps") \
                else ro.IntVector(v)
        else:
            kw[inv[f.name]] = v
    sim = splatter.splatSimulate(method=params.method, verbose=False, **kw)
    counts = np.asarray(ro.r("function(s) as.matrix(SummarizedExperiment::assay(s, 'counts'))")(sim))
    coldata = ro.r("function(s) as.data.frame(SummarizedExperiment::colData(s))")(sim)
    rowdata = ro.r("function(s) as.data.frame(SummarizedExperiment::rowData(s))")(sim)
    with (ro.default_converter + ro.pandas2ri.converter).context():
        obs = ro.conversion.get_conversion().rpy2py(coldata)
        var = ro.conversion.get_conversion().rpy2py(rowdata)
    return ad.AnnData(X=sp.csr_matrix(counts.T, dtype=np.float32), obs=pd.DataFrame(obs), var=pd.DataFrame(var))
