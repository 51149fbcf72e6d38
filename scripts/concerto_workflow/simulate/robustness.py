"""Robustness grid of Supp. Fig. 8 (paper Methods, "Robustness analysis").

Splatter ``splatSimulate(groupCells=5, nGenes=2500, dropout.type="experiment",
dropout.shape=-1, ...)``: DE strength grid ``de.facScale`` in {0.15, 0.2, 0.25, 0.3} at
``dropout.mid=1``, and dropout grid ``dropout.mid`` in {-0.5, 0, 0.5, 1} at ``de.facScale=0.2``.
(The paper writes ``de.scale``; Splatter's parameter is ``de.facScale``.)
"""
from __future__ import annotations

import anndata as ad
import pandas as pd

from .splat import SplatParams, simulate

DE_SCALES = (0.15, 0.2, 0.25, 0.3)
DROPOUT_MIDS = (-0.5, 0.0, 0.5, 1.0)


def robustness_grid() -> dict[str, dict]:
    """Grid cell name -> Splat parameter overrides, e.g. ``de0.15``, ``dropout-0.5``."""
    grid = {f"de{s:g}": {"de_fac_scale": s, "dropout_mid": 1.0} for s in DE_SCALES}
    grid.update({f"dropout{m:g}": {"de_fac_scale": 0.2, "dropout_mid": m} for m in DROPOUT_MIDS})
    return grid


def splat_robustness_params(n_cells: int = 2000, n_genes: int = 2500, seed: int = 0, *,
                            de_fac_scale: float = 0.2, dropout_mid: float = 1.0) -> SplatParams:
    """The paper's Splat settings (5 equal groups, one batch, experiment-wide dropout with
    shape -1) at one point of the grid: DE strength ``de_fac_scale``, dropout midpoint ``dropout_mid``."""
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    if n_genes < 1:
        raise ValueError(f"n_genes must be >= 1, got {n_genes}")
    if de_fac_scale <= 0:
        raise ValueError(f"de_fac_scale must be > 0, got {de_fac_scale}")
    return SplatParams(n_genes=n_genes, batch_cells=(n_cells,), group_prob=(0.2,) * 5,
                       dropout_type="experiment", dropout_shape=-1.0, seed=seed,
                       de_fac_scale=de_fac_scale, dropout_mid=dropout_mid)


def robustness_params(name: str, n_cells: int = 2000, seed: int = 0) -> SplatParams:
    grid = robustness_grid()
    if name not in grid:
        raise ValueError(f"unknown robustness grid cell {name!r}; known: {list(grid)}")
    return splat_robustness_params(n_cells, seed=seed, **grid[name])


def simulate_splat_robustness(params: SplatParams) -> ad.AnnData:
    """Cells of ``params`` as AnnData (counts) with obs cell_type (= Group), batch, tech 'splat'."""
    a = simulate(params)
    a.obs["cell_type"] = a.obs["Group"]
    a.obs["batch"] = a.obs["Batch"]
    a.obs["tech"] = pd.Categorical(["splat"] * a.n_obs)
    return a


def simulate_robustness(name: str, n_cells: int = 2000, seed: int = 0) -> ad.AnnData:
    """One named grid cell as AnnData (n_cells x 2500 counts) with obs cell_type (= Group), batch."""
    a = simulate_splat_robustness(robustness_params(name, n_cells, seed))
    a.uns["robustness_cell"] = name
    return a
