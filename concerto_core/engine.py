"""The engine under every Concerto model: batches, compiled functions, BatchNorm statistics,
query alignment, unseen sources and inference.

Functions here take a *model*: any object with ``network`` (:class:`ConcertoNetwork`),
``config``, ``vocabularies``, ``modality_specs``, ``value_scales``, ``batch_key`` and
``sources`` (``Concerto`` has them). ``Concerto`` and ``ConcertoClassifier`` both work
through these public functions; the training loops are in :mod:`concerto_core.training`.

Compiled functions are made once per network (:func:`compiled`) with a fixed input
signature, so each is traced once however often it is called.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import tensorflow as tf

from .data import CellInputs, check_embeddings, normalise_modalities, prefetch, read_modality
from .encoding import DEFAULT_MIN_GENE_OVERLAP, check_value_scale, encode_sources, warn_once

log = logging.getLogger("concerto_core")

UNSEEN_SOURCE_MODES = ("adapt", "pooled")


class _ModelBatchKey:
    """Default of every query-side ``batch_key``: the model's own batch key (see :func:`query_sources`)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MODEL_BATCH_KEY"

    def __reduce__(self):
        return (_ModelBatchKey, ())


#: ``batch_key=MODEL_BATCH_KEY`` (the default): read each query cell's source from the column
#: the model was trained with. ``batch_key=None``: no batch column, every cell in one source.
MODEL_BATCH_KEY = _ModelBatchKey()
_LEGACY_MODEL_KEY = "__model__"


def resolve_batch_key(batch_key, model_batch_key):
    """The obs column to read sources from (``None``: none). ``MODEL_BATCH_KEY`` -> the model's key."""
    if isinstance(batch_key, str) and batch_key == _LEGACY_MODEL_KEY:
        import warnings

        warnings.warn("batch_key='__model__' is deprecated: leave batch_key out (MODEL_BATCH_KEY) to use the "
                      "model's batch key", DeprecationWarning, stacklevel=4)
        batch_key = MODEL_BATCH_KEY
    if batch_key is MODEL_BATCH_KEY:
        return model_batch_key
    if batch_key is not None and not isinstance(batch_key, str):
        raise TypeError(f"batch_key must be an obs column name, None or MODEL_BATCH_KEY (got {batch_key!r})")
    return batch_key


# ---------------------------------------------------------------------------- batches
def batch_signature(modalities) -> dict:
    """``tf.TensorSpec`` of every entry of a flat mini-batch (see :mod:`concerto_core.network`)."""
    sig = {"source": tf.TensorSpec([None], tf.int32)}
    for m in modalities:
        sig[f"{m}_idx"] = tf.TensorSpec([None], tf.int32)
        sig[f"{m}_val"] = tf.TensorSpec([None], tf.float32)
        sig[f"{m}_row"] = tf.TensorSpec([None], tf.int32)
        sig[f"{m}_len"] = tf.TensorSpec([None], tf.int32)
    return sig


def stream(batches, modalities):
    """Tensors of an iterator of numpy batch dicts, assembled ahead in a background thread."""
    signature = batch_signature(modalities)

    def to_tensors(batch):
        return {key: tf.convert_to_tensor(batch[key], dtype=spec.dtype) for key, spec in signature.items()}

    return prefetch(batches, depth=2, convert=to_tensors)


def ordered_batches(inputs, modalities, rows=None, batch_size: int = 512, slot=None):
    """``(row indices, tf batch)`` in order; ``slot`` puts every cell into that BatchNorm slot."""
    order = []

    def gen():
        for part, batch in inputs.iter_ordered(batch_size, modalities, rows):
            order.append(part)
            if slot is not None:
                batch["source"] = np.full(len(part), slot, np.int32)
            yield batch

    for i, batch in enumerate(stream(gen(), modalities)):
        yield order[i], batch


# ---------------------------------------------------------------------------- compiled functions
class CompiledFunctions:
    """The tf.functions of one network, each made (and traced) once per modality subset."""

    def __init__(self, network):
        self._network = weakref.ref(network)
        self._cache: dict = {}

    def _get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make(self._network())
        return self._cache[key]

    def embed(self, modalities, student: bool = False):
        """batch -> (L2-normalised teacher embedding, student embedding or the teacher's again)."""

        def make(net):
            def embed_batch(b):
                z = tf.math.l2_normalize(net.teacher(b, training=False), axis=1)
                return (z, tf.math.l2_normalize(net.student(b, training=False), axis=1)) if student else (z, z)

            return tf.function(embed_batch, input_signature=[batch_signature(modalities)])

        return self._get(("embed", student, tuple(modalities)), make)

    def attention(self, modalities):
        """batch -> {modality: attention weight of every (cell, expressed gene) entry}."""

        def make(net):
            def attention_batch(b):
                return net.pooled(b, training=False, return_attention=True)[1]

            return tf.function(attention_batch, input_signature=[batch_signature(modalities)])

        return self._get(("attention", tuple(modalities)), make)

    def moments(self, modalities, phases: tuple):
        """(batch -> per-slot sums and sums of squares of each BatchNorm input, layer list).

        Count-vector inputs are summed from the sparse entries (segment sums over
        slot x feature), never densified; the pooled input needs the teacher's forward pass.
        """

        def make(net):
            slots = net.n_sources + 1
            layers = [(name, kind) for name, _, kind in net.source_aware_layers()
                      if kind.split(":")[0] in phases and (kind == "pooled" or kind.split(":")[1] in modalities)]

            def batch_moments(batch):
                onehot = tf.one_hot(batch["source"], slots, dtype=tf.float32)
                out = {"__count": tf.reduce_sum(onehot, axis=0)}
                pooled = net.pooled(batch, training=False) if "pooled" in phases else None
                for name, kind in layers:
                    if kind == "pooled":
                        out[name] = tf.stack([tf.matmul(onehot, pooled, transpose_a=True),
                                              tf.matmul(onehot, tf.square(pooled), transpose_a=True)])
                        continue
                    what, m = kind.split(":")
                    # "values": one statistic over all entries (zeros add nothing to the sums).
                    n_features = 1 if what == "values" else net.vocab_sizes[m]
                    segment = tf.gather(batch["source"], batch[f"{m}_row"]) * n_features
                    if what == "counts":
                        segment += batch[f"{m}_idx"]
                    val = batch[f"{m}_val"]
                    sums = [tf.math.unsorted_segment_sum(v, segment, slots * n_features) for v in (val, val * val)]
                    out[name] = tf.reshape(tf.stack(sums), [2, slots, n_features])
                return out

            return tf.function(batch_moments, input_signature=[batch_signature(modalities)]), layers

        return self._get(("moments", phases, tuple(modalities)), make)

    def custom(self, key, make):
        """Any other function of this network, made by ``make(network)`` once per ``key``."""
        return self._get(("custom",) + tuple(key), make)


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiled(network) -> CompiledFunctions:
    """The :class:`CompiledFunctions` of ``network`` (made on first use, freed with the network)."""
    if network not in _COMPILED:
        _COMPILED[network] = CompiledFunctions(network)
    return _COMPILED[network]


# ---------------------------------------------------------------------------- BatchNorm statistics
def estimate_statistics(network, inputs, rows=None, slot=None, modalities=None, batch_size: int = 512) -> None:
    """Set BatchNorm statistics to their exact values over cells (streamed, forward order).

    ``slot=None``: every source slot gets the statistics of its own cells (precise BN).
    ``slot=s``: all cells (``rows``) are pooled into slot ``s`` (adaptation of an unseen source).
    With ``value_batchnorm`` the teacher's input depends on count-vector statistics, so
    those are finished in a first pass; otherwise one pass does every layer. A shared value
    BatchNorm divides by cells x ``values_per_cell`` (its statistics count every gene).
    """
    modalities = list(modalities or network.modalities)
    layers = {name: layer for name, layer, _ in network.source_aware_layers()}
    if network.config.value_batchnorm is None:
        passes = [("counts", "pooled")]
    else:
        passes = [("counts", "values"), ("pooled",)]
    for phases in passes:
        fn, names = compiled(network).moments(modalities, phases)
        if not names:
            continue
        acc = {}
        for _, batch in ordered_batches(inputs, modalities, rows, batch_size, slot):
            for key, value in fn(batch).items():
                value = value.numpy().astype(np.float64)
                acc[key] = acc[key] + value if key in acc else value
        if not acc:
            return
        count = acc.pop("__count")
        for name, _ in names:
            total, total_sq = acc[name]
            per_cell = getattr(layers[name], "values_per_cell", 1)
            for s_ in np.flatnonzero(count > 0):
                n = count[s_] * per_cell
                mean = total[s_] / n
                var = np.maximum(total_sq[s_] / n - mean**2, 0.0)
                layers[name].set_statistics(int(s_), mean.astype(np.float32), var.astype(np.float32))


def statistics_sample(rows: np.ndarray, config) -> np.ndarray:
    """``rows``, or a seeded sorted sample of ``config.precise_bn_max_cells`` of them."""
    cap = config.precise_bn_max_cells
    if cap is None or len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng([config.seed, 11]).choice(rows, size=cap, replace=False))


def precise_batchnorm(network, inputs, config) -> float:
    """Replace running averages by each source's statistics over its training cells (all of
    them, or a seeded sample of ``config.precise_bn_max_cells`` per source). Returns seconds."""
    t0 = time.perf_counter()
    counts = np.bincount(inputs.source, minlength=network.n_sources)
    rows = None
    if config.precise_bn_max_cells is not None and counts.max() > config.precise_bn_max_cells:
        rows = np.sort(np.concatenate([statistics_sample(np.flatnonzero(inputs.source == s), config)
                                       for s, n in enumerate(counts) if n > 0]))
    estimate_statistics(network, inputs, rows)
    return time.perf_counter() - t0


def reset_fallback_statistics(network) -> None:
    """Fallback slot (unseen sources) := average of the training sources' statistics."""
    n = network.n_sources
    for _, layer, _ in network.source_aware_layers():
        layer.set_statistics(n, layer.moving_mean.numpy()[:n].mean(0), layer.moving_variance.numpy()[:n].mean(0))


def estimate_slot_statistics(network, data, rows, slots, modalities) -> None:
    """Exact statistics of each slot in ``slots`` over its cells among ``rows`` of ``data``."""
    rows = np.arange(data.n_cells) if rows is None else np.asarray(rows)
    for slot in slots:
        estimate_statistics(network, data, rows[data.source[rows] == slot], int(slot), modalities)


# ---------------------------------------------------------------------------- queries
@dataclass
class Query:
    """A query aligned to a model: inputs in vocabulary order, modalities used, and the
    unseen sources (label -> row indices) whose cells sit in the fallback slot."""

    inputs: CellInputs
    modalities: list
    unseen: dict = field(default_factory=dict)
    batch_key: str | None = None


def query_specs(model, modalities) -> dict:
    """The modality specs to read from a query: all of the model's, or a named subset."""
    if modalities is None:
        return dict(model.modality_specs)
    if isinstance(modalities, (list, tuple)):
        specs = {m: model.modality_specs.get(m) for m in modalities}
    else:
        specs = normalise_modalities(modalities)
    unknown = [m for m in specs if m not in model.vocabularies]
    if unknown:
        raise ValueError(f"modalities {unknown} are not in the model (has {list(model.vocabularies)})")
    return specs


def align_matrices(model, adata, specs, min_gene_overlap=None, scale_check: str = "warn", verbose: bool = True):
    """Each modality of ``adata`` as CSR in the model's vocabulary order, with alignment reports."""
    min_overlap = DEFAULT_MIN_GENE_OVERLAP if min_gene_overlap is None else min_gene_overlap
    matrices, reports = {}, {}
    for m, spec in specs.items():
        if spec == "adata":
            raise ValueError(f"modality {m!r} came from a second AnnData at training; pass it via modalities={{'{m}': adata_{m}}}")
        X, names = read_modality(adata, m, spec)
        matrices[m], reports[m] = model.vocabularies[m].align(X, names, modality=m, min_overlap=min_overlap)
        check_value_scale(getattr(model, "value_scales", {}).get(m), matrices[m], m, scale_check)
        if verbose:
            log.info(str(reports[m]))
    return matrices, reports


def query_sources(model, adata, batch_key=MODEL_BATCH_KEY, unseen_label: str = "query"):
    """Per-cell source labels of a query (object array) and the column they came from.

    ``batch_key``: ``MODEL_BATCH_KEY`` (default) = the model's batch key; if the query has
    no such column, every cell is one source ``unseen_label`` (with a warning). A column
    name = that column. ``None`` = no batch column: every cell in source ``unseen_label``.
    Models trained without a batch key put every cell in their one source.
    """
    if model.batch_key is None:
        return np.full(adata.n_obs, model.sources[0], dtype=object), None
    default = batch_key is MODEL_BATCH_KEY or batch_key == _LEGACY_MODEL_KEY
    key = resolve_batch_key(batch_key, model.batch_key)
    if key is not None and key not in adata.obs:
        if default:
            warn_once(f"the query has no obs[{key!r}] (the model's batch key): all its cells are treated as one "
                      f"source {unseen_label!r}; pass batch_key=<column> if another column holds its batches")
            key = None
        else:
            raise KeyError(f"batch_key {key!r} is not a column of the query's obs (columns: {list(adata.obs.columns)[:20]}); "
                           "pass batch_key=None to treat all query cells as one source")
    if key is None:
        return np.full(adata.n_obs, unseen_label, dtype=object), None
    values = adata.obs[key]
    if values.isna().any():
        raise ValueError(f"the batch/source column {key!r} has {int(values.isna().sum())} missing values; fill them first")
    return values.astype(str).to_numpy(dtype=object), key


def align_query(model, adata, modalities=None, batch_key=MODEL_BATCH_KEY, min_gene_overlap=None,
                unseen_source: str = "adapt", scale_check: str = "warn", verbose: bool = True) -> Query:
    """Align a query AnnData to ``model``: genes by name, values checked against the training
    scale, sources by label (unseen ones marked for ``unseen_source`` BatchNorm)."""
    if adata is None or not hasattr(adata, "obs"):
        raise TypeError(f"expected an AnnData, got {type(adata).__name__}")
    if adata.n_obs == 0:
        raise ValueError("the query AnnData has no cells")
    if unseen_source not in UNSEEN_SOURCE_MODES:
        raise ValueError(f"unseen_source={unseen_source!r}; allowed: {UNSEEN_SOURCE_MODES}")
    specs = query_specs(model, modalities)
    labels, key = query_sources(model, adata, batch_key)
    matrices, reports = align_matrices(model, adata, specs, min_gene_overlap, scale_check, verbose)
    codes, _ = encode_sources(labels, model.sources)
    unseen = {label: np.flatnonzero((codes < 0) & (labels == label)) for label in pd.unique(labels[codes < 0])}
    if unseen:
        what = ("their own statistics (computed over all their cells)" if unseen_source == "adapt"
                else "the average statistics of the training sources")
        warn_once(f"source(s) {sorted(unseen)[:10]} were not seen in training; their BatchNorm uses {what} "
                  f"(unseen_source={unseen_source!r})")
        codes = np.where(codes < 0, model.n_sources, codes).astype(np.int32)
    return Query(CellInputs(matrices, codes, reports), list(specs), unseen, key)


def with_unseen_sources(model, query: Query, unseen_source: str, run) -> None:
    """Run ``run(rows)`` for the seen cells, then for each unseen source with its BatchNorm
    slot set as ``unseen_source`` says; the model's statistics are restored afterwards.

    ``'adapt'`` needs at least two cells for a variance: smaller unseen sources use the
    training average (``'pooled'``) instead, with a warning.
    """
    network, inputs = model.network, query.inputs
    seen = np.flatnonzero(inputs.source < model.n_sources)
    if len(seen):
        run(seen)
    if not query.unseen:
        return
    tiny = sorted(label for label, rows in query.unseen.items() if len(rows) < 2)
    if unseen_source == "adapt" and tiny:
        warn_once(f"unseen source(s) {tiny[:10]} have a single cell, too few for their own BatchNorm statistics; "
                  "they use the training average (unseen_source='pooled') instead")
    saved = [(layer, layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
             for _, layer, _ in network.source_aware_layers()]
    try:
        for label, rows in query.unseen.items():
            if unseen_source == "adapt" and label not in tiny:
                estimate_statistics(network, inputs, statistics_sample(rows, model.config), model.n_sources, query.modalities)
            elif unseen_source == "adapt":
                reset_fallback_statistics(network)
            run(rows)
    finally:
        for layer, mean, var in saved:
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(var)


def embed_query(model, query: Query, unseen_source: str = "adapt", student: bool = False, batch_size: int = 512):
    """Teacher (and optionally student) embeddings (n_cells, d) float32, L2-normalised, checked."""
    d = model.config.embedding_dim
    z_t = np.zeros((query.inputs.n_cells, d), np.float32)
    z_s = np.zeros((query.inputs.n_cells, d), np.float32) if student else None
    fn = compiled(model.network).embed(query.modalities, student)

    def run(rows):
        for part, batch in ordered_batches(query.inputs, query.modalities, rows, batch_size):
            t, s = fn(batch)
            z_t[part] = t.numpy()
            if student:
                z_s[part] = s.numpy()

    with_unseen_sources(model, query, unseen_source, run)
    check_embeddings(z_t, "Concerto embedding")
    return z_t, z_s
