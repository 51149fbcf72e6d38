"""The Splat simulation model (Zappia, Phipson & Oshlack 2017, Genome Biology) in Python.

Follows Splatter's ``splatSimulate`` step by step, with Splatter's defaults:

1. gene means ``~ Gamma(mean_shape, mean_rate)``; outlier genes (prob ``out_prob``) get
   ``median(means) * LogNormal(out_fac_loc, out_fac_scale)``;
2. library sizes ``~ LogNormal(lib_loc, lib_scale)``;
3. one batch factor per gene and batch, ``LogNormal(batch_fac_loc, batch_fac_scale)``, half of
   them inverted (down); every gene gets one;
4. per group a DE factor (prob ``de_prob``, ``LogNormal(de_fac_loc, de_fac_scale)``, inverted
   with prob ``de_down_prob``), or per path the factor between the path's start and end;
5. cell proportions = gene mean x batch x group/path factors, normalised per cell, x library size;
6. BCV (``bcv_common``, ``bcv_df``) Gamma-Poisson counts and logistic "experiment" dropout
   (see :mod:`.sampling`, which samples exactly but skips most zeros).

Paths (``method='paths'``): path k starts at the end of path ``path_from[k]`` (0 = the gene means)
and ends at start x its DE factors. Along ``path_n_steps`` steps the log mean moves linearly
from start to end; "nonlinear" genes (prob ``path_nonlinear_prob``) add a Brownian bridge with
sd ``path_sigma_fac * |log fold change|`` per unit path length. A cell's step is drawn with
weights ``linspace(path_skew, 1 - path_skew, n_steps)`` (0.5 = uniform), as in Splatter.

Parameter names (Python field = Splatter name): n_genes=nGenes, batch_cells=batchCells,
batch_fac_loc=batch.facLoc, batch_fac_scale=batch.facScale, mean_shape=mean.shape,
mean_rate=mean.rate, lib_loc=lib.loc, lib_scale=lib.scale, out_prob=out.prob,
out_fac_loc=out.facLoc, out_fac_scale=out.facScale, group_prob=group.prob, de_prob=de.prob,
de_down_prob=de.downProb, de_fac_loc=de.facLoc, de_fac_scale=de.facScale,
bcv_common=bcv.common, bcv_df=bcv.df, dropout_type=dropout.type, dropout_mid=dropout.mid,
dropout_shape=dropout.shape, path_from=path.from, path_n_steps=path.nSteps,
path_skew=path.skew, path_nonlinear_prob=path.nonlinearProb, path_sigma_fac=path.sigmaFac,
seed=seed. ``method`` is splatSimulate's ``method`` argument. ``nCells`` sets one batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from .sampling import draw_bcv_gene_factor, sample_counts

_R_NAMES = {
    "nGenes": "n_genes", "batchCells": "batch_cells", "batch.facLoc": "batch_fac_loc",
    "batch.facScale": "batch_fac_scale", "mean.shape": "mean_shape", "mean.rate": "mean_rate",
    "lib.loc": "lib_loc", "lib.scale": "lib_scale", "out.prob": "out_prob",
    "out.facLoc": "out_fac_loc", "out.facScale": "out_fac_scale", "group.prob": "group_prob",
    "de.prob": "de_prob", "de.downProb": "de_down_prob", "de.facLoc": "de_fac_loc",
    "de.facScale": "de_fac_scale", "bcv.common": "bcv_common", "bcv.df": "bcv_df",
    "dropout.type": "dropout_type", "dropout.mid": "dropout_mid",
    "dropout.shape": "dropout_shape", "path.from": "path_from", "path.nSteps": "path_n_steps",
    "path.skew": "path_skew", "path.nonlinearProb": "path_nonlinear_prob",
    "path.sigmaFac": "path_sigma_fac", "seed": "seed", "method": "method",
}
#: Splatter name -> Python field name (``nCells`` is handled as ``batchCells=[nCells]``).
SPLATTER_NAME_MAP = dict(_R_NAMES)


def _tup(x):
    return tuple(float(v) for v in np.atleast_1d(x))


@dataclass(frozen=True)
class SplatParams:
    """Splat parameters with Splatter's defaults; per-group/per-batch values may be tuples."""

    n_genes: int = 10000
    batch_cells: tuple = (100,)
    batch_fac_loc: tuple | float = 0.1
    batch_fac_scale: tuple | float = 0.1
    mean_shape: float = 0.6
    mean_rate: float = 0.3
    lib_loc: float = 11.0
    lib_scale: float = 0.2
    out_prob: float = 0.05
    out_fac_loc: float = 4.0
    out_fac_scale: float = 0.5
    group_prob: tuple = (1.0,)
    de_prob: tuple | float = 0.1
    de_down_prob: tuple | float = 0.5
    de_fac_loc: tuple | float = 0.1
    de_fac_scale: tuple | float = 0.4
    bcv_common: float = 0.1
    bcv_df: float = 60.0
    dropout_type: str = "none"
    dropout_mid: float = 0.0
    dropout_shape: float = -1.0
    method: str = "groups"
    path_from: tuple = (0,)
    path_n_steps: tuple | int = 100
    path_skew: tuple | float = 0.5
    path_nonlinear_prob: float = 0.1
    path_sigma_fac: float = 0.8
    seed: int = 0

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("batch_cells", tuple(int(v) for v in np.atleast_1d(self.batch_cells)))
        set_("group_prob", _tup(self.group_prob))
        set_("path_from", tuple(int(v) for v in np.atleast_1d(self.path_from)))
        for k in ("batch_fac_loc", "batch_fac_scale", "de_prob", "de_down_prob", "de_fac_loc",
                  "de_fac_scale", "path_skew"):
            set_(k, _tup(getattr(self, k)))
        set_("path_n_steps", tuple(int(v) for v in np.atleast_1d(self.path_n_steps)))
        self._validate()

    # --- validation -------------------------------------------------------------------------
    def _validate(self):
        def bad(name, why):
            raise ValueError(f"SplatParams.{name}: {why}")

        if int(self.n_genes) < 1:
            bad("n_genes", f"must be >= 1, got {self.n_genes}")
        if not self.batch_cells or any(c < 0 for c in self.batch_cells) or sum(self.batch_cells) < 1:
            bad("batch_cells", f"needs >= 1 cell in total and no negative counts, got {self.batch_cells}")
        if self.method not in ("single", "groups", "paths"):
            bad("method", f"must be 'single', 'groups' or 'paths', got {self.method!r}")
        if self.dropout_type not in ("none", "experiment"):
            bad("dropout_type", f"must be 'none' or 'experiment', got {self.dropout_type!r}")
        gp = np.array(self.group_prob)
        if (gp < 0).any() or (gp > 1).any():
            bad("group_prob", f"probabilities must lie in [0, 1], got {self.group_prob}")
        if abs(gp.sum() - 1) > 1e-6:
            bad("group_prob", f"must sum to 1, sums to {gp.sum():.6g}")
        for k in ("out_prob", "de_prob", "de_down_prob", "path_nonlinear_prob", "path_skew"):
            v = np.atleast_1d(getattr(self, k))
            if (v < 0).any() or (v > 1).any() or not np.isfinite(v).all():
                bad(k, f"probabilities must lie in [0, 1], got {getattr(self, k)}")
        for k in ("mean_shape", "mean_rate", "bcv_df"):
            if not getattr(self, k) > 0:
                bad(k, f"must be > 0, got {getattr(self, k)}")
        for k in ("lib_scale", "out_fac_scale", "bcv_common", "path_sigma_fac"):
            if getattr(self, k) < 0:
                bad(k, f"must be >= 0, got {getattr(self, k)}")
        for k in ("batch_fac_scale", "de_fac_scale"):
            if (np.array(getattr(self, k)) < 0).any():
                bad(k, f"must be >= 0, got {getattr(self, k)}")
        ng = self.n_groups
        for k in ("de_prob", "de_down_prob", "de_fac_loc", "de_fac_scale"):
            if len(getattr(self, k)) not in (1, ng):
                bad(k, f"needs 1 or n_groups={ng} values, got {len(getattr(self, k))}")
        nb = len(self.batch_cells)
        for k in ("batch_fac_loc", "batch_fac_scale"):
            if len(getattr(self, k)) not in (1, nb):
                bad(k, f"needs 1 or n_batches={nb} values, got {len(getattr(self, k))}")
        if self.method == "paths":
            pf = self.path_from if len(self.path_from) == ng else (0,) * ng if self.path_from == (0,) else None
            if pf is None:
                bad("path_from", f"needs n_groups={ng} values, got {self.path_from}")
            for k, src in enumerate(pf, start=1):
                if not 0 <= src <= ng or src == k:
                    bad("path_from", f"path {k} starts from {src}; must be 0 or another path")
            # reject cycles: following path_from must reach 0
            for k in range(1, ng + 1):
                seen, cur = set(), k
                while cur != 0:
                    if cur in seen:
                        bad("path_from", f"cycle through path {k}")
                    seen.add(cur)
                    cur = pf[cur - 1]
            if any(s < 1 for s in self.path_n_steps) or len(self.path_n_steps) not in (1, ng):
                bad("path_n_steps", f"needs positive values (1 or n_groups), got {self.path_n_steps}")

    # --- derived ----------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return int(sum(self.batch_cells))

    @property
    def n_groups(self) -> int:
        return len(self.group_prob)

    @property
    def n_batches(self) -> int:
        return len(self.batch_cells)

    def replace(self, **kw) -> "SplatParams":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_splatter(cls, **kwargs) -> "SplatParams":
        """Build from Splatter's dotted names, e.g. ``from_splatter(**{"de.facScale": 0.2})``.

        Python field names are accepted too; ``nCells``/``n_cells`` set a single batch.
        """
        out = {}
        for k, v in kwargs.items():
            if k in ("nCells", "n_cells"):
                out["batch_cells"] = (int(v),)
            elif k in _R_NAMES:
                out[_R_NAMES[k]] = v
            elif k in {f.name for f in dataclasses.fields(cls)}:
                out[k] = v
            else:
                raise ValueError(f"unknown Splatter parameter {k!r}")
        if "dropout_type" in out and isinstance(out["dropout_type"], bool):
            out["dropout_type"] = "experiment" if out["dropout_type"] else "none"
        return cls(**out)


def _per(vals, k):
    return vals[k] if len(vals) > 1 else vals[0]


def lognormal_factors(n: int, sel_prob: float, neg_prob: float, loc: float, scale: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Splatter's getLNormFactors: 1 for unselected genes, LogNormal(loc, scale)^(+/-1) else.

    A selected factor is inverted with prob ``neg_prob``; factors drawn below 1 flip direction
    (so ``neg_prob`` is the share of down-regulated genes), shape (n,).
    """
    sel = rng.random(n) < sel_prob
    k = int(sel.sum())
    direction = np.where(rng.random(k) < neg_prob, -1.0, 1.0)
    facs = rng.lognormal(loc, scale, size=k)
    direction[facs < 1] *= -1
    out = np.ones(n)
    out[sel] = facs ** direction
    return out


@dataclass
class SplatModel:
    """All per-gene and per-cell quantities of one simulation (before counts)."""

    params: SplatParams
    var: pd.DataFrame
    obs: pd.DataFrame
    state_means: np.ndarray  # (S, G) unnormalised means per cell state
    cell_state: np.ndarray  # (N,) int
    lib_size: np.ndarray  # (N,) expected library size
    bcv_gene_factor: np.ndarray = field(default=None)


def build_model(params: SplatParams, rng: np.random.Generator) -> SplatModel:
    """Draw gene means, factors, groups/paths and library sizes (Splat steps 1-5)."""
    p = params
    G, N = int(p.n_genes), p.n_cells
    cell_names = [f"Cell{i + 1}" for i in range(N)]
    gene_names = [f"Gene{i + 1}" for i in range(G)]
    batch = np.repeat(np.arange(p.n_batches), p.batch_cells)
    lib = rng.lognormal(p.lib_loc, p.lib_scale, size=N)

    base = rng.gamma(p.mean_shape, 1.0 / p.mean_rate, size=G)
    out_fac = lognormal_factors(G, p.out_prob, 0.0, p.out_fac_loc, p.out_fac_scale, rng)
    gene_mean = np.where(out_fac != 1, np.median(base) * out_fac, base)
    var = pd.DataFrame({"Gene": gene_names, "BaseGeneMean": base, "OutlierFactor": out_fac,
                        "GeneMean": gene_mean}, index=gene_names)
    batch_fac = np.ones((p.n_batches, G))
    if p.n_batches > 1:
        for b in range(p.n_batches):
            batch_fac[b] = lognormal_factors(G, 1.0, 0.5, _per(p.batch_fac_loc, b),
                                             _per(p.batch_fac_scale, b), rng)
            var[f"BatchFacBatch{b + 1}"] = batch_fac[b]

    obs = pd.DataFrame({"Cell": cell_names, "Batch": [f"Batch{b + 1}" for b in batch]},
                       index=cell_names)
    obs["ExpLibSize"] = lib
    ng = p.n_groups
    if p.method == "single":
        state_base = gene_mean[None, :]
        cell_sub = np.zeros(N, dtype=int)
    else:
        group = rng.choice(ng, size=N, p=np.array(p.group_prob) / sum(p.group_prob))
        de = np.vstack([lognormal_factors(G, _per(p.de_prob, k), _per(p.de_down_prob, k),
                                          _per(p.de_fac_loc, k), _per(p.de_fac_scale, k), rng)
                        for k in range(ng)])
        if p.method == "groups":
            for k in range(ng):
                var[f"DEFacGroup{k + 1}"] = de[k]
            obs["Group"] = [f"Group{k + 1}" for k in group]
            state_base = gene_mean[None, :] * de
            cell_sub = group
        else:
            state_base, cell_sub, steps = _path_states(p, gene_mean, de, group, rng, var)
            obs["Group"] = [f"Path{k + 1}" for k in group]
            obs["Step"] = steps
    n_sub = state_base.shape[0]
    # cell state = (batch, sub-state); only build the combinations that occur
    combo = batch * n_sub + cell_sub
    uniq, cell_state = np.unique(combo, return_inverse=True)
    state_means = state_base[uniq % n_sub] * batch_fac[uniq // n_sub]
    obs["Batch"] = pd.Categorical(obs["Batch"], categories=[f"Batch{b + 1}" for b in range(p.n_batches)])
    if "Group" in obs:
        cats = [f"{'Path' if p.method == 'paths' else 'Group'}{k + 1}" for k in range(ng)]
        obs["Group"] = pd.Categorical(obs["Group"], categories=cats)
    return SplatModel(p, var, obs, state_means, cell_state.ravel(), lib)


def _path_states(p, gene_mean, de, path, rng, var):
    """States (path, step) of the path model; returns (means (S, G), cell sub-state, steps)."""
    ng, G = de.shape
    pf = p.path_from if len(p.path_from) == ng else (0,) * ng
    start, end = {}, {}

    def ends(k):  # resolves path_from chains (validated acyclic)
        if k not in end:
            s = gene_mean if pf[k] == 0 else ends(pf[k] - 1)
            start[k], end[k] = s, s * de[k]
        return end[k]

    rows, offsets = [], []
    for k in range(ng):
        ends(k)
        var[f"DEFacPath{k + 1}"] = de[k]
        n_steps = _per(p.path_n_steps, k)
        t = np.linspace(0.0, 1.0, n_steps)
        lfc = np.log(end[k]) - np.log(start[k])
        nonlinear = rng.random(G) < p.path_nonlinear_prob
        logm = np.log(start[k])[None, :] + t[:, None] * lfc[None, :]
        if nonlinear.any() and n_steps > 2:
            sig = p.path_sigma_fac * np.abs(lfc[nonlinear])
            walk = np.cumsum(rng.normal(size=(n_steps, nonlinear.sum())) / np.sqrt(n_steps - 1), axis=0)
            walk -= walk[:1]
            bridge = walk - t[:, None] * walk[-1:]  # Brownian bridge: 0 at both ends
            logm[:, nonlinear] += sig[None, :] * bridge
        var[f"SigmaFacPath{k + 1}"] = np.where(nonlinear, p.path_sigma_fac, 0.0)
        offsets.append(sum(len(r) for r in rows))
        rows.append(np.exp(logm))
    steps = np.empty(path.shape[0], dtype=int)
    for k in range(ng):
        n_steps = _per(p.path_n_steps, k)
        skew = _per(p.path_skew, k)
        w = np.linspace(skew, 1 - skew, n_steps) if n_steps > 1 else np.ones(1)
        w = np.ones(n_steps) if w.sum() <= 0 else w
        idx = np.flatnonzero(path == k)
        steps[idx] = rng.choice(n_steps, size=idx.size, p=w / w.sum())
    sub = np.array(offsets)[path] + steps
    return np.vstack(rows), sub, steps + 1


def simulate(params: SplatParams | None = None, *, chunk_cells: int | None = None, **overrides) -> ad.AnnData:
    """Run Splat; returns AnnData (cells x genes) like ``splatSimulate``.

    X: CSR float32 raw counts; obs: Cell, Batch, Group (and Step for paths), ExpLibSize;
    var: BaseGeneMean, OutlierFactor, GeneMean, BatchFacBatch*, DEFacGroup*/DEFacPath*.
    Cells are generated in chunks, so no dense cells x genes array of the full data exists.
    ``overrides`` replace fields of ``params`` (Python names).
    """
    params = (params or SplatParams()).replace(**overrides) if overrides else (params or SplatParams())
    rng = np.random.default_rng(params.seed)
    model = build_model(params, rng)
    gfac = draw_bcv_gene_factor(int(params.n_genes), params.bcv_df, rng)
    X = sample_counts(
        model.state_means, model.cell_state, model.lib_size, bcv_common=params.bcv_common,
        bcv_gene_factor=gfac, rng=rng, chunk_cells=chunk_cells,
        dropout_mid=params.dropout_mid if params.dropout_type == "experiment" else None,
        dropout_shape=params.dropout_shape,
    )
    adata = ad.AnnData(X=X, obs=model.obs, var=model.var)
    adata.uns["splat_params"] = {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in dataclasses.asdict(params).items()}
    return adata
