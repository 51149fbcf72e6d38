"""The AnnData-facing Concerto model: construct, train, embed, attention, save, load, re-target.

The network is in :mod:`concerto_core.network`, the training loops in
:mod:`concerto_core.training`, batches / BatchNorm statistics / query alignment /
inference in :mod:`concerto_core.engine`, model directories in :mod:`concerto_core.io`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import engine
from . import io as model_io
from .config import ConcertoConfig
from .data import CellInputs, check_training_cells, normalise_modalities, read_modality, spec_to_json
from .encoding import DEFAULT_MIN_GENE_OVERLAP, GeneVocabulary, ValueScale, encode_sources, looks_like_counts, warn_once
from .engine import MODEL_BATCH_KEY, UNSEEN_SOURCE_MODES
from .network import build_network, extended_values
from .training import PAPER_FINETUNE, TrainingSettings, fit_contrastive, resolve_strategy  # noqa: F401 (resolve_strategy: public name)

log = logging.getLogger("concerto_core")


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("concerto-core")
    except Exception:  # running from a source tree
        return "0.1.0+source"


def _check_anndata(adata) -> None:
    if adata is None or not hasattr(adata, "obs"):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")


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
        (e.g. ``Concerto(adata, epochs=5, dropout=0.1)``). Epochs and batch size left unset
        are chosen from the number of training cells when training starts
        (:func:`concerto_core.training.choose_schedule`).
    preset
        Instead of ``config``: a named hyperparameter set of :data:`concerto_core.config.PRESETS`
        (``'paper'``: batch 32, 3 epochs, lr 1e-4 -> 1e-6); keyword arguments still override it.
    verbose
        Log progress (data, per-epoch loss and cells/s, a progress bar on a terminal)
        through the ``concerto_core`` logger; see :mod:`concerto_core.settings`.

    Training data on which only constant embeddings can be learnt (all-zero or identical
    cells, sources of a single cell) is refused here, before any training.
    """

    def __init__(self, adata, batch_key=None, modalities=None, layer=None, config: ConcertoConfig | None = None,
                 verbose: bool = True, preset: str | None = None, **hyperparameters):
        _check_anndata(adata)
        if adata.n_obs < 2:
            raise ValueError(f"need at least 2 cells to train (got {adata.n_obs})")
        if preset is not None and config is not None:
            raise ValueError("pass either config or preset, not both")
        config = config or (ConcertoConfig.from_preset(preset) if preset is not None else ConcertoConfig())
        config = config.replace(**hyperparameters) if hyperparameters else config
        specs = normalise_modalities(modalities, layer)
        matrices, vocabularies, scales = {}, {}, {}
        for m, spec in specs.items():
            matrices[m], names = read_modality(adata, m, spec)
            vocabularies[m] = GeneVocabulary(names)
            scales[m] = ValueScale.of(matrices[m])
            if looks_like_counts(matrices[m]):
                warn_once(f"modality {m!r} looks like raw counts; the paper trains on log-normalised values "
                          "(sc.pp.normalize_total(target_sum=1e4); sc.pp.log1p)")
        if batch_key is not None:
            if batch_key not in adata.obs:
                raise KeyError(f"batch_key {batch_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:20]})")
            codes, sources = encode_sources(adata.obs[batch_key])
        else:
            codes, sources = np.zeros(adata.n_obs, dtype=np.int32), ["all"]
        check_training_cells(matrices, codes, sources, batch_key)
        self._setup(config, specs, vocabularies, scales, batch_key, sources, CellInputs(matrices, codes), verbose)

    def _setup(self, config, specs, vocabularies, scales, batch_key, sources, train_inputs, verbose,
               history=(), epochs_trained=0, path=None, network_values=None, schedule=None) -> None:
        """The one place a model's state is set (constructor, load, shards, copy)."""
        self.config = config
        self.schedule = dict(schedule) if schedule else None   # the last train() call's Schedule.to_dict()
        self.verbose = verbose
        self.modality_specs = dict(specs)
        self.vocabularies = dict(vocabularies)
        self.value_scales = dict(scales)
        self.batch_key = batch_key
        self.sources = [str(s) for s in sources]
        self._train_inputs = train_inputs
        self.history = [dict(h) for h in history]
        self.epochs_trained = int(epochs_trained)
        self.path = path
        self.network = build_network({m: len(v) for m, v in self.vocabularies.items()}, self.n_sources, config, verbose)
        if network_values is not None:
            for name, var in model_io.model_variables(self.network).items():
                var.assign(network_values[name])

    # ------------------------------------------------------------------ description
    @property
    def n_sources(self) -> int:
        return len(self.sources)

    @property
    def modalities(self) -> list:
        return list(self.vocabularies)

    def _log(self, message: str) -> None:
        if self.verbose:
            log.info(message)

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}: {len(v)} features" for m, v in self.vocabularies.items())
        return (f"Concerto({mods}; {self.n_sources} source(s) via batch_key={self.batch_key!r}; "
                f"d={self.config.embedding_dim}; epochs trained={self.epochs_trained})")

    def copy(self) -> "Concerto":
        """An independent copy (same weights and statistics, own network, same training data)."""
        new = Concerto.__new__(Concerto)
        values = {k: v.numpy() for k, v in model_io.model_variables(self.network).items()}
        new._setup(self.config, self.modality_specs, self.vocabularies, self.value_scales, self.batch_key,
                   self.sources, self._train_inputs, self.verbose, self.history, self.epochs_trained, self.path, values,
                   self.schedule)
        return new

    def drop_training_data(self) -> None:
        """Forget the training cells (frees their memory); :meth:`train` then needs
        :meth:`set_training_data` first."""
        self._train_inputs = None

    # ------------------------------------------------------------------ training
    def train(self, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
              lr_end: float | None = None, checkpoint_dir=None, seed: int | None = None, strategy=None) -> "Concerto":
        """Contrastive pretraining (Methods eqs 7-9) with Adam.

        Arguments left out come from ``config``; given ones apply to this call only (they are
        recorded in ``history``, the saved architecture/config is not rewritten). Epochs and
        batch size set in neither are chosen from the number of training cells
        (:func:`~concerto_core.training.choose_schedule`: at least ``SCHEDULE_RULE['min_steps']``
        optimizer steps, batches of at most 1/32 of the cells); the choice is logged with its
        reason and saved as ``training_schedule`` in the manifest (``model.schedule``). The learning
        rate decays exponentially from ``lr`` to ``lr_end`` over the requested epochs. Every
        epoch shuffles the cells and splits them into ``ceil(n / batch_size)`` near-equal
        mini-batches (no cell dropped). With ``checkpoint_dir``, every epoch is checkpointed
        (one directory per epoch, renamed in whole) and a later call with the same directory
        resumes after the last completed epoch, if it was written for the same genes,
        sources and settings. A loss that is not finite stops training with an error.

        ``strategy``: ``None`` (one device; a visible GPU is used automatically),
        ``'mirrored'`` (all local GPUs), ``'multiworker'`` (several machines, from
        ``TF_CONFIG``) or a ``tf.distribute.Strategy``. ``batch_size`` stays the *global*
        batch: it is split across replicas, NT-Xent negatives come from the global batch
        and source-aware BatchNorm statistics are all-reduced.
        """
        if self._train_inputs is None:
            raise RuntimeError("this model was loaded without training data; use set_training_data(adata) first, "
                               "Concerto.finetune_query, or build a new model")
        settings, schedule = TrainingSettings.resolve(self.config, self._train_inputs.n_cells, epochs=epochs,
                                                      batch_size=batch_size, lr=lr, lr_end=lr_end, seed=seed)
        self.schedule = schedule.to_dict()
        if "rule" in (schedule.epochs_from, schedule.batch_size_from):
            self._log(f"schedule for {schedule.n_cells} cells: {schedule.reason} ({schedule.steps} steps)")
        fit_contrastive(self, self._train_inputs, settings, checkpoint_dir, strategy,
                        rebuild_network=lambda: build_network({m: len(v) for m, v in self.vocabularies.items()},
                                                              self.n_sources, self.config, False))
        return self

    # ------------------------------------------------------------------ inference
    def _query(self, adata, modalities=None, batch_key=MODEL_BATCH_KEY, min_gene_overlap=None,
               unseen_source="adapt", scale_check="warn") -> engine.Query:
        return engine.align_query(self, adata, modalities, batch_key, min_gene_overlap, unseen_source, scale_check,
                                  self.verbose)

    def get_latent_representation(self, adata, batch_key=MODEL_BATCH_KEY, student: bool = False, modalities=None,
                                  unseen_source: str = "adapt", min_gene_overlap: float | None = None,
                                  batch_size: int = 512, scale_check: str = "warn", key_added: str | None = None) -> np.ndarray:
        """Teacher embedding (n_cells, d) float32, L2-normalised, without touching ``adata``
        (``student=True``: the student's instead). Arguments as :meth:`embed`
        (``key_added`` is accepted for compatibility and unused)."""
        query = self._query(adata, modalities, batch_key, min_gene_overlap, unseen_source, scale_check)
        z_t, z_s = self._embed(query, unseen_source, student, batch_size)
        return z_s if student else z_t

    def _embed(self, query, unseen_source, student, batch_size):
        t0 = time.perf_counter()
        z_t, z_s = engine.embed_query(self, query, unseen_source, student, batch_size)
        seconds = time.perf_counter() - t0
        self._log(f"embedded {query.inputs.n_cells} cells in {seconds:.1f}s "
                  f"({query.inputs.n_cells / max(seconds, 1e-9):.0f} cells/s)")
        return z_t, z_s

    def embed(self, adata, key_added: str = "X_concerto", batch_key=MODEL_BATCH_KEY, student: bool = False,
              modalities=None, unseen_source: str = "adapt", min_gene_overlap: float | None = None,
              batch_size: int = 512, copy: bool = False, scale_check: str = "warn"):
        """Teacher embedding (L2-normalised) of every cell of ``adata``, scanpy style.

        Writes ``adata.obsm[key_added]`` (n_cells, d) float32 and, with ``student=True``,
        ``adata.obsm[key_added + '_student']``; provenance (model, seed, gene overlap,
        sources, parameters) goes to ``adata.uns[key_added]`` (and, for older readers,
        ``adata.uns['concerto']``). Returns the AnnData written to when ``copy=True``,
        else the embedding array.

        Query genes are aligned to the model's vocabulary by name (missing genes count as
        zero); an overlap below ``min_gene_overlap`` (default 0.5) is an error. Values are
        compared with the training values' scale (raw counts vs log-normalised, rescaling):
        ``scale_check='warn'`` (default), ``'raise'`` or ``'ignore'``. ``modalities`` (a list)
        restricts a multimodal model to some modalities, e.g. ``['rna']``.

        ``batch_key``: the obs column with each cell's source. Left out (``MODEL_BATCH_KEY``):
        the model's own batch key, or one source for all cells if the query lacks that
        column. ``None``: no batch column, all cells one source. Sources unseen in training
        use ``unseen_source``: ``'adapt'`` = BatchNorm statistics of the source's own cells,
        ``'pooled'`` = average of the training sources' statistics. NaN or all-zero
        embeddings are an error, never written.
        """
        query = self._query(adata, modalities, batch_key, min_gene_overlap, unseen_source, scale_check)
        z_t, z_s = self._embed(query, unseen_source, student, batch_size)
        if copy:
            adata = adata.copy()
        adata.obsm[key_added] = z_t
        if student:
            adata.obsm[f"{key_added}_student"] = z_s
        self._record_uns(adata, query, unseen_source, key_added=key_added, student=bool(student))
        return adata if copy else z_t

    def attention(self, adata, top_k: int | None = None, modalities=None, batch_key=MODEL_BATCH_KEY,
                  unseen_source: str = "adapt", min_gene_overlap: float | None = None, batch_size: int = 256,
                  scale_check: str = "warn"):
        """Teacher attention weights alpha (eq 4) as sparse cells x vocabulary matrices.

        Returns a dict modality -> CSR float32 (n_cells, len(vocabulary[m])) whose row i
        holds cell i's attention over its expressed genes (sums to 1), or only the
        ``top_k`` largest weights per cell. Columns follow ``model.vocabularies[m].names``.
        Memory is bounded by the number of expressed genes, never cells x all genes dense.
        """
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {top_k})")
        query = self._query(adata, modalities, batch_key, min_gene_overlap, unseen_source, scale_check)
        mods = query.modalities
        parts = {m: [] for m in mods}
        fn = engine.compiled(self.network).attention(mods)

        def run(rows):
            for part, batch in engine.ordered_batches(query.inputs, mods, rows, batch_size):
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

        engine.with_unseen_sources(self, query, unseen_source, run)
        out = {}
        for m in mods:
            if parts[m]:
                rows, cols, vals = (np.concatenate(x) for x in zip(*parts[m]))
            else:
                rows = cols = np.zeros(0, np.int64)
                vals = np.zeros(0, np.float32)
            out[m] = sp.csr_matrix((vals.astype(np.float32), (rows, cols)),
                                   shape=(query.inputs.n_cells, len(self.vocabularies[m])))
        return out

    def provenance(self, query: engine.Query | None = None, unseen_source: str | None = None, **extra) -> dict:
        """What produced a result: model version/path, seed, batch key, parameters (JSON-able)."""
        info = {"model_version": _package_version(), "model_path": str(self.path or ""),
                "seed": int(self.config.seed), "batch_key": self.batch_key or "",
                "params": json.dumps(self.config.to_dict(), sort_keys=True)}
        if query is not None:
            info.update({"modalities": list(query.modalities),
                         "gene_overlap": {m: r.to_dict() for m, r in query.inputs.reports.items()},
                         "query_batch_key": query.batch_key or "",
                         "unseen_sources": sorted(str(u) for u in query.unseen),
                         "unseen_source_mode": unseen_source})
        info.update(extra)
        return info

    def _record_uns(self, adata, query, unseen_source, key_added, **extra) -> None:
        info = self.provenance(query, unseen_source, key_added=key_added, **extra)
        adata.uns[key_added] = info
        legacy = dict(adata.uns["concerto"]) if isinstance(adata.uns.get("concerto"), dict) else {}
        adata.uns["concerto"] = {**legacy, **info}

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

        cfg = config or ConcertoConfig()
        cfg = cfg.replace(**hyperparameters) if hyperparameters else cfg
        data = ShardedCells(path, vocabulary=GeneVocabulary(genes) if genes is not None else None, batch_key=batch_key,
                            transform=transform, block_cells=block_cells, window_blocks=window_blocks)
        counts = np.bincount(data.source, minlength=len(data.sources))
        if batch_key is not None and counts.min() < 2:
            small = [s for s, c in zip(data.sources, counts) if c < 2]
            raise ValueError(f"batch_key {batch_key!r}: sources {small[:5]} have fewer than 2 cells; source-aware "
                             "BatchNorm needs each source's variance (is it really the batch column?)")
        self = cls.__new__(cls)
        self._setup(cfg, {"rna": "X"}, {"rna": data.vocabulary}, {}, batch_key, data.sources, data, verbose)
        self._log(f"streaming {data.n_cells} cells from {len(data.shard_sizes)} shard(s) in {path} ({data.report})")
        return self

    def embed_shards(self, path, output, batch_key=MODEL_BATCH_KEY, unseen_source: str = "adapt", batch_size: int = 512,
                     transform: str = "auto", min_gene_overlap: float | None = None) -> Path:
        """Embed every cell of a sharded dataset into ``output`` (.npy, (n_cells, d) float32, file order).

        Streams blocks, so memory does not grow with the number of cells; the file is
        written under a temporary name and renamed when complete (never with NaN rows).
        """
        from .shards import ShardedCells

        if unseen_source not in UNSEEN_SOURCE_MODES:
            raise ValueError(f"unseen_source={unseen_source!r}; allowed: {UNSEEN_SOURCE_MODES}")
        key = engine.resolve_batch_key(batch_key, self.batch_key) if self.batch_key is not None else None
        data = ShardedCells(path, vocabulary=self.vocabularies["rna"], batch_key=key,
                            sources=self.sources if key else None, transform=transform,
                            min_gene_overlap=DEFAULT_MIN_GENE_OVERLAP if min_gene_overlap is None else min_gene_overlap)
        self._log(str(data.report))
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
        query = engine.Query(data, self.modalities, unseen, key)
        fn = engine.compiled(self.network).embed(self.modalities, False)
        t0 = time.perf_counter()

        def run(rows):
            for part, batch in engine.ordered_batches(data, self.modalities, rows, batch_size):
                block = fn(batch)[0].numpy()
                if not np.isfinite(block).all():
                    raise FloatingPointError("the embedding has NaN/infinite values; the model is broken")
                z[part] = block

        try:
            engine.with_unseen_sources(self, query, unseen_source, run)
            z.flush()
            del z
            os.replace(tmp, output)
        finally:
            if tmp.exists():
                tmp.unlink()
        seconds = time.perf_counter() - t0
        self._log(f"embedded {data.n_cells} streamed cells in {seconds:.1f}s ({data.n_cells / max(seconds, 1e-9):.0f} cells/s)")
        return output

    # ------------------------------------------------------------------ save / load
    def manifest(self) -> dict:
        """The model's description as saved in ``manifest.json`` (without file digests)."""
        return {
            "format": model_io.FORMAT,
            "format_version": model_io.FORMAT_VERSION,
            "package_version": _package_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "batch_key": self.batch_key,
            "sources": list(self.sources),
            "modalities": {m: {"spec": spec_to_json(self.modality_specs[m]),
                               "vocabulary": self.vocabularies[m].names.tolist(),
                               "value_scale": self.value_scales[m].to_dict() if self.value_scales.get(m) else None}
                           for m in self.modalities},
            "weights_file": model_io.WEIGHTS,
            "epochs_trained": self.epochs_trained,
            "training_schedule": self.schedule,
            "history": self.history,
        }

    def save(self, path, overwrite: bool = False, extra_manifest: dict | None = None,
             extra_files: dict | None = None) -> Path:
        """Write the model directory (see :mod:`concerto_core.io`): weights and a signed
        manifest, written whole under a temporary name and renamed into place.

        ``extra_manifest`` (sections) and ``extra_files`` (file name -> variables) let
        wrappers such as the classifier store more in the same signed directory.
        """
        manifest = {**self.manifest(), **(extra_manifest or {})}
        files = {model_io.WEIGHTS: model_io.model_variables(self.network), **(extra_files or {})}
        path = model_io.write_model_directory(path, manifest, files, overwrite)
        self.path = Path(path)
        return self.path

    @classmethod
    def load(cls, path, verbose: bool = True) -> "Concerto":
        """Load a model directory written by :meth:`save`.

        Refused with an error naming the problem: a manifest edited after saving, weight
        files outside the directory or not matching their sha256, any weight missing,
        extra, mis-shaped or not finite, negative BatchNorm variances.
        """
        path = Path(path)
        manifest = model_io.read_model_directory(path)
        try:
            config = ConcertoConfig.from_dict(manifest["config"])
            mods = manifest["modalities"]
            sources = list(manifest["sources"])
            batch_key = manifest["batch_key"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path / model_io.MANIFEST} lacks {err}; not a complete Concerto manifest") from None
        if len(set(sources)) != len(sources) or not sources:
            raise ValueError(f"{path / model_io.MANIFEST}: the source list is empty or has duplicates")
        self = cls.__new__(cls)
        self._setup(config, {m: info["spec"] for m, info in mods.items()},
                    {m: GeneVocabulary(info["vocabulary"]) for m, info in mods.items()},
                    {m: ValueScale.from_dict(info.get("value_scale")) for m, info in mods.items()},
                    batch_key, sources, None, verbose, manifest.get("history", []), manifest.get("epochs_trained", 0),
                    path, schedule=manifest.get("training_schedule"))
        model_io.load_variables(path / model_io.WEIGHTS, model_io.model_variables(self.network), f"model {path}")
        return self

    # ------------------------------------------------------------------ re-targeting (fine-tuning)
    def add_sources(self, new_sources) -> list:
        """Append BatchNorm slots for data sources the model has not seen (for fine-tuning).

        The network is rebuilt with ``n_sources + k`` source slots; every weight and the
        statistics of the existing sources are copied unchanged, and each new slot (and the
        fallback slot) starts from the fallback statistics (the average of the training
        sources). Training or fine-tuning then replaces the new slots' statistics by those
        of their own cells. Returns the labels that were added (in the order given,
        duplicates and known sources dropped). Models trained without a ``batch_key`` have
        one BatchNorm slot shared by all cells: an error.
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
        self.network = build_network({m: len(v) for m, v in self.vocabularies.items()}, self.n_sources, self.config,
                                     self.verbose)
        for path, value in extended_values(old, self.network, n_old).items():
            model_io.model_variables(self.network)[path].assign(value)
        self._log(f"added BatchNorm slots for {len(new)} new source(s): {new[:10]}")
        return new

    def training_inputs(self, adata, batch_key=MODEL_BATCH_KEY, modalities=None, min_gene_overlap=None,
                        default_source: str = "query", scale_check: str = "warn"):
        """Align ``adata`` to the model for further training, adding slots for new sources.

        ``batch_key`` as in :meth:`embed`; cells without a batch column form one source
        named ``default_source``. Unseen sources get their own BatchNorm slots
        (:meth:`add_sources`). Returns ``(CellInputs, modality list)``.
        """
        _check_anndata(adata)
        specs = engine.query_specs(self, modalities)
        labels, _ = engine.query_sources(self, adata, batch_key, unseen_label=default_source)
        matrices, reports = engine.align_matrices(self, adata, specs, min_gene_overlap, scale_check, self.verbose)
        if self.batch_key is not None:
            self.add_sources(list(dict.fromkeys(labels)))
        codes, _ = encode_sources(labels, self.sources)
        check_training_cells(matrices, codes, self.sources, batch_key if isinstance(batch_key, str) else self.batch_key)
        return CellInputs(matrices, codes.astype(np.int32), reports), list(specs)

    def set_training_data(self, adata, batch_key=MODEL_BATCH_KEY, min_gene_overlap=None,
                          default_source: str = "query") -> list:
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
    def finetune_query(cls, reference_model_dir, query_adata, output_dir, batch_key=MODEL_BATCH_KEY, epochs: int = 1,
                       lr: float | None = None, lr_end: float | None = None, batch_size: int | None = None,
                       seed: int | None = None, min_gene_overlap: float | None = None, overwrite: bool = False,
                       verbose: bool = False) -> "Concerto":
        """Query-to-reference mapping mode (b): unsupervised contrastive fine-tuning on the query.

        Loads the reference model (read only), gives query sources unseen in the reference
        their own BatchNorm slots (:meth:`add_sources`: reference weights and statistics
        copied, new slots initialised from the fallback statistics, then set to the query
        cells' exact statistics after training), continues the contrastive training on the
        query cells from the reference weights, and saves a new model directory
        ``output_dir`` whose manifest records the reference (path and weights sha256).
        ``batch_key`` as in :meth:`embed` (default: the reference's key; ``None`` = one query
        source). ``lr`` defaults to 1e-3, the paper's learning rate for its fine-tuning
        stage (Methods: Adam, 1e-3, 1 epoch; :data:`~concerto_core.training.PAPER_FINETUNE`),
        and stays constant unless ``lr_end`` is given. The reference's own rates are not the
        default: its final rate (``config.lr_end``, 1e-6 under the paper's 1e-4 -> 1e-6
        schedule) leaves the weights practically where they are. A reference trained
        without a ``batch_key`` has one BatchNorm slot: fine-tuning then replaces its
        statistics with the query's.
        Returns the fine-tuned model. Mode (a) is ``Concerto.load(reference).embed(query)``.
        """
        ref, out = Path(reference_model_dir), Path(output_dir)
        if out.resolve() == ref.resolve():
            raise ValueError("output_dir must differ from reference_model_dir (the reference is never modified)")
        if (out / model_io.MANIFEST).exists() and not overwrite:
            raise FileExistsError(f"{out} already holds a model; pass overwrite=True to replace it")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1 (got {epochs})")
        model = cls.load(ref, verbose=verbose)
        reference_sources = list(model.sources)
        added = model.set_training_data(query_adata, batch_key, min_gene_overlap)
        if model.batch_key is None:
            warnings.warn("the reference has no batch_key (one BatchNorm slot): query fine-tuning replaces its "
                          "statistics with the query's", UserWarning, stacklevel=2)
        lr = PAPER_FINETUNE["lr"] if lr is None else float(lr)
        lr_end = lr if lr_end is None else float(lr_end)
        model.train(epochs=epochs, lr=lr, lr_end=lr_end, batch_size=batch_size, seed=seed)
        section = {"reference_path": str(ref.resolve()),
                   "reference_weights_sha256": model_io.read_model_directory(ref)["files"][model_io.WEIGHTS],
                   "reference_sources": reference_sources, "added_sources": added,
                   "n_query_cells": int(query_adata.n_obs), "epochs": int(epochs), "lr": lr, "lr_end": lr_end}
        model.save(out, overwrite=overwrite, extra_manifest={"query_finetune": section})
        return model
