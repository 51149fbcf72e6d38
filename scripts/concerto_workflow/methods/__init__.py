"""Registry of competitor methods.

A method is one function:
  integration: ``fn(adata, batch_key, n_comps, seed, **params) -> (n_cells, d) array``
  mapping:     ``fn(ref, query, batch_key, n_comps, seed, **params) -> (ref (n_ref, d), query (n_q, d))``
``adata``/``ref``/``query`` hold log-normalised values on the selected genes (CSR ``X``),
with ``obs['batch']``, ``obs['cell_type']``, ``obs['tech']``.

To add a competitor: write the function (here or in a new module of this package),
add a ``Method`` entry to ``REGISTRY`` naming the Python modules / R packages it needs,
and list its name under ``methods`` in ``config.yaml`` (the schema's enum too).
Competitors run in a child process (``run_isolated``), so a crash, an OOM kill or a
missing dependency becomes a ``failed``/``not_installed`` row instead of aborting the run.
Concerto itself is not in this registry: it has its own train/embed rules and its
failures fail the run.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

from . import baselines, seurat


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    integrate: Callable | None = None
    map: Callable | None = None
    python_modules: tuple[str, ...] = ()
    r_packages: tuple[str, ...] = ()
    tasks: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(t for t, f in (("integration", self.integrate),
                                                                ("mapping", self.map)) if f))


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("pca", "uncorrected baseline: PCA of the log-normalised genes (mapping: PCA fitted "
           "on the reference, query projected)", integrate=baselines.pca_integrate,
           map=baselines.pca_map, python_modules=("sklearn",)),
    Method("harmony", "Harmony (harmonypy) on the PCA embedding", integrate=baselines.harmony_integrate,
           python_modules=("harmonypy",)),
    Method("random", "control: random Gaussian embedding (lower bound of biology metrics)",
           integrate=baselines.random_integrate, map=baselines.random_map),
    Method("seurat", "Seurat v3 CCA anchors integration (R, through rpy2)",
           integrate=seurat.seurat_integrate, python_modules=("rpy2",), r_packages=("Seurat",)),
)}

#: the name Concerto's rules use in tables; not a registry entry (see module docstring)
CONCERTO = "concerto"


@functools.lru_cache(maxsize=None)
def missing_dependencies(method: Method) -> list[str]:
    """Python modules / R packages of ``method`` that are not installed (empty = runnable)."""
    missing = [m for m in method.python_modules if importlib.util.find_spec(m) is None]
    if method.r_packages and not missing:
        missing += seurat.missing_r_packages(method.r_packages)
    return tuple(missing)


def installed(name: str) -> bool:
    """Whether competitor ``name`` can run here. Rule params use it, so installing a
    competitor later makes Snakemake rerun its ``not_installed`` jobs."""
    return not missing_dependencies(REGISTRY[name])
