"""The AnnData-facing Concerto model: construct, train, embed, attention, save, load."""

from __future__ import annotations

import json
import logging
import math

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
from .config import ConcertoConfig
from .data import CellInputs, normalise_modalities, read_modality, spec_to_json
from .encoding import DEFAULT_MIN_GENE_OVERLAP, GeneVocabulary, encode_sources, looks_like_counts, warn_once
from .losses import nt_xent_loss
from .network import ConcertoNetwork

log = logging.getLogger("concerto_core")

UNSEEN_SOURCE_MODES = ("adapt", "pooled")


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
        # Build every layer with a one-cell dummy batch so weights exist before loading.
        dummy = {"source": np.zeros(2, np.int32)}
        for m in self.modalities:
            dummy.update({f"{m}_idx": np.zeros((2, 1), np.int32), f"{m}_val": np.zeros((2, 1), np.float32),
                          f"{m}_len": np.ones(2, np.int32)})
        net(dummy, training=False)
        return net

    def _signature(self, modalities=None) -> dict:
        sig = {"source": tf.TensorSpec([None], tf.int32)}
        for m in modalities or self.modalities:
            sig[f"{m}_idx"] = tf.TensorSpec([None, None], tf.int32)
            sig[f"{m}_val"] = tf.TensorSpec([None, None], tf.float32)
            sig[f"{m}_len"] = tf.TensorSpec([None], tf.int32)
        return sig

    def _dataset(self, inputs: CellInputs, batches, modalities=None) -> tf.data.Dataset:
        """Stream numpy mini-batches through tf.data so batch assembly overlaps compute."""
        modalities = modalities or self.modalities

        def gen():
            for rows in batches:
                yield inputs.batch(rows, modalities)

        ds = tf.data.Dataset.from_generator(gen, output_signature=self._signature(modalities))
        return ds.prefetch(2)

    # ------------------------------------------------------------------ training
    def train(self, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
              lr_end: float | None = None, checkpoint_dir=None, seed: int | None = None) -> "Concerto":
        """Contrastive pretraining (Methods eqs 7-9) with Adam.

        The learning rate decays exponentially from ``lr`` to ``lr_end`` over the
        requested epochs. Every epoch shuffles the cells and splits them into
        ``ceil(n / batch_size)`` near-equal mini-batches (no cell dropped). With
        ``checkpoint_dir``, weights, optimizer state and progress are saved after every
        epoch and a later call with the same directory resumes from the last epoch.
        """
        cfg = self.config.replace(**{k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr,
                                                             lr_end=lr_end, seed=seed).items() if v is not None})
        self.config = cfg
        inputs = self._train_inputs
        if inputs is None:
            raise RuntimeError("this model was loaded without training data; use Concerto.finetune_query or build a new model")
        n = inputs.n_cells
        steps = max(1, math.ceil(n / cfg.batch_size))
        if n < 2 * steps:  # keep >= 2 cells per batch for the contrastive loss
            steps = max(1, n // 2)
        total_steps = steps * cfg.epochs
        schedule = keras.optimizers.schedules.ExponentialDecay(
            cfg.lr, decay_steps=total_steps, decay_rate=cfg.lr_end / cfg.lr
        )
        optimizer = keras.optimizers.Adam(learning_rate=schedule)
        optimizer.build(self.network.trainable_variables)
        keras.utils.set_random_seed(cfg.seed)

        start_epoch = 0
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        if ckpt is not None:
            start_epoch = self._restore_checkpoint(ckpt, optimizer)

        network, variables = self.network, self.network.trainable_variables

        @tf.function(input_signature=[self._signature()], reduce_retracing=True)
        def train_step(batch):
            with tf.GradientTape() as tape:
                z_t = network.teacher(batch, training=True)
                z_s = network.student(batch, training=True)
                loss = nt_xent_loss(z_t, z_s, cfg.temperature)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return loss

        self._say(f"training on {n} cells, {len(self.sources)} source(s), modalities "
                  f"{ {m: len(v) for m, v in self.vocabularies.items()} }, {steps} steps/epoch, "
                  f"epochs {start_epoch + 1}..{cfg.epochs}")
        for epoch in range(start_epoch, cfg.epochs):
            rng = np.random.default_rng([cfg.seed, epoch])
            batches = np.array_split(rng.permutation(n), steps)
            t0, losses, last_print, done = time.perf_counter(), [], time.perf_counter(), 0
            for batch in self._dataset(inputs, batches):
                losses.append(float(train_step(batch)))
                done += int(batch["source"].shape[0])
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
        if cfg.precise_bn:
            self._precise_batchnorm(inputs)
        self._reset_fallback_statistics()
        return self

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
    def _estimate_statistics(self, inputs: CellInputs, rows: np.ndarray, slot: int, modalities=None,
                             batch_size: int = 512) -> None:
        """Set BatchNorm slot ``slot`` to the exact statistics of ``rows`` (forward order)."""
        modalities = modalities or self.modalities
        for name, layer, kind in self.network.source_aware_layers():
            if kind.startswith("counts:"):
                m = kind.split(":", 1)[1]
                if m not in modalities:
                    continue
                mean, var = inputs.column_moments(m, rows)
            else:
                s1 = np.zeros(self.config.embedding_dim)
                s2 = np.zeros(self.config.embedding_dim)
                pooled = self._pooled_fn(modalities)
                for start in range(0, len(rows), batch_size):
                    part = rows[start : start + batch_size]
                    batch = inputs.batch(part, modalities)
                    batch["source"] = np.full(len(part), slot, np.int32)
                    p = pooled(batch).numpy().astype(np.float64)
                    s1 += p.sum(0)
                    s2 += (p**2).sum(0)
                mean = s1 / len(rows)
                var = np.maximum(s2 / len(rows) - mean**2, 0.0)
            layer.set_statistics(slot, mean.astype(np.float32), var.astype(np.float32))

    def _precise_batchnorm(self, inputs: CellInputs) -> None:
        """Replace running averages by each source's exact statistics over its training cells."""
        t0 = time.perf_counter()
        for slot in range(self.n_sources):
            rows = np.flatnonzero(inputs.source == slot)
            if len(rows):
                self._estimate_statistics(inputs, rows, slot)
        self._say(f"BatchNorm statistics recomputed over all training cells ({time.perf_counter() - t0:.1f}s)")

    def _reset_fallback_statistics(self) -> None:
        """Fallback slot (unseen sources) := average of the training sources' statistics."""
        for _, layer, _ in self.network.source_aware_layers():
            mean = layer.moving_mean.numpy()[: self.n_sources].mean(0)
            var = layer.moving_variance.numpy()[: self.n_sources].mean(0)
            layer.set_statistics(self.n_sources, mean, var)

    # ------------------------------------------------------------------ inference
    def _pooled_fn(self, modalities):
        key = ("pooled",) + tuple(modalities)
        cache = self.__dict__.setdefault("_fn_cache", {})
        if key not in cache:
            net = self.network
            cache[key] = tf.function(lambda b: net.pooled(b, training=False), input_signature=[self._signature(modalities)])
        return cache[key]

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
                    self._estimate_statistics(inputs, rows, self.n_sources, modalities)
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
            batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
            for part, batch in zip(batches, self._dataset(inputs, batches, mods)):
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
            batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
            for part, batch in zip(batches, self._dataset(inputs, batches, mods)):
                alphas = fn(batch)
                for m in mods:
                    a = alphas[m].numpy()
                    idx, length = batch[f"{m}_idx"].numpy(), batch[f"{m}_len"].numpy()
                    mask = np.arange(a.shape[1])[None, :] < length[:, None]
                    if top_k is not None and top_k < a.shape[1]:
                        a_masked = np.where(mask, a, -1.0)
                        keep = np.argpartition(-a_masked, top_k - 1, axis=1)[:, :top_k]
                        sel = np.zeros_like(mask)
                        np.put_along_axis(sel, keep, True, axis=1)
                        mask &= sel
                    r, c = np.nonzero(mask)
                    parts[m].append((part[r], idx[r, c], a[r, c]))

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


