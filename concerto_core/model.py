"""The AnnData-facing Concerto model: construct, train, embed, attention, save, load."""

from __future__ import annotations

import json
import logging
import math
import os

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import scipy.sparse as sp
import tensorflow as tf

from . import io as model_io
from . import kernels
from .config import ConcertoConfig
from .data import CellInputs, normalise_modalities, prefetch, read_modality, slice_cells, spec_to_json
from .encoding import DEFAULT_MIN_GENE_OVERLAP, GeneVocabulary, encode_sources, looks_like_counts, warn_once
from .losses import nt_xent_loss_replica
from .network import ConcertoNetwork

log = logging.getLogger("concerto_core")

UNSEEN_SOURCE_MODES = ("adapt", "pooled")


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


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("concerto-core")
    except Exception:  # running from a source tree
        return "0.1.0+source"


class Concerto:
    """Concerto on an AnnData: contrastive pretraining of a teacher/student pair.

    Parameters
    ----------
    adata
        Training cells. ``X`` (or ``layer``) holds log-normalised values (counts work too,
        with a warning); CSR or dense; its ``var_names`` become the gene vocabulary. Any
        gene subset (e.g. HVGs) is chosen by subsetting ``adata`` before.
    batch_key
        ``obs`` column with the data source (batch) of each cell; switches on
        source-aware BatchNorm. ``None``: one source, ordinary BatchNorm.
    modalities
        Ordered dict name -> where the matrix is: ``"X"``, ``"layer:<name>"``,
        ``"obsm:<key>"`` (feature names from a DataFrame's columns or
        ``uns['<key>_names']``; ``"obsm:<key>:<uns key>"`` to name the uns key) or a
        second AnnData with the same cells. Default ``{"rna": "X"}``.
    config
        :class:`ConcertoConfig`; keyword arguments override its fields
        (e.g. ``Concerto(adata, epochs=5, dropout=0.1)``).
    verbose
        Print progress (per epoch loss and cells/s) to stderr.
    """

    def __init__(self, adata, batch_key=None, modalities=None, layer=None, config: ConcertoConfig | None = None,
                 verbose: bool = True, **hyperparameters):
        if adata is None or not hasattr(adata, "obs"):
            raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
        if adata.n_obs < 2:
            raise ValueError(f"need at least 2 cells to train (got {adata.n_obs})")
        self.config = (config or ConcertoConfig()).replace(**hyperparameters) if hyperparameters else (config or ConcertoConfig())
        self.verbose = verbose
        self.modality_specs = normalise_modalities(modalities, layer)
        matrices, self.vocabularies = {}, {}
        for m, spec in self.modality_specs.items():
            X, names = read_modality(adata, m, spec)
            self.vocabularies[m] = GeneVocabulary(names)
            matrices[m] = X
            if looks_like_counts(X):
                warn_once(
                    f"modality {m!r} looks like raw counts; the paper trains on log-normalised values "
                    "(sc.pp.normalize_total(target_sum=1e4); sc.pp.log1p)"
                )
        self.batch_key = batch_key
        if batch_key is not None:
            if batch_key not in adata.obs:
                raise KeyError(f"batch_key {batch_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:20]})")
            codes, self.sources = encode_sources(adata.obs[batch_key])
        else:
            codes, self.sources = np.zeros(adata.n_obs, dtype=np.int32), ["all"]
        self._train_inputs = CellInputs(matrices, codes)
        self.history: list[dict] = []
        self.epochs_trained = 0
        self.network = self._build_network()

    # ------------------------------------------------------------------ construction
    @property
    def n_sources(self) -> int:
        return len(self.sources)

    @property
    def modalities(self) -> list:
        return list(self.vocabularies)

    def _build_network(self) -> ConcertoNetwork:
        keras.utils.set_random_seed(self.config.seed)
        net = ConcertoNetwork({m: len(v) for m, v in self.vocabularies.items()}, self.n_sources, self.config)
        if net.fused_student:
            seconds = kernels.warm_up()
            if seconds > 2:
                self._say(f"compiled the CPU kernels ({seconds:.0f}s, cached for later runs)")
        # Build every layer with a one-cell dummy batch so weights exist before loading.
        dummy = {"source": np.zeros(2, np.int32)}
        for m in self.modalities:
            dummy.update({f"{m}_idx": np.zeros(2, np.int32), f"{m}_val": np.zeros(2, np.float32),
                          f"{m}_row": np.arange(2, dtype=np.int32), f"{m}_len": np.ones(2, np.int32)})
        net(dummy, training=False)
        return net

    def _signature(self, modalities=None) -> dict:
        sig = {"source": tf.TensorSpec([None], tf.int32)}
        for m in modalities or self.modalities:
            sig[f"{m}_idx"] = tf.TensorSpec([None], tf.int32)
            sig[f"{m}_val"] = tf.TensorSpec([None], tf.float32)
            sig[f"{m}_row"] = tf.TensorSpec([None], tf.int32)
            sig[f"{m}_len"] = tf.TensorSpec([None], tf.int32)
        return sig

    def _stream(self, batches, modalities=None):
        """Tensors of an iterator of numpy batch dicts, assembled ahead in a background thread."""
        signature = self._signature(modalities)

        def to_tensors(batch):
            return {key: tf.convert_to_tensor(batch[key], dtype=spec.dtype) for key, spec in signature.items()}

        return prefetch(batches, depth=2, convert=to_tensors)

    def _ordered(self, inputs, modalities, rows=None, batch_size: int = 512, slot=None):
        """(row indices, tf batch) in order; ``slot`` overrides every cell's BatchNorm source slot."""
        order = []

        def gen():
            for part, batch in inputs.iter_ordered(batch_size, modalities, rows):
                order.append(part)
                if slot is not None:
                    batch["source"] = np.full(len(part), slot, np.int32)
                yield batch

        for i, batch in enumerate(self._stream(gen(), modalities)):
            yield order[i], batch

    # ------------------------------------------------------------------ training
    def train(self, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
              lr_end: float | None = None, checkpoint_dir=None, seed: int | None = None, strategy=None) -> "Concerto":
        """Contrastive pretraining (Methods eqs 7-9) with Adam.

        The learning rate decays exponentially from ``lr`` to ``lr_end`` over the
        requested epochs. Every epoch shuffles the cells and splits them into
        ``ceil(n / batch_size)`` near-equal mini-batches (no cell dropped). With
        ``checkpoint_dir``, weights, optimizer state and progress are saved after every
        epoch and a later call with the same directory resumes from the last epoch.

        ``strategy``: ``None`` (one device; a visible GPU is used automatically),
        ``'mirrored'`` (all local GPUs), ``'multiworker'`` (several machines, from
        ``TF_CONFIG``) or a ``tf.distribute.Strategy``. ``batch_size`` stays the *global*
        batch: it is split across replicas, NT-Xent negatives come from the global batch
        (embeddings are all-gathered) and source-aware BatchNorm statistics are all-reduced,
        so training matches one device with the same global batch.
        """
        cfg = self.config.replace(**{k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr,
                                                             lr_end=lr_end, seed=seed).items() if v is not None})
        self.config = cfg
        inputs = self._train_inputs
        if inputs is None:
            raise RuntimeError("this model was loaded without training data; use Concerto.finetune_query or build a new model")
        n = inputs.n_cells
        steps = max(1, math.ceil(n / cfg.batch_size))
        total_steps = steps * cfg.epochs
        schedule = keras.optimizers.schedules.ExponentialDecay(
            cfg.lr, decay_steps=total_steps, decay_rate=cfg.lr_end / cfg.lr
        )
        strategy = resolve_strategy(strategy)
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        if cfg.batch_size < 2 * replicas:
            raise ValueError(f"batch_size={cfg.batch_size} is too small for {replicas} replicas (need >= 2 per replica)")
        plain_network = self.network
        if strategy is not None:
            # Mirrored copies of the current weights, created in the strategy's scope.
            with strategy.scope():
                self.network = self._build_network()
                current = model_io.model_variables(plain_network, True)
                for path, target in model_io.model_variables(self.network, True).items():
                    target.assign(current[path].numpy())
                optimizer = self._optimizer(schedule)
        else:
            optimizer = self._optimizer(schedule)
        keras.utils.set_random_seed(cfg.seed)

        start_epoch = 0
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        if ckpt is not None:
            start_epoch = self._restore_checkpoint(ckpt, optimizer)

        network, variables = self.network, self.network.trainable_variables
        loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        by_source = bool(cfg.source_batches and self.batch_key is not None)

        def replica_step(batch):
            with tf.GradientTape() as tape:
                z_t = network.teacher(batch, training=True)
                z_s = network.student(batch, training=True)
                loss = nt_xent_loss_replica(z_t, z_s, cfg.temperature)
                scaled = optimizer.scale_loss(loss) if loss_scaling else loss
            grads = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return loss

        if strategy is None:
            train_step = tf.function(replica_step, input_signature=[self._signature()], reduce_retracing=True)

            def batches_of(epoch):
                return self._stream(inputs.iter_epoch(epoch, cfg.seed, cfg.batch_size, by_source=by_source))
        else:
            @tf.function(reduce_retracing=True)
            def train_step(dist_batch):
                per_replica = strategy.run(replica_step, args=(dist_batch,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            def batches_of(epoch):
                # Every worker builds the same global batch (same seed) and keeps its replicas' slices.
                for batch in inputs.iter_epoch(epoch, cfg.seed, cfg.batch_size, by_source=by_source):
                    bounds = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(len(batch["source"])), replicas)])
                    yield strategy.experimental_distribute_values_from_function(
                        lambda ctx, b=batch, e=bounds: slice_cells(b, e[ctx.replica_id_in_sync_group],
                                                                   e[ctx.replica_id_in_sync_group + 1]))

        self._say(f"training on {n} cells, {len(self.sources)} source(s), modalities "
                  f"{ {m: len(v) for m, v in self.vocabularies.items()} }, {steps} steps/epoch, "
                  f"epochs {start_epoch + 1}..{cfg.epochs}")
        for epoch in range(start_epoch, cfg.epochs):
            t0, losses, last_print, done = time.perf_counter(), [], time.perf_counter(), 0
            for batch in batches_of(epoch):
                losses.append(float(train_step(batch)))
                done = min(n, done + cfg.batch_size) if strategy is not None else done + int(batch["source"].shape[0])
                if time.perf_counter() - last_print > 30:
                    last_print = time.perf_counter()
                    self._say(f"  epoch {epoch + 1}: {done}/{n} cells, loss {np.mean(losses[-50:]):.4f}, "
                              f"{done / (last_print - t0):.0f} cells/s")
            seconds = time.perf_counter() - t0
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(seconds, 3),
                      "cells_per_s": round(n / seconds, 1), "lr_end_of_epoch": float(schedule(optimizer.iterations))}
            self.history.append(record)
            self.epochs_trained = epoch + 1
            self._say(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f}, {seconds:.1f}s, "
                      f"{record['cells_per_s']:.0f} cells/s")
            if ckpt is not None:
                self._write_checkpoint(ckpt, optimizer)
        if strategy is not None:
            # Back to an ordinary network (one copy of each weight) for statistics, embedding, saving.
            trained = model_io.model_variables(self.network, True)
            for path, target in model_io.model_variables(plain_network, True).items():
                target.assign(trained[path].numpy())
            self.network = plain_network
            self.__dict__.pop("_fn_cache", None)
        if cfg.precise_bn:
            self._precise_batchnorm(inputs)
        self._reset_fallback_statistics()
        return self

    def _optimizer(self, schedule):
        """Adam over the network's weights; float16 mixed precision adds dynamic loss scaling."""
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
        if self.config.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(self.network.trainable_variables)
        return optimizer

    def _say(self, message: str) -> None:
        log.info(message)
        if self.verbose:
            print(f"[concerto] {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict:
        return {"epochs_trained": self.epochs_trained, "history": self.history, "config": self.config.to_dict(),
                "vocab_sizes": {m: len(v) for m, v in self.vocabularies.items()}, "sources": self.sources}

    def _write_checkpoint(self, directory: Path, optimizer) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        model_io.save_variables(directory / "network.weights.h5", model_io.model_variables(self.network, include_rng_state=True))
        model_io.save_variables(directory / "optimizer.weights.h5", {f"v{i:05d}": v for i, v in enumerate(optimizer.variables)})
        state = json.dumps(self._checkpoint_state(), indent=1).encode()
        model_io.atomic_write_bytes(directory / "state.json", lambda tmp: Path(tmp).write_bytes(state))

    def _restore_checkpoint(self, directory: Path, optimizer) -> int:
        state_file = directory / "state.json"
        if not state_file.exists():
            return 0
        state = json.loads(state_file.read_text())
        mine = self._checkpoint_state()
        for key in ("vocab_sizes", "sources"):
            if state[key] != mine[key]:
                raise ValueError(f"checkpoint in {directory} was written for different data ({key} differs); "
                                 "use another checkpoint_dir or delete it")
        fixed = {k: v for k, v in state["config"].items() if k not in ("epochs",)}
        now = {k: v for k, v in mine["config"].items() if k not in ("epochs",)}
        if fixed != now:
            diff = sorted(k for k in fixed if fixed[k] != now.get(k))
            raise ValueError(f"checkpoint in {directory} used other hyperparameters ({diff}); use another checkpoint_dir")
        model_io.load_variables(directory / "network.weights.h5", model_io.model_variables(self.network, include_rng_state=True), "checkpoint")
        model_io.load_variables(directory / "optimizer.weights.h5", {f"v{i:05d}": v for i, v in enumerate(optimizer.variables)}, "optimizer checkpoint")
        self.history = state["history"]
        self.epochs_trained = state["epochs_trained"]
        self._say(f"resumed from checkpoint {directory} after epoch {self.epochs_trained}")
        return self.epochs_trained

    # ------------------------------------------------------------------ BatchNorm statistics
    def _moments_fn(self, modalities, phases: tuple):
        """tf.function: per-slot sums and sums of squares of each BatchNorm input of ``phases``.

        Count-vector inputs are summed from the sparse entries (segment sums over
        slot x feature), never densified; the pooled input needs the teacher's forward pass.
        """
        key = ("moments", phases) + tuple(modalities)
        cache = self.__dict__.setdefault("_fn_cache", {})
        if key not in cache:
            net, slots = self.network, self.n_sources + 1
            layers = [(name, kind) for name, _, kind in net.source_aware_layers()
                      if kind.split(":")[0] in phases and (kind == "pooled" or kind.split(":")[1] in modalities)]

            def f(batch):
                onehot = tf.one_hot(batch["source"], slots, dtype=tf.float32)
                out = {"__count": tf.reduce_sum(onehot, axis=0)}
                pooled = net.pooled(batch, training=False) if "pooled" in phases else None
                for name, kind in layers:
                    if kind == "pooled":
                        out[name] = tf.stack([tf.matmul(onehot, pooled, transpose_a=True),
                                              tf.matmul(onehot, tf.square(pooled), transpose_a=True)])
                        continue
                    m = kind.split(":")[1]
                    n_features = net.vocab_sizes[m]
                    segment = tf.gather(batch["source"], batch[f"{m}_row"]) * n_features + batch[f"{m}_idx"]
                    val = batch[f"{m}_val"]
                    sums = [tf.math.unsorted_segment_sum(v, segment, slots * n_features) for v in (val, val * val)]
                    out[name] = tf.reshape(tf.stack(sums), [2, slots, n_features])
                return out

            cache[key] = (tf.function(f, input_signature=[self._signature(modalities)]), layers)
        return cache[key]

    def _estimate_statistics(self, inputs, rows=None, slot=None, modalities=None, batch_size: int = 512) -> None:
        """Set BatchNorm statistics to their exact values over cells (streamed, forward order).

        ``slot=None``: every source slot gets the statistics of its own cells (precise BN).
        ``slot=s``: all cells (``rows``) are pooled into slot ``s`` (adaptation of an unseen source).
        With ``value_batchnorm`` the teacher's input depends on count-vector statistics, so
        those are finished in a first pass; otherwise one pass does every layer.
        """
        modalities = modalities or self.modalities
        layers = {name: layer for name, layer, _ in self.network.source_aware_layers()}
        passes = [("counts",), ("pooled",)] if self.config.value_batchnorm else [("counts", "pooled")]
        for phases in passes:
            fn, names = self._moments_fn(modalities, phases)
            if not names:
                continue
            acc = {}
            for _, batch in self._ordered(inputs, modalities, rows, batch_size, slot):
                for key, value in fn(batch).items():
                    value = value.numpy().astype(np.float64)
                    acc[key] = acc[key] + value if key in acc else value
            if not acc:
                return
            count = acc.pop("__count")
            for name, _ in names:
                total, total_sq = acc[name]
                for s_ in np.flatnonzero(count > 0):
                    mean = total[s_] / count[s_]
                    var = np.maximum(total_sq[s_] / count[s_] - mean**2, 0.0)
                    layers[name].set_statistics(int(s_), mean.astype(np.float32), var.astype(np.float32))

    def _statistics_sample(self, rows: np.ndarray) -> np.ndarray:
        """``rows``, or a seeded sorted sample of ``config.precise_bn_max_cells`` of them."""
        cap = self.config.precise_bn_max_cells
        if cap is None or len(rows) <= cap:
            return rows
        return np.sort(np.random.default_rng([self.config.seed, 11]).choice(rows, size=cap, replace=False))

    def _precise_batchnorm(self, inputs) -> None:
        """Replace running averages by each source's statistics over its training cells (all of
        them, or a seeded random sample of ``config.precise_bn_max_cells`` per source)."""
        t0 = time.perf_counter()
        cap = self.config.precise_bn_max_cells
        rows = None
        counts = np.bincount(inputs.source, minlength=self.n_sources)
        if cap is not None and counts.max() > cap:
            rows = np.sort(np.concatenate([self._statistics_sample(np.flatnonzero(inputs.source == s))
                                           for s, n in enumerate(counts) if n > 0]))
        self._estimate_statistics(inputs, rows)
        used = inputs.n_cells if rows is None else len(rows)
        self._say(f"BatchNorm statistics recomputed over {used} training cells ({time.perf_counter() - t0:.1f}s)")

    def _reset_fallback_statistics(self) -> None:
        """Fallback slot (unseen sources) := average of the training sources' statistics."""
        for _, layer, _ in self.network.source_aware_layers():
            mean = layer.moving_mean.numpy()[: self.n_sources].mean(0)
            var = layer.moving_variance.numpy()[: self.n_sources].mean(0)
            layer.set_statistics(self.n_sources, mean, var)

    # ------------------------------------------------------------------ inference
    def _embed_fn(self, modalities, student: bool):
        key = ("embed", student) + tuple(modalities)
        cache = self.__dict__.setdefault("_fn_cache", {})
        if key not in cache:
            net = self.network

            def f(b):
                z = tf.math.l2_normalize(net.teacher(b, training=False), axis=1)
                if student:
                    return z, tf.math.l2_normalize(net.student(b, training=False), axis=1)
                return z, z

            cache[key] = tf.function(f, input_signature=[self._signature(modalities)])
        return cache[key]

    def _query_inputs(self, adata, modalities=None, batch_key="__model__", min_gene_overlap=None,
                      unseen_source="adapt"):
        """Align a query AnnData to the model (genes by name, sources by label)."""
        if adata is None or not hasattr(adata, "obs"):
            raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
        if adata.n_obs == 0:
            raise ValueError("the query AnnData has no cells")
        if unseen_source not in UNSEEN_SOURCE_MODES:
            raise ValueError(f"unseen_source={unseen_source!r}; allowed: {UNSEEN_SOURCE_MODES}")
        if modalities is None:
            specs = {m: s for m, s in self.modality_specs.items()}
        elif isinstance(modalities, (list, tuple)):
            unknown = [m for m in modalities if m not in self.vocabularies]
            if unknown:
                raise ValueError(f"modalities {unknown} are not in the model (has {self.modalities})")
            specs = {m: self.modality_specs[m] for m in modalities}
        else:
            specs = normalise_modalities(modalities)
            unknown = [m for m in specs if m not in self.vocabularies]
            if unknown:
                raise ValueError(f"modalities {unknown} are not in the model (has {self.modalities})")
        min_overlap = DEFAULT_MIN_GENE_OVERLAP if min_gene_overlap is None else min_gene_overlap
        matrices, reports = {}, {}
        for m, spec in specs.items():
            if spec == "adata":
                raise ValueError(f"modality {m!r} came from a second AnnData at training; pass it via modalities={{'{m}': adata_{m}}}")
            X, names = read_modality(adata, m, spec)
            matrices[m], report = self.vocabularies[m].align(X, names, modality=m, min_overlap=min_overlap)
            reports[m] = report
            self._say(str(report))
        key = self.batch_key if batch_key == "__model__" else batch_key
        if self.batch_key is None:
            codes = np.zeros(adata.n_obs, np.int32)
        elif key is None:
            warn_once("no batch_key given for the query: all query cells are treated as one unseen source")
            codes = np.full(adata.n_obs, -1, np.int32)
        else:
            if key not in adata.obs:
                raise KeyError(f"batch_key {key!r} is not a column of the query's obs (columns: {list(adata.obs.columns)[:20]}); "
                               "pass batch_key=None to treat all query cells as one unseen source")
            codes, _ = encode_sources(adata.obs[key], self.sources)
        unseen = {}
        if (codes < 0).any():
            labels = adata.obs[key].astype(str).to_numpy() if (key is not None and key in adata.obs) else np.full(adata.n_obs, "query")
            for label in pd.unique(labels[codes < 0]):
                unseen[label] = np.flatnonzero((codes < 0) & (labels == label))
            what = ("their own statistics (computed over all their cells)" if unseen_source == "adapt"
                    else "the average statistics of the training sources")
            warn_once(f"source(s) {sorted(unseen)[:10]} were not seen in training; their BatchNorm uses {what} "
                      f"(unseen_source={unseen_source!r})")
            codes = np.where(codes < 0, self.n_sources, codes).astype(np.int32)
        return CellInputs(matrices, codes, reports), list(specs), unseen

    def _with_unseen_sources(self, inputs, modalities, unseen, unseen_source, run):
        """Run ``run(rows)`` for the seen cells and for each unseen source with adapted BN."""
        seen = np.flatnonzero(inputs.source < self.n_sources)
        if len(seen):
            run(seen)
        if not unseen:
            return
        saved = [(layer, layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
                 for _, layer, _ in self.network.source_aware_layers()]
        try:
            for label, rows in unseen.items():
                if unseen_source == "adapt":
                    self._estimate_statistics(inputs, self._statistics_sample(rows), self.n_sources, modalities)
                run(rows)
        finally:
            for layer, mean, var in saved:
                layer.moving_mean.assign(mean)
                layer.moving_variance.assign(var)

    def embed(self, adata, key_added: str = "X_concerto", batch_key="__model__", student: bool = False,
              modalities=None, unseen_source: str = "adapt", min_gene_overlap: float | None = None,
              batch_size: int = 512, copy: bool = False):
        """Teacher embedding (L2-normalised) of every cell of ``adata``.

        Writes ``adata.obsm[key_added]`` (n_cells, d) and, with ``student=True``,
        ``adata.obsm[key_added + '_student']``; gene overlap and parameters go to
        ``adata.uns['concerto']``. Query genes are aligned to the model's vocabulary by
        name (missing genes count as zero); an overlap below ``min_gene_overlap`` (default
        0.5) is an error. ``modalities`` (a list) restricts a multimodal model to some
        modalities, e.g. ``['rna']`` for RNA-only queries of an RNA+protein model.
        Sources (``batch_key``, default: the training key) unseen in training use
        ``unseen_source``: ``'adapt'`` = BatchNorm statistics of the source's own cells,
        ``'pooled'`` = average of the training sources' statistics.
        Returns the AnnData when ``copy=True``, else None (scanpy convention).
        """
        if copy:
            adata = adata.copy()
        inputs, mods, unseen = self._query_inputs(adata, modalities, batch_key, min_gene_overlap, unseen_source)
        d = self.config.embedding_dim
        z_t = np.zeros((inputs.n_cells, d), np.float32)
        z_s = np.zeros((inputs.n_cells, d), np.float32) if student else None
        fn = self._embed_fn(mods, student)
        t0 = time.perf_counter()

        def run(rows):
            for part, batch in self._ordered(inputs, mods, rows, batch_size):
                t, s = fn(batch)
                z_t[part] = t.numpy()
                if student:
                    z_s[part] = s.numpy()

        self._with_unseen_sources(inputs, mods, unseen, unseen_source, run)
        seconds = time.perf_counter() - t0
        self._say(f"embedded {inputs.n_cells} cells in {seconds:.1f}s ({inputs.n_cells / max(seconds, 1e-9):.0f} cells/s)")
        adata.obsm[key_added] = z_t
        if student:
            adata.obsm[f"{key_added}_student"] = z_s
        self._record_uns(adata, inputs, mods, unseen, unseen_source, key_added=key_added)
        return adata if copy else None

    def get_latent_representation(self, adata, **kwargs) -> np.ndarray:
        """Teacher embedding as an array (n_cells, d), without modifying ``adata``."""
        out = self.embed(adata, copy=True, **kwargs)
        return out.obsm[kwargs.get("key_added", "X_concerto")]

    # ------------------------------------------------------------------ sharded (larger than memory)
    @classmethod
    def from_shards(cls, path, batch_key=None, genes=None, config: ConcertoConfig | None = None, verbose: bool = True,
                    transform: str = "auto", block_cells: int = 8192, window_blocks: int = 8, **hyperparameters):
        """A model that trains by streaming a sharded dataset (:mod:`concerto_core.shards`).

        ``genes`` optionally restricts the vocabulary (e.g. HVGs chosen on a sample);
        ``transform='auto'`` log-normalises shards that store counts. Memory depends on
        ``block_cells * window_blocks`` (the shuffling window), not on the number of cells.
        Single modality (RNA) only.
        """
        from .shards import ShardedCells

        self = cls.__new__(cls)
        cfg = config or ConcertoConfig()
        self.config = cfg.replace(**hyperparameters) if hyperparameters else cfg
        self.verbose = verbose
        vocabulary = GeneVocabulary(genes) if genes is not None else None
        data = ShardedCells(path, vocabulary=vocabulary, batch_key=batch_key, transform=transform,
                            block_cells=block_cells, window_blocks=window_blocks)
        self.modality_specs = {"rna": "X"}
        self.vocabularies = {"rna": data.vocabulary}
        self.batch_key = batch_key
        self.sources = list(data.sources)
        self._train_inputs = data
        self.history, self.epochs_trained = [], 0
        self.network = self._build_network()
        self._say(f"streaming {data.n_cells} cells from {len(data.shard_sizes)} shard(s) in {path} ({data.report})")
        return self

    def embed_shards(self, path, output, batch_key="__model__", unseen_source: str = "adapt", batch_size: int = 512,
                     transform: str = "auto", min_gene_overlap: float | None = None) -> Path:
        """Embed every cell of a sharded dataset into ``output`` (.npy, (n_cells, d) float32, file order).

        Streams blocks, so memory does not grow with the number of cells; the file is
        written under a temporary name and renamed when complete.
        """
        from .shards import ShardedCells

        if unseen_source not in UNSEEN_SOURCE_MODES:
            raise ValueError(f"unseen_source={unseen_source!r}; allowed: {UNSEEN_SOURCE_MODES}")
        key = self.batch_key if batch_key == "__model__" else batch_key
        if self.batch_key is None:
            key = None
        data = ShardedCells(path, vocabulary=self.vocabularies["rna"], batch_key=key,
                            sources=self.sources if key else None, transform=transform,
                            min_gene_overlap=DEFAULT_MIN_GENE_OVERLAP if min_gene_overlap is None else min_gene_overlap)
        self._say(str(data.report))
        unseen = {}
        if self.batch_key is not None and key is None:
            unseen["query"] = np.arange(data.n_cells)
        elif key is not None and (data.source < 0).any():
            for label_code in np.unique(data.label_codes[data.source < 0]):
                unseen[data.label_categories[label_code]] = np.flatnonzero(data.label_codes == label_code)
        if unseen:
            warn_once(f"source(s) {sorted(unseen)[:10]} were not seen in training; unseen_source={unseen_source!r}")
            data.source = np.where(data.source < 0, self.n_sources, data.source).astype(np.int32)
        if self.batch_key is not None and key is None:
            data.source = np.full(data.n_cells, self.n_sources, np.int32)
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp.npy")
        z = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(data.n_cells, self.config.embedding_dim))
        fn = self._embed_fn(self.modalities, False)
        t0 = time.perf_counter()

        def run(rows):
            for part, batch in self._ordered(data, self.modalities, rows, batch_size):
                z[part] = fn(batch)[0].numpy()

        self._with_unseen_sources(data, self.modalities, unseen, unseen_source, run)
        z.flush()
        del z
        os.replace(tmp, output)
        seconds = time.perf_counter() - t0
        self._say(f"embedded {data.n_cells} streamed cells in {seconds:.1f}s ({data.n_cells / max(seconds, 1e-9):.0f} cells/s)")
        return output

    def attention(self, adata, top_k: int | None = None, modalities=None, batch_key="__model__",
                  unseen_source: str = "adapt", min_gene_overlap: float | None = None, batch_size: int = 256):
        """Teacher attention weights alpha (eq 4) as sparse cells x vocabulary matrices.

        Returns a dict modality -> CSR float32 (n_cells, len(vocabulary[m])) whose row i
        holds cell i's attention over its expressed genes (sums to 1), or only the
        ``top_k`` largest weights per cell. Columns follow ``model.vocabularies[m].names``.
        Memory is bounded by the number of expressed genes, never cells x all genes dense.
        """
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {top_k})")
        inputs, mods, unseen = self._query_inputs(adata, modalities, batch_key, min_gene_overlap, unseen_source)
        parts = {m: [] for m in mods}
        net = self.network
        fn = tf.function(lambda b: net.pooled(b, training=False, return_attention=True)[1],
                         input_signature=[self._signature(mods)])

        def run(rows):
            for part, batch in self._ordered(inputs, mods, rows, batch_size):
                alphas = fn(batch)
                for m in mods:
                    a = alphas[m].numpy()
                    idx, row = batch[f"{m}_idx"].numpy(), batch[f"{m}_row"].numpy()
                    if top_k is not None:
                        # Rank within each cell: sort by (cell, -alpha), position minus cell start.
                        order = np.lexsort((-a, row))
                        starts = np.searchsorted(row[order], row[order], side="left")
                        keep = order[(np.arange(len(order)) - starts) < top_k]
                        a, idx, row = a[keep], idx[keep], row[keep]
                    parts[m].append((part[row], idx, a))

        self._with_unseen_sources(inputs, mods, unseen, unseen_source, run)
        out = {}
        for m in mods:
            if parts[m]:
                rows, cols, vals = (np.concatenate(x) for x in zip(*parts[m]))
            else:
                rows = cols = np.zeros(0, np.int64)
                vals = np.zeros(0, np.float32)
            out[m] = sp.csr_matrix((vals.astype(np.float32), (rows, cols)),
                                   shape=(inputs.n_cells, len(self.vocabularies[m])))
        return out

    def _record_uns(self, adata, inputs, mods, unseen, unseen_source, **extra) -> None:
        info = dict(adata.uns.get("concerto", {})) if isinstance(adata.uns.get("concerto"), dict) else {}
        info.update({
            "model_version": _package_version(),
            "model_path": str(getattr(self, "path", "") or ""),
            "seed": int(self.config.seed),
            "modalities": list(mods),
            "gene_overlap": {m: r.to_dict() for m, r in inputs.reports.items()},
            "batch_key": self.batch_key or "",
            "unseen_sources": sorted(str(u) for u in unseen),
            "unseen_source_mode": unseen_source,
            "params": json.dumps(self.config.to_dict(), sort_keys=True),
            **extra,
        })
        adata.uns["concerto"] = info

    # ------------------------------------------------------------------ save / load
    def manifest(self) -> dict:
        return {
            "format": model_io.FORMAT,
            "format_version": model_io.FORMAT_VERSION,
            "package_version": _package_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "batch_key": self.batch_key,
            "sources": list(self.sources),
            "modalities": {m: {"spec": spec_to_json(self.modality_specs[m]), "vocabulary": self.vocabularies[m].names.tolist()}
                           for m in self.modalities},
            "epochs_trained": self.epochs_trained,
            "history": self.history,
        }

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the model directory (weights, then the manifest that commits them)."""
        path = Path(path)
        if (path / model_io.MANIFEST).exists() and not overwrite:
            raise FileExistsError(f"{path} already holds a Concerto model; pass overwrite=True to replace it")
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        weights = path / model_io.WEIGHTS
        model_io.save_variables(weights, model_io.model_variables(self.network))
        manifest = self.manifest()
        manifest["weights_file"] = model_io.WEIGHTS
        manifest["weights_sha256"] = model_io.sha256_file(weights)
        model_io.write_manifest(path, manifest)
        self.path = path
        return path

    @classmethod
    def load(cls, path, verbose: bool = True) -> "Concerto":
        """Load a model directory written by :meth:`save` (strict: any weight mismatch is an error)."""
        path = Path(path)
        manifest = model_io.read_manifest(path)
        weights = path / manifest.get("weights_file", model_io.WEIGHTS)
        if not weights.exists():
            raise FileNotFoundError(f"weight file {weights} listed in the manifest is missing")
        digest = model_io.sha256_file(weights)
        if digest != manifest.get("weights_sha256"):
            raise ValueError(f"{weights} does not match the sha256 in {path / model_io.MANIFEST} (file changed or corrupt)")
        self = cls.__new__(cls)
        self.config = ConcertoConfig.from_dict(manifest["config"])
        self.verbose = verbose
        self.modality_specs = {m: info["spec"] for m, info in manifest["modalities"].items()}
        self.vocabularies = {m: GeneVocabulary(info["vocabulary"]) for m, info in manifest["modalities"].items()}
        self.batch_key = manifest["batch_key"]
        self.sources = list(manifest["sources"])
        self._train_inputs = None
        self.history = manifest.get("history", [])
        self.epochs_trained = manifest.get("epochs_trained", 0)
        self.network = self._build_network()
        model_io.load_variables(weights, model_io.model_variables(self.network), f"model {path}")
        self.path = path
        return self

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}: {len(v)} features" for m, v in self.vocabularies.items())
        return (f"Concerto({mods}; {self.n_sources} source(s) via batch_key={self.batch_key!r}; "
                f"d={self.config.embedding_dim}; epochs trained={self.epochs_trained})")



    # ------------------------------------------------------------------ re-targeting (fine-tuning)
    def add_sources(self, new_sources) -> list:
        """Append BatchNorm slots for data sources the model has not seen (for fine-tuning).

        The network is rebuilt with ``n_sources + k`` source slots; every weight and the
        statistics of the existing sources are copied unchanged, and each new slot (and the
        fallback slot) starts from the fallback statistics (the average of the training
        sources). :meth:`train` or the fine-tuning code then replaces the new slots'
        statistics by those of their own cells. Returns the labels that were added (in the
        order given, duplicates and known sources dropped). Models trained without a
        ``batch_key`` have one BatchNorm slot shared by all cells: an error.
        """
        new = list(dict.fromkeys(str(s) for s in new_sources if str(s) not in self.sources))
        if not new:
            return []
        if self.batch_key is None:
            raise ValueError("this model was trained without a batch_key (one BatchNorm slot for all cells); "
                             "it cannot get per-source slots")
        old = {k: v.numpy() for k, v in model_io.model_variables(self.network).items()}
        n_old = self.n_sources
        self.sources = list(self.sources) + new
        self.network = self._build_network()
        self.__dict__.pop("_fn_cache", None)
        for path, var in model_io.model_variables(self.network).items():
            if path not in old:
                raise RuntimeError(f"variable {path!r} is missing from the network being extended")
            value = old[path]
            if tuple(value.shape) != tuple(var.shape):
                if value.ndim != 2 or value.shape[0] != n_old + 1 or var.shape[0] != self.n_sources + 1:
                    raise RuntimeError(f"cannot extend variable {path!r} from {value.shape} to {tuple(var.shape)}")
                fallback = np.repeat(value[n_old:], len(new) + 1, axis=0)
                value = np.concatenate([value[:n_old], fallback], axis=0)
            var.assign(value)
        self._say(f"added BatchNorm slots for {len(new)} new source(s): {new[:10]}")
        return new

    def training_inputs(self, adata, batch_key="__model__", modalities=None, min_gene_overlap=None,
                        default_source: str = "query"):
        """Align ``adata`` to the model for further training, adding slots for new sources.

        ``batch_key`` defaults to the training key; ``None`` puts every cell in one source
        named ``default_source``. Unseen sources get their own BatchNorm slots
        (:meth:`add_sources`). Returns ``(CellInputs, modality list)``.
        """
        import warnings

        key = self.batch_key if batch_key == "__model__" else batch_key
        if self.batch_key is not None:
            if key is None:
                labels = np.full(adata.n_obs, str(default_source), dtype=object)
            else:
                if key not in adata.obs:
                    raise KeyError(f"batch_key {key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:20]})")
                if adata.obs[key].isna().any():
                    raise ValueError(f"the batch/source column {key!r} has missing values; fill them first")
                labels = adata.obs[key].astype(str).to_numpy()
            self.add_sources(pd.unique(labels))
        quiet = self.batch_key is not None and key is None
        was_disabled = log.disabled
        with warnings.catch_warnings():
            if quiet:  # every cell goes to the new source ``default_source``: not an "unseen source"
                warnings.simplefilter("ignore", UserWarning)
                log.disabled = True
            try:
                inputs, mods, _ = self._query_inputs(adata, modalities, key, min_gene_overlap)
            finally:
                log.disabled = was_disabled
        if self.batch_key is not None:
            codes, _ = encode_sources(labels, self.sources)
            inputs = CellInputs(inputs.matrices, codes.astype(np.int32), inputs.reports)
        return inputs, mods

    def set_training_data(self, adata, batch_key="__model__", min_gene_overlap=None, default_source: str = "query") -> list:
        """Re-target the model onto new training cells (e.g. a query for unsupervised fine-tuning).

        The cells are aligned to the model's vocabulary (all modalities needed), sources new
        to the model get BatchNorm slots (:meth:`add_sources`), and a following
        :meth:`train` continues contrastive training from the current weights on these
        cells only. Returns the list of source labels that were added.
        """
        before = list(self.sources)
        self._train_inputs, _ = self.training_inputs(adata, batch_key, None, min_gene_overlap, default_source)
        return [s for s in self.sources if s not in before]

    @classmethod
    def finetune_query(cls, reference_model_dir, query_adata, output_dir, **kwargs) -> "Concerto":
        """Query-to-reference mapping mode (b); see :func:`concerto_core.finetune.finetune_query`."""
        from .finetune import finetune_query

        return finetune_query(reference_model_dir, query_adata, output_dir, **kwargs)
