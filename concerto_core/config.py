"""Hyperparameters of a Concerto model, kept in one serialisable dataclass.

Defaults follow the paper's Methods. Where the authors' released code differs from
the paper, the paper is the default and the code's variant is an option:

==========================  ==========  =========================================
option                      paper       authors' released code
==========================  ==========  =========================================
``dropout``                 0.2         0.1
``tanh_after_pooling``      False       True (tanh on the pooled vector)
``value_batchnorm``         None        ``'shared'`` (BatchNorm on the input values)
``student_hidden_layers``   0           1 (a second dense layer in the student)
==========================  ==========  =========================================

``value_batchnorm`` chooses what the teacher scales each gene embedding by:

* ``None`` (paper): the cell's expressed values as they are.
* ``'shared'`` (authors' released code): every gene of the vocabulary, zeros included, after
  one BatchNorm with a single mean and variance over all cell x gene values of a source and a
  scalar scale/offset. The teacher then attends over all V genes of each cell, not only the
  expressed ones, and unexpressed genes enter with the (nonzero) normalised value of a zero;
  its work per mini-batch grows from the expressed entries to B x V.
* ``'per_gene'`` (an earlier variant of this package, neither paper nor code): each gene
  normalised with its own mean and variance per source (over all cells of the source,
  zeros counted) and a per-gene scale/offset; the teacher still sees the expressed genes only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

#: Values of ``ConcertoConfig.value_batchnorm`` besides ``None`` (see the module docstring).
VALUE_BATCHNORM = ("shared", "per_gene")


@dataclass
class ConcertoConfig:
    """Architecture and training hyperparameters.

    Attributes
    ----------
    embedding_dim
        d, the size of gene embeddings, attention hidden units and the output (paper: 128).
    dropout
        Dropout rate of the augmentation layers before the final dense layers (paper: 0.2).
    temperature
        tau of the NT-Xent loss (paper: 0.1).
    tanh_after_pooling, value_batchnorm, student_hidden_layers
        Variants of the authors' released code (see module docstring). ``value_batchnorm``
        is ``None``, ``'shared'`` or ``'per_gene'``; ``False`` means ``None``. ``True`` is
        refused as ambiguous, except in saved manifests, where it was written by versions
        whose only value BatchNorm was the per-gene one (read as ``'per_gene'``).
    bn_momentum, bn_epsilon
        BatchNorm running-statistics momentum and variance epsilon.
    precise_bn
        After training, recompute each source's BatchNorm statistics exactly over all of
        its training cells (instead of relying on running averages, which converge
        slowly when an epoch has few steps).
    precise_bn_max_cells
        Cap on the cells per source used by ``precise_bn``, and by the statistics of a
        query source unseen in training (``unseen_source='adapt'``): a seeded random sample
        above it; ``None``: all. 100,000 cells pin a mean to ~0.3% of a standard deviation,
        while a pass over a 10M-cell atlas would cost as much as an epoch.
    batch_size
        Cells per mini-batch. ``None`` (default): chosen from the number of training cells by
        :func:`concerto_core.training.choose_schedule` (256 on large data, smaller on small
        references, never below the paper's 32 unless there are fewer cells); the paper used 32.
    source_batches
        With a batch key, draw every mini-batch from a single source ("BatchNorm is only
        conducted within cells from the same source"); negatives then share the anchor's
        source, so source identity cannot help tell cells apart. False: mixed batches with
        per-source statistics inside each batch. Streamed (sharded) input cuts single-source
        batches within each read window; many small sources then give smaller batches.
    epochs
        Passes over the training cells (paper: 3). ``None`` (default): 3, or more when that
        gives fewer than ``SCHEDULE_RULE['min_steps']`` optimizer steps (small references);
        the choice and its reason are logged and saved in the manifest (``training_schedule``).
    lr, lr_end
        Adam learning rate at the start and the end of training; decays exponentially
        in epochs (paper: 1e-4 to 1e-6 at batch 32; the larger default batch uses larger
        rates).
    seed
        Seeds shuffling, dropout masks and initialisation.
    cpu_kernels
        How the hot spots are computed (the model is the same): the teacher's attention
        pooling and, in training, the student's BatchNorm + dropout as fused numba CPU
        kernels (``'numba'``) or as TensorFlow graphs (``'tensorflow'``); ``'auto'`` takes
        numba on CPU-only machines and TensorFlow where a GPU is visible. The student's
        dropout masks come from a different random stream in the two.
    mixed_precision
        ``None`` (float32), ``'bfloat16'`` or ``'float16'``: the attention pooling and dense
        layers compute in that dtype (weights, BatchNorm, softmax, loss stay float32;
        float16 adds dynamic loss scaling). For GPUs with tensor cores; on CPUs it is
        slower and disables the numba kernels for the teacher.
    """

    embedding_dim: int = 128
    dropout: float = 0.2
    temperature: float = 0.1
    tanh_after_pooling: bool = False
    value_batchnorm: str | None = None
    student_hidden_layers: int = 0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3
    precise_bn: bool = True
    precise_bn_max_cells: int | None = 100_000
    batch_size: int | None = None
    source_batches: bool = False
    epochs: int | None = None
    lr: float = 1e-3
    lr_end: float = 1e-4
    seed: int = 0
    cpu_kernels: str = "auto"
    mixed_precision: str | None = None

    def __post_init__(self) -> None:
        if self.value_batchnorm is False:
            self.value_batchnorm = None
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first invalid hyperparameter."""
        checks = [
            ("embedding_dim", self.embedding_dim >= 1, "must be a positive integer"),
            ("dropout", 0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("student_hidden_layers", self.student_hidden_layers >= 0, "must be >= 0"),
            ("bn_momentum", 0.0 <= self.bn_momentum < 1.0, "must be in [0, 1)"),
            ("bn_epsilon", self.bn_epsilon > 0, "must be > 0"),
            ("precise_bn_max_cells", self.precise_bn_max_cells is None or self.precise_bn_max_cells >= 1,
             "must be None or >= 1"),
            ("batch_size", self.batch_size is None or self.batch_size >= 2,
             "must be None (chosen from the data size) or >= 2 (contrastive loss needs negatives)"),
            ("epochs", self.epochs is None or self.epochs >= 1, "must be None (chosen from the data size) or >= 1"),
            ("lr", self.lr > 0, "must be > 0"),
            ("lr_end", self.lr_end > 0, "must be > 0"),
            ("cpu_kernels", self.cpu_kernels in ("auto", "numba", "tensorflow"),
             "must be 'auto', 'numba' or 'tensorflow'"),
            ("mixed_precision", self.mixed_precision in (None, "float16", "bfloat16"),
             "must be None, 'float16' or 'bfloat16'"),
            ("value_batchnorm", self.value_batchnorm is None or self.value_batchnorm in VALUE_BATCHNORM,
             "must be None, 'shared' (authors' code: one mean/variance over all cell x gene values) or "
             "'per_gene' (per-gene statistics, expressed genes only)"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"ConcertoConfig.{name}={getattr(self, name)!r} {what}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ConcertoConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown ConcertoConfig keys: {sorted(unknown)}; known: {sorted(known)}")
        if values.get("value_batchnorm") is True:
            # Saved before the option took names: its one value BatchNorm was the per-gene one.
            values = {**values, "value_batchnorm": "per_gene"}
        return cls(**values)

    def replace(self, **changes) -> "ConcertoConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_preset(cls, preset: str, **changes) -> "ConcertoConfig":
        """A named set of hyperparameters (:data:`PRESETS`), ``changes`` on top."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **changes})


#: Named hyperparameter sets (``ConcertoConfig.from_preset(name)``, ``Concerto(adata, preset=name)``).
#: ``'paper'``: the paper's pretraining (Methods, Hyperparameters: "learning rate ... from 1e-4 to
#: 1e-6 using Adam optimizer training for 3 epochs ... Mini-batch size equals to 32").
#: ``'small_reference'``: the paper's batch and epochs with Adam 1e-3 -> 1e-4, the only setting of the
#: real-reference study (benchmarks/study_real.py, README "What helps Concerto on small real
#: references") better than the paper's on the reference validation cells of all three tasks
#: (mean over seeds 0-2: HP 0.960 vs 0.893, pancreas 3-tech 0.975 vs 0.970, Ding PBMC 0.983 vs 0.944)
#: and on their queries (0.844 vs 0.602, 0.988 vs 0.975, 0.921 vs 0.857).
PRESETS = {
    "paper": {"batch_size": 32, "epochs": 3, "lr": 1e-4, "lr_end": 1e-6},
    "small_reference": {"batch_size": 32, "epochs": 3, "lr": 1e-3, "lr_end": 1e-4},
}


#: The schedule rule (:func:`choose_schedule`) for ``epochs`` / ``batch_size`` left as ``None``:
#: mini-batches of at most ``max_batch_size`` cells and at most 1/``min_batches_per_epoch`` of
#: the training cells (never below ``min_batch_size``, the paper's 32, unless there are fewer
#: cells), and at least ``epochs`` passes and ``min_steps`` optimizer steps (the paper's schedule,
#: batch 32 x 3 epochs, gives ~200 steps on its 2,142-cell HP reference), at most ``max_epochs``.
#: From ~17,000 cells on the result is the large-data schedule, batch 256 x 3 epochs.
SCHEDULE_RULE = {"max_batch_size": 256, "min_batch_size": 32, "min_batches_per_epoch": 32, "epochs": 3,
                 "min_steps": 200, "max_epochs": 100}


@dataclass(frozen=True)
class Schedule:
    """Epochs and mini-batch size of one training run, and where each came from."""

    epochs: int
    batch_size: int
    steps_per_epoch: int
    n_cells: int
    epochs_from: str        # 'given' (argument or config) or 'rule' (:data:`SCHEDULE_RULE`)
    batch_size_from: str
    reason: str

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps, "rule": dict(SCHEDULE_RULE)}


def choose_schedule(n_cells: int, epochs: int | None = None, batch_size: int | None = None,
                    rule: dict | None = None) -> Schedule:
    """Epochs and batch size for ``n_cells`` training cells; given values are kept as they are.

    ``batch_size=None``: ``min(max_batch_size, max(min_batch_size, n_cells // min_batches_per_epoch))``,
    at most ``n_cells``. ``epochs=None``: the fewest epochs >= ``rule['epochs']`` that give
    ``min_steps`` optimizer steps, at most ``max_epochs``. A 175-cell reference at the fixed
    256 x 3 would get 3 steps in all; here it gets 32-cell batches for 34 epochs (204 steps).
    """
    r = {**SCHEDULE_RULE, **(rule or {})}
    if n_cells < 2:
        raise ValueError(f"need at least 2 training cells (got {n_cells})")
    why = []
    if batch_size is None:
        batch = min(r["max_batch_size"], max(r["min_batch_size"], n_cells // r["min_batches_per_epoch"]), n_cells)
        batch = max(2, batch)
        why.append(f"batch {batch} = clip({n_cells} cells / {r['min_batches_per_epoch']}, "
                   f"{r['min_batch_size']}, {r['max_batch_size']})" + (" capped at the number of cells"
                                                                      if batch == n_cells else ""))
    else:
        batch = int(batch_size)
        why.append(f"batch {batch} as given")
    steps_per_epoch = max(1, math.ceil(n_cells / batch))
    if epochs is None:
        n_epochs = min(r["max_epochs"], max(r["epochs"], math.ceil(r["min_steps"] / steps_per_epoch)))
        if n_epochs == r["epochs"]:
            why.append(f"{n_epochs} epochs (the default; {steps_per_epoch * n_epochs} steps >= {r['min_steps']})")
        else:
            why.append(f"{n_epochs} epochs so that {steps_per_epoch} steps/epoch give >= {r['min_steps']} steps"
                       + (f" (capped at {r['max_epochs']} epochs)" if n_epochs == r["max_epochs"] else ""))
    else:
        n_epochs = int(epochs)
        why.append(f"{n_epochs} epochs as given")
    return Schedule(n_epochs, batch, steps_per_epoch, int(n_cells), "rule" if epochs is None else "given",
                    "rule" if batch_size is None else "given", "; ".join(why))
