"""Training loops: contrastive pretraining (eqs 7-9) and supervised fine-tuning (eqs 12-13).

Both loops report progress the same way (:class:`EpochProgress`: a progress bar on a
terminal, one log line per epoch otherwise), refuse a loss that is not finite, and return
one history record per epoch. Contrastive training writes a checkpoint after every epoch
when asked (:mod:`concerto_core.checkpoint`) and resumes from the last one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from . import io as model_io
from .checkpoint import TrainingCheckpoint, describe_mismatch, optimizer_variables
from .config import SCHEDULE_RULE, Schedule, choose_schedule  # noqa: F401 (SCHEDULE_RULE: public name)
from .data import slice_cells
from .engine import batch_signature, precise_batchnorm, reset_fallback_statistics, stream
from .losses import nt_xent_loss_replica
from .settings import show_progress_bar

log = logging.getLogger("concerto_core")

#: The paper's fine-tuning stage (Methods, "Hyperparameters": "For fine-tuning stage, learning
#: rate is set to be 1e-3 using Adam optimizer training for 1 epoch"; mini-batch 32).
PAPER_FINETUNE = {"lr": 1e-3, "epochs": 1, "batch_size": 32}


@dataclass(frozen=True)
class TrainingSettings:
    """What one ``train()`` call uses; recorded in the history, never written into the config."""

    epochs: int
    batch_size: int
    lr: float
    lr_end: float
    seed: int

    @classmethod
    def from_config(cls, config, n_cells: int | None = None, **overrides) -> "TrainingSettings":
        """Arguments given (not None) win over ``config``; epochs / batch size still None after
        that are chosen from ``n_cells`` by :func:`choose_schedule` (then needed)."""
        settings, _ = cls.resolve(config, n_cells, **overrides)
        return settings

    @classmethod
    def resolve(cls, config, n_cells: int | None = None, **overrides) -> tuple["TrainingSettings", Schedule | None]:
        """As :meth:`from_config`, also returning the :class:`Schedule` (None without ``n_cells``)."""
        values = {k: getattr(config, k) for k in ("epochs", "batch_size", "lr", "lr_end", "seed")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        schedule = None
        if n_cells is not None:
            schedule = choose_schedule(n_cells, values["epochs"], values["batch_size"])
            values.update(epochs=schedule.epochs, batch_size=schedule.batch_size)
        elif values["epochs"] is None or values["batch_size"] is None:
            raise ValueError("epochs / batch_size are None (chosen from the data size) but the number of "
                             "training cells is unknown here; pass them")
        settings = cls(int(values["epochs"]), int(values["batch_size"]), float(values["lr"]),
                       float(values["lr_end"]), int(values["seed"]))
        for name, ok, what in (("epochs", settings.epochs >= 1, ">= 1"), ("batch_size", settings.batch_size >= 2, ">= 2"),
                               ("lr", settings.lr > 0, "> 0"), ("lr_end", settings.lr_end > 0, "> 0")):
            if not ok:
                raise ValueError(f"{name}={getattr(settings, name)!r} must be {what}")
        return settings, schedule

    def to_dict(self) -> dict:
        return asdict(self)


class EpochProgress:
    """Progress of one epoch: a tqdm bar (cells, loss, cells/s) on a terminal, else nothing
    until the epoch's summary line."""

    def __init__(self, verbose: bool, n_cells: int, epoch: int, epochs: int, what: str = "epoch"):
        self.n, self.t0, self.done, self.losses = n_cells, time.perf_counter(), 0, []
        self.label = f"{what} {epoch}/{epochs}"
        self.verbose = verbose
        self.bar = None
        if show_progress_bar(verbose):
            try:
                from tqdm.auto import tqdm
            except ImportError:  # optional: plain epoch lines without it
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=n_cells, desc=f"[concerto] {self.label}", unit="cells", leave=False)

    def update(self, cells: int, loss: float) -> None:
        self.done += cells
        self.losses.append(loss)
        if not math.isfinite(loss):
            self.close()
            raise FloatingPointError(f"training diverged: the loss became {loss} in {self.label} after {self.done} "
                                     "cells; lower the learning rate or check the input values")
        if self.bar is not None:
            self.bar.update(cells)
            if len(self.losses) % 10 == 1:
                self.bar.set_postfix(loss=f"{np.mean(self.losses[-50:]):.4f}",
                                     cells_s=f"{self.done / max(time.perf_counter() - self.t0, 1e-9):.0f}")

    def close(self) -> dict:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        seconds = time.perf_counter() - self.t0
        return {"loss": float(np.mean(self.losses)) if self.losses else float("nan"), "seconds": round(seconds, 3),
                "cells_per_s": round(self.n / max(seconds, 1e-9), 1)}


def resolve_strategy(strategy):
    """None / 'none' -> None; 'mirrored' / 'multiworker' -> a tf.distribute strategy; or pass one."""
    if strategy is None or strategy in ("none", "default"):
        return None
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy={strategy!r}; use None, 'mirrored', 'multiworker' or a tf.distribute.Strategy")


def make_optimizer(schedule, variables, mixed_precision=None):
    """Adam over ``variables``; float16 mixed precision adds dynamic loss scaling."""
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    if mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def run_description(model, settings: TrainingSettings) -> dict:
    """What a checkpoint must match to be resumed: genes, sources, architecture, settings."""
    return {"vocabularies": {m: v.names.tolist() for m, v in model.vocabularies.items()},
            "sources": list(model.sources), "config": model.config.to_dict(), "training": settings.to_dict()}


def _contrastive_step(network, optimizer, temperature: float):
    """One optimisation step on a (replica's) batch: NT-Xent between teacher and student."""
    variables = network.trainable_variables
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(batch):
        with tf.GradientTape() as tape:
            loss = nt_xent_loss_replica(network.teacher(batch, training=True), network.student(batch, training=True),
                                        temperature)
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
        optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return loss

    return replica_step


def _distributed_batches(inputs, settings, by_source, strategy):
    """Every worker builds the same global batch (same seed) and keeps its replicas' slices."""
    replicas = strategy.num_replicas_in_sync

    def batches_of(epoch):
        for batch in inputs.iter_epoch(epoch, settings.seed, settings.batch_size, by_source=by_source):
            n = len(batch["source"])
            bounds = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(n), replicas)])
            value = strategy.experimental_distribute_values_from_function(
                lambda ctx, b=batch, e=bounds: slice_cells(b, e[ctx.replica_id_in_sync_group],
                                                           e[ctx.replica_id_in_sync_group + 1]))
            yield value, n

    return batches_of


def fit_contrastive(model, inputs, settings: TrainingSettings, checkpoint_dir=None, strategy=None,
                    rebuild_network=None) -> list:
    """Contrastive pretraining of ``model.network`` on ``inputs`` (CellInputs or sharded cells).

    Adam with the learning rate decaying exponentially from ``settings.lr`` to ``lr_end``
    over all steps; every epoch shuffles and splits the cells into ``ceil(n / batch_size)``
    near-equal batches (none dropped). Appends one record per epoch to ``model.history``
    and sets ``model.epochs_trained``. With ``checkpoint_dir`` every epoch is checkpointed
    and a later call resumes after the last one. With a ``strategy``, ``rebuild_network()``
    makes the mirrored copy in the strategy's scope. Finally the BatchNorm statistics are
    recomputed per source (``config.precise_bn``) and the fallback slot reset.
    """
    cfg, n = model.config, inputs.n_cells
    steps = max(1, math.ceil(n / settings.batch_size))
    schedule = keras.optimizers.schedules.ExponentialDecay(
        settings.lr, decay_steps=steps * settings.epochs, decay_rate=settings.lr_end / settings.lr)
    strategy = resolve_strategy(strategy)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if settings.batch_size < 2 * replicas:
        raise ValueError(f"batch_size={settings.batch_size} is too small for {replicas} replicas (need >= 2 per replica)")
    plain = model.network
    if strategy is not None:
        with strategy.scope():  # mirrored copies of the current weights
            model.network = rebuild_network()
            copy_variables(plain, model.network)
            optimizer = make_optimizer(schedule, model.network.trainable_variables, cfg.mixed_precision)
    else:
        optimizer = make_optimizer(schedule, model.network.trainable_variables, cfg.mixed_precision)
    keras.utils.set_random_seed(settings.seed)
    checkpoint = TrainingCheckpoint(checkpoint_dir) if checkpoint_dir else None
    start = _resume(model, checkpoint, optimizer, settings) if checkpoint else 0
    by_source = bool(cfg.source_batches and model.batch_key is not None)
    replica_step = _contrastive_step(model.network, optimizer, cfg.temperature)
    if strategy is None:
        train_step = tf.function(replica_step, input_signature=[batch_signature(model.modalities)])

        def batches_of(epoch):
            for batch in stream(inputs.iter_epoch(epoch, settings.seed, settings.batch_size, by_source=by_source),
                                model.modalities):
                yield batch, int(batch["source"].shape[0])
    else:
        @tf.function
        def train_step(dist_batch):
            per_replica = strategy.run(replica_step, args=(dist_batch,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        batches_of = _distributed_batches(inputs, settings, by_source, strategy)
    if model.verbose:
        log.info(f"training on {n} cells, {model.n_sources} source(s), modalities "
                 f"{ {m: len(v) for m, v in model.vocabularies.items()} }, {steps} steps/epoch, "
                 f"epochs {start + 1}..{settings.epochs}")
    try:
        for epoch in range(start, settings.epochs):
            progress = EpochProgress(model.verbose, n, epoch + 1, settings.epochs)
            for batch, cells in batches_of(epoch):
                progress.update(cells, float(train_step(batch)))
            record = {"epoch": epoch + 1, **progress.close(), "lr_end_of_epoch": float(schedule(optimizer.iterations)),
                      "batch_size": settings.batch_size}
            model.history.append(record)
            model.epochs_trained = epoch + 1
            if model.verbose:
                log.info(f"epoch {epoch + 1}/{settings.epochs}: loss {record['loss']:.4f}, {record['seconds']:.1f}s, "
                         f"{record['cells_per_s']:.0f} cells/s")
            if checkpoint is not None:
                checkpoint.write(epoch + 1, model_io.model_variables(model.network, include_rng_state=True),
                                 optimizer_variables(optimizer),
                                 {**run_description(model, settings), "history": model.history,
                                  "epochs_trained": model.epochs_trained})
    finally:
        if strategy is not None:  # back to one copy of each weight for statistics, embedding, saving
            copy_variables(model.network, plain)
            model.network = plain
    if cfg.precise_bn:
        seconds = precise_batchnorm(model.network, inputs, cfg)
        if model.verbose:
            log.info(f"BatchNorm statistics recomputed per source ({seconds:.1f}s)")
    reset_fallback_statistics(model.network)
    return model.history


def copy_variables(source_network, target_network) -> None:
    """Assign every weight, statistic and dropout RNG state of one network to another of the same shape."""
    values = model_io.model_variables(source_network, True)
    for path, target in model_io.model_variables(target_network, True).items():
        target.assign(values[path].numpy())


def _resume(model, checkpoint: TrainingCheckpoint, optimizer, settings) -> int:
    found = checkpoint.latest()
    if found is None:
        return 0
    state, path = found
    problem = describe_mismatch(state, run_description(model, settings), checkpoint.directory)
    if problem:
        raise ValueError(problem)
    checkpoint.restore(path, model_io.model_variables(model.network, include_rng_state=True), optimizer_variables(optimizer))
    model.history = list(state["history"])
    model.epochs_trained = int(state["epochs_trained"])
    if model.verbose:
        log.info(f"resumed from checkpoint {path} after epoch {model.epochs_trained}")
    return model.epochs_trained


def fit_supervised(network, head, inputs, codes, rows, modalities, *, epochs: int, lr: float, batch_size: int,
                   seed: int, train_teacher: bool, target=None, consistency_weight: float = 1.0,
                   verbose: bool = False) -> list:
    """Supervised fine-tuning (eq 12): cross-entropy of ``head`` on the teacher's output for the
    labelled ``rows`` of ``inputs`` (``codes``: label index per cell of ``inputs``).

    The teacher is trained with the head (``train_teacher``) or frozen (its dropout still
    augments the head's inputs). With ``target`` (unlabelled CellInputs), the domain-adaptation
    consistency loss (eq 13) weighted by ``consistency_weight`` is added: the fixed model's
    prediction on the target cells (no dropout, stored statistics, stop-gradient) is the
    target of the head's prediction on their student embedding with dropout. Returns the
    per-epoch history records.
    """
    variables = list(head.trainable_variables)
    if train_teacher:
        variables += branch_variables(network, "teacher") + (branch_variables(network, "student") if target is not None else [])
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    optimizer.build(variables)
    keras.utils.set_random_seed(seed)
    lam = tf.constant(float(consistency_weight), tf.float32)
    sig = batch_signature(modalities)

    def supervised(batch, y):
        logits = head(teacher_output(network, batch, train_teacher, True))
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

    @tf.function(input_signature=[sig, tf.TensorSpec([None], tf.int32)])
    def step(batch, y):
        with tf.GradientTape() as tape:
            loss = supervised(batch, y)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss, tf.constant(0.0)

    @tf.function(input_signature=[sig, tf.TensorSpec([None], tf.int32), sig])
    def step_da(batch, y, tbatch):
        fixed = tf.stop_gradient(tf.nn.softmax(head(teacher_output(network, tbatch, False, False)), axis=-1))
        with tf.GradientTape() as tape:
            sup = supervised(batch, y)
            aug = head(network.student(tbatch, training=True))  # augmented view: student embedding, dropout on
            cons = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=fixed, logits=aug))
            loss = sup + lam * cons
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss, cons

    n = len(rows)
    steps = max(1, math.ceil(n / batch_size))
    history = []
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        t_order = None if target is None else rng.permutation(target.n_cells)
        progress, cons_losses, pos = EpochProgress(verbose, n, epoch + 1, epochs, "fine-tune epoch"), [], 0
        for part in np.array_split(rows[rng.permutation(n)], steps):
            batch = inputs.batch(part, modalities)
            if target is None:
                loss, cons = step(batch, codes[part])
            else:
                t_rows = t_order[(pos + np.arange(len(part))) % target.n_cells]
                pos += len(part)
                loss, cons = step_da(batch, codes[part], target.batch(np.sort(t_rows), modalities))
            progress.update(len(part), float(loss))
            cons_losses.append(float(cons))
        summary = progress.close()
        record = {"epoch": epoch + 1, "loss": summary["loss"], "seconds": summary["seconds"]}
        if target is not None:
            record["consistency_loss"] = float(np.mean(cons_losses))
        history.append(record)
        if verbose:
            log.info(f"fine-tune epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}")
    return history


def teacher_output(network, batch, bn_training: bool, dropout: bool):
    """The teacher forward pass (as ``ConcertoNetwork.teacher``) with BatchNorm mode and
    dropout switched separately (a frozen teacher can still draw augmentation masks)."""
    h = network.teacher_bn(network.pooled(batch, bn_training), batch["source"], training=bn_training)
    return network.teacher_dense(network.teacher_dropout(h, training=dropout))


def branch_variables(network, branch: str):
    """Trainable variables of the ``'teacher'`` or ``'student'`` branch."""
    return [v for v in network.trainable_variables if model_io.variable_path(v, network.name).startswith(branch)]

