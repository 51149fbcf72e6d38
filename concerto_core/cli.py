"""Command line: ``concerto pretrain | embed | map | finetune | classify`` (``concerto <command> --help``).

Every command first checks its arguments and files (:mod:`concerto_core.cli_checks`: no
TensorFlow import, so a wrong path is reported in about a second), then loads TensorFlow and
runs. A user error prints one line, ``concerto: error: ...``, and exits with status 2; the
traceback is printed only with ``--debug`` or for internal errors (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .cli_checks import (
    UsageError,
    check_h5ad,
    check_modality_specs,
    check_model_dir,
    check_output_dir,
    check_output_file,
    check_shards,
    float_in,
    int_at_least,
)

POSITIVE_INT = int_at_least(1)
FRACTION = float_in(0.0, 1.0)
POSITIVE_FLOAT = float_in(0.0, low_open=True)
MANIFEST = "manifest.json"  # concerto_core.io.MANIFEST, named here to keep io out of the parser
ONE_SOURCE = ("none", "None", "")

EXIT_STATUS = """exit status: 0 success, 2 user error (bad option, missing or unreadable file: one line on
stderr, the traceback with --debug), 1 internal error (printed with its traceback)."""

CHECKS = {
    "pretrain": """checked before TensorFlow is loaded:
  --input is an intact .h5ad (AnnData) file (or with --shards a shard directory with shards.json);
  --batch-key, --layer and --modality slots exist in it; hyperparameters are in range;
  --output is not a file, holds no model unless --overwrite, and can be written;
  --checkpoint-dir can be written; --strategy multiworker has TF_CONFIG set.""",
    "embed": """checked before TensorFlow is loaded:
  --model holds a manifest and its weight file; --input is an intact .h5ad (AnnData) file with
  the batch column (--batch-key, default the model's); --modalities are the model's;
  --min-gene-overlap is in [0, 1]; --output ends in .h5ad (the only output format: the input
  plus obsm[KEY]), lies in an existing writable directory and is not the input file.""",
    "map": """checked before TensorFlow is loaded:
  --model holds a manifest and its weight file; --reference and --query are intact .h5ad
  (AnnData) files; the reference has every --label-key column and the model's batch column, the
  query has --query-batch-key; --k >= 1, --threshold and --min-gene-overlap in [0, 1];
  --output ends in .h5ad, lies in an existing writable directory and is neither input;
  --finetune-dir is a new (or model-free) writable directory other than --model.""",
    "finetune": """checked before TensorFlow is loaded:
  --model holds a manifest and its weight file and is never written (an --output that is the
  same directory, also through a symlink or a relative path, is refused even with --overwrite);
  --input (and --target) are intact .h5ad (AnnData) files; --label-key is a column of --input;
  --output is empty or new (or --overwrite) and can be written; numbers are in range.""",
    "classify": """checked before TensorFlow is loaded:
  --classifier is a directory written by 'concerto finetune' (manifest, model and head weights);
  --input is an intact .h5ad (AnnData) file with the batch column (--batch-key, default the
  model's); --threshold in [0, 1]; --output ends in .h5ad, lies in an existing writable
  directory and is not the input file.""",
}


class _Parser(argparse.ArgumentParser):
    """Parse errors become a :class:`UsageError` (one line) instead of usage text plus exit."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option list, epilogs with their own line breaks."""


def _subcommand(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand parser with defaults in its --help, the checks it makes, and the shared options."""
    parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter,
                            epilog=f"{CHECKS[name]}\n\n{EXIT_STATUS}")
    parser.add_argument("--threads", type=POSITIVE_INT, default=None,
                        help="CPU threads for TensorFlow and the numba kernels (default: all)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of user errors too")
    return parser


def _modalities(values):
    """Parse repeated ``--modality name=spec`` options into an ordered dict."""
    if not values:
        return None
    out = {}
    for item in values:
        name, sep, spec = item.partition("=")
        if not sep or not name or not name.isidentifier():
            raise UsageError(f"--modality expects name=spec (e.g. rna=X, protein=obsm:protein), got {item!r}")
        out[name] = spec
    return out


def build_parser() -> argparse.ArgumentParser:
    from .config import ConcertoConfig

    defaults = ConcertoConfig()
    p = _Parser(prog="concerto", description="Concerto single-cell contrastive learning", epilog=EXIT_STATUS,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="print the traceback of user errors too")
    sub = p.add_subparsers(dest="command", required=True, metavar="{pretrain,embed,map,finetune,classify}")

    pre = _subcommand(sub, "pretrain", "contrastive pretraining on an .h5ad; writes a model directory")
    pre.add_argument("--input", required=True, help="training cells (.h5ad; X log-normalised, var_names = genes), or a shard directory with --shards")
    pre.add_argument("--output", required=True, help="model directory to write")
    pre.add_argument("--batch-key", default=None, help="obs column with the source/batch (source-aware BatchNorm)")
    pre.add_argument("--layer", default=None, help="use adata.layers[LAYER] instead of X for RNA")
    pre.add_argument("--modality", action="append", metavar="NAME=SPEC",
                     help="a modality, repeatable: rna=X, rna=layer:NAME, protein=obsm:KEY[:UNS_NAMES_KEY]")
    pre.add_argument("--epochs", type=POSITIVE_INT, default=defaults.epochs,
                     help="passes over the training cells (default: chosen from the number of cells, >= 3)")
    pre.add_argument("--batch-size", type=int_at_least(2), default=defaults.batch_size,
                     help="cells per mini-batch (paper: 32; default: chosen from the number of cells, <= 256)")
    pre.add_argument("--lr", type=POSITIVE_FLOAT, default=defaults.lr, help="initial Adam learning rate")
    pre.add_argument("--lr-end", type=POSITIVE_FLOAT, default=defaults.lr_end,
                     help="learning rate at the end (exponential decay)")
    pre.add_argument("--dropout", type=float_in(0.0, 1.0, high_open=True), default=defaults.dropout,
                     help="dropout rate of the augmentation")
    pre.add_argument("--temperature", type=POSITIVE_FLOAT, default=defaults.temperature, help="NT-Xent temperature tau")
    pre.add_argument("--embedding-dim", type=POSITIVE_INT, default=defaults.embedding_dim, help="embedding size d")
    pre.add_argument("--seed", type=int_at_least(0), default=defaults.seed, help="random seed")
    pre.add_argument("--checkpoint-dir", default=None, help="save per-epoch checkpoints here and resume from them")
    pre.add_argument("--authors-code-variant", action="store_true",
                     help="use the released code's architecture (tanh after pooling, value BatchNorm over all genes with one shared "
                          "mean/variance, 2-layer student, dropout 0.1)")
    pre.add_argument("--mixed-precision", choices=["none", "bfloat16", "float16"], default="none",
                     help="low-precision compute for GPUs (weights, BatchNorm and loss stay float32)")
    pre.add_argument("--cpu-kernels", choices=["auto", "numba", "tensorflow"], default=defaults.cpu_kernels,
                     help="fused numba CPU kernels or TensorFlow graphs for attention pooling and the student input "
                          "('auto': numba without a GPU)")
    pre.add_argument("--precise-bn-max-cells", type=int_at_least(0), default=defaults.precise_bn_max_cells,
                     help="cells per source sampled for the BatchNorm statistics after training (0: all cells)")
    pre.add_argument("--strategy", choices=["none", "mirrored", "multiworker"], default="none",
                     help="tf.distribute: 'mirrored' = all local GPUs, 'multiworker' = machines listed in TF_CONFIG")
    pre.add_argument("--shards", action="store_true",
                     help="--input is a sharded dataset directory (streamed, for data larger than memory)")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing model directory")

    emb = _subcommand(sub, "embed", "embed cells with a trained model; writes an .h5ad with obsm[KEY]")
    emb.add_argument("--model", required=True, help="model directory written by 'concerto pretrain'")
    emb.add_argument("--input", required=True, help="cells to embed (.h5ad, same gene identifiers as the model)")
    emb.add_argument("--output", required=True, help="output .h5ad (input plus the embedding; replaced if it exists)")
    emb.add_argument("--key-added", default="X_concerto", help="obsm key of the embedding")
    emb.add_argument("--batch-key", default=None,
                     help="obs column with sources (default: the model's key; 'none': all cells one unseen source)")
    emb.add_argument("--student", action="store_true", help="also write the student embedding (KEY_student)")
    emb.add_argument("--modalities", default=None, help="comma-separated subset of the model's modalities, e.g. rna")
    emb.add_argument("--unseen-source", choices=["adapt", "pooled"], default="adapt",
                     help="BatchNorm of sources unseen in training: own statistics or training average")
    emb.add_argument("--min-gene-overlap", type=FRACTION, default=0.5,
                     help="refuse queries sharing a smaller fraction of the vocabulary genes (0-1)")

    mp = _subcommand(sub, "map", "map query cells onto an annotated reference: embed both with the reference model "
                                 "(optionally fine-tuned on the query first) and vote labels among k nearest "
                                 "reference cells; writes the query with obs['predicted_label'], obs['conf_score']")
    mp.add_argument("--model", required=True, help="reference model directory written by 'concerto pretrain'")
    mp.add_argument("--reference", required=True, help="annotated reference cells (.h5ad; the model's batch key in obs)")
    mp.add_argument("--query", required=True, help="query cells (.h5ad, genes matched to the model by name)")
    mp.add_argument("--output", required=True, help="output .h5ad: the query plus obsm['X_concerto'] and the predictions")
    mp.add_argument("--label-key", required=True, help="reference obs column(s) to transfer, comma-separated (coarse,fine)")
    mp.add_argument("--hierarchical", action="store_true", help="vote the fine level among cells of the voted coarse label")
    mp.add_argument("--k", type=POSITIVE_INT, default=5, help="neighbours that vote")
    mp.add_argument("--threshold", type=FRACTION, default=None,
                    help="confidence (0-1) below which a cell is labelled 'unknown' (rejection); default: none")
    mp.add_argument("--query-batch-key", default=None,
                    help="query obs column with its sources (each gets its own BatchNorm statistics); default: one source")
    mp.add_argument("--finetune-dir", default=None,
                    help="first fine-tune the model on the query (unsupervised, paper's mapping mode b) and save it here")
    mp.add_argument("--finetune-epochs", type=POSITIVE_INT, default=1, help="epochs of query fine-tuning")
    mp.add_argument("--finetune-lr", type=POSITIVE_FLOAT, default=None,
                    help="learning rate of query fine-tuning (default: 1e-3, the paper's fine-tuning rate)")
    mp.add_argument("--unseen-source", choices=["adapt", "pooled"], default="adapt",
                    help="BatchNorm of query sources unseen in training (direct inference): own statistics or training average")
    mp.add_argument("--min-gene-overlap", type=FRACTION, default=0.5,
                    help="refuse queries sharing a smaller fraction of the vocabulary genes (0-1)")

    ft = _subcommand(sub, "finetune", "supervised fine-tuning of a pretrained model on labelled cells (eq 12; "
                                      "eq 13 domain adaptation with --target); writes a classifier directory")
    ft.add_argument("--model", required=True, help="pretrained model directory (never modified)")
    ft.add_argument("--input", required=True, help="labelled cells (.h5ad)")
    ft.add_argument("--label-key", required=True, help="obs column with the labels to learn (NaN = unlabelled, skipped)")
    ft.add_argument("--output", required=True, help="classifier directory to write (not the --model directory)")
    ft.add_argument("--epochs", type=POSITIVE_INT, default=1, help="passes over the labelled cells (paper: 1)")
    ft.add_argument("--lr", type=POSITIVE_FLOAT, default=1e-3, help="Adam learning rate (paper: 1e-3)")
    ft.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="cells per mini-batch (paper: 32)")
    ft.add_argument("--freeze-teacher", action="store_true", help="train the classification head only")
    ft.add_argument("--target", default=None, help="unlabelled cells of the dataset to annotate (.h5ad): adds the "
                                                   "domain-adaptation consistency loss")
    ft.add_argument("--consistency-weight", type=float_in(0.0), default=1.0, help="lambda of the consistency loss")
    ft.add_argument("--seed", type=int_at_least(0), default=None, help="random seed (default: the model's)")
    ft.add_argument("--overwrite", action="store_true", help="replace the contents of an existing --output directory")

    cl = _subcommand(sub, "classify", "annotate cells with a fine-tuned classifier: obs['predicted_label'], "
                                      "obs['conf_score'] (below --threshold: 'unknown')")
    cl.add_argument("--classifier", required=True, help="directory written by 'concerto finetune'")
    cl.add_argument("--input", required=True, help="cells to annotate (.h5ad)")
    cl.add_argument("--output", required=True, help="output .h5ad (input plus the predictions; replaced if it exists)")
    cl.add_argument("--threshold", type=FRACTION, default=None, help="reject predictions with lower confidence (0-1)")
    cl.add_argument("--batch-key", default=None,
                    help="obs column with sources (default: the model's key; 'none': all cells one unseen source)")
    cl.add_argument("--unseen-source", choices=["adapt", "pooled"], default="adapt",
                    help="BatchNorm of sources unseen in training: own statistics or training average")
    return p


# --- checks (no TensorFlow): each returns what the run needs beyond ``args``

def _query_batch_key(option_value, manifest: dict, summary, path) -> str | None:
    """The query's source column: the option, or the model's batch key; None = one source."""
    if option_value in ONE_SOURCE or manifest.get("batch_key") is None:
        return None
    if option_value:
        summary.require_obs(option_value, "--batch-key", path)
        return option_value
    key = manifest["batch_key"]
    if summary.obs_columns is not None and key not in summary.obs_columns:
        raise UsageError(f"{path} has no obs column {key!r}, the model's batch key; name the column with the "
                         "sources with --batch-key COLUMN, or pass --batch-key none (all cells one unseen source)")
    return key


def _check_pretrain(args) -> dict:
    from .config import ConcertoConfig

    modalities = _modalities(args.modality)
    if args.shards:
        if modalities or args.layer:
            raise UsageError("--modality and --layer are not supported with --shards (shards hold RNA in X)")
        shards = check_shards(args.input, "--input")
        if args.batch_key and args.batch_key not in shards.get("obs_columns", []):
            raise UsageError(f"--batch-key {args.batch_key!r} is not among the obs columns stored in the shards of "
                             f"{args.input} ({shards.get('obs_columns', [])})")
    else:
        summary = check_h5ad(args.input, "--input")
        if args.batch_key:
            summary.require_obs(args.batch_key, "--batch-key", args.input)
        if args.layer and args.layer not in summary.layers:
            raise UsageError(f"--layer {args.layer!r}: {args.input} has no such layer (layers: {sorted(summary.layers)})")
        check_modality_specs(modalities or {}, summary, "--modality", args.input)
    check_output_dir(args.output, "--output", {})
    if (Path(args.output) / MANIFEST).exists() and not args.overwrite:
        raise UsageError(f"--output {args.output} already holds a model; pass --overwrite to replace it")
    if args.checkpoint_dir:
        check_output_dir(args.checkpoint_dir, "--checkpoint-dir", {})
    if args.strategy == "multiworker" and not os.environ.get("TF_CONFIG"):
        raise UsageError("--strategy multiworker needs the TF_CONFIG environment variable (the cluster's machines)")
    hyper = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_end=args.lr_end,
                 dropout=args.dropout, temperature=args.temperature, embedding_dim=args.embedding_dim, seed=args.seed,
                 mixed_precision=None if args.mixed_precision == "none" else args.mixed_precision,
                 cpu_kernels=args.cpu_kernels, precise_bn_max_cells=args.precise_bn_max_cells or None)
    if args.authors_code_variant:
        hyper.update(tanh_after_pooling=True, value_batchnorm="shared", student_hidden_layers=1, dropout=0.1)
    try:
        ConcertoConfig(**hyper)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return {"hyper": hyper, "modalities": modalities}


def _check_embed(args) -> dict:
    manifest = check_model_dir(args.model, "--model")
    summary = check_h5ad(args.input, "--input")
    if not args.key_added:
        raise UsageError("--key-added must not be empty")
    mods = [m for m in args.modalities.split(",") if m] if args.modalities else None
    unknown = sorted(set(mods or ()) - set(manifest.get("modalities", {})))
    if unknown:
        raise UsageError(f"--modalities {unknown} are not the model's (it has {sorted(manifest.get('modalities', {}))})")
    check_output_file(args.output, "--output", {"--input": args.input})
    return {"batch_key": _query_batch_key(args.batch_key, manifest, summary, args.input), "modalities": mods}


def _check_map(args) -> dict:
    manifest = check_model_dir(args.model, "--model")
    reference = check_h5ad(args.reference, "--reference")
    query = check_h5ad(args.query, "--query")
    labels = [k for k in args.label_key.split(",") if k]
    if not labels:
        raise UsageError("--label-key names no column")
    if args.hierarchical and len(labels) < 2:
        raise UsageError("--hierarchical needs at least two --label-key levels, e.g. --label-key coarse,fine")
    for key in labels:
        reference.require_obs(key, "--label-key", args.reference)
    if manifest.get("batch_key"):
        reference.require_obs(manifest["batch_key"], "the model's batch key", args.reference)
    if args.query_batch_key:
        query.require_obs(args.query_batch_key, "--query-batch-key", args.query)
    check_output_file(args.output, "--output", {"--reference": args.reference, "--query": args.query})
    if args.finetune_dir:
        check_output_dir(args.finetune_dir, "--finetune-dir", {"--model": args.model})
        if (Path(args.finetune_dir) / MANIFEST).exists():
            raise UsageError(f"--finetune-dir {args.finetune_dir} already holds a model; choose a new directory")
    return {"labels": labels}


def _check_finetune(args) -> dict:
    batch_key = check_model_dir(args.model, "--model").get("batch_key")
    labelled = check_h5ad(args.input, "--input")
    labelled.require_obs(args.label_key, "--label-key", args.input)
    cells = {"--input": labelled, "--target": check_h5ad(args.target, "--target") if args.target else None}
    for option, summary in cells.items():
        if batch_key and summary is not None:
            summary.require_obs(batch_key, "the model's batch key", getattr(args, option[2:]))
    check_output_dir(args.output, "--output", {"--model": args.model})
    out = Path(args.output)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--output {out} is not empty; pass --overwrite to replace its contents")
    return {}


def _check_classify(args) -> dict:
    manifest = check_model_dir(args.classifier, "--classifier", classifier=True)
    summary = check_h5ad(args.input, "--input")
    check_output_file(args.output, "--output", {"--input": args.input})
    return {"batch_key": _query_batch_key(args.batch_key, manifest, summary, args.input)}


# --- runs (TensorFlow is imported from here on)

def _read_h5ad(path, option: str):
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except MemoryError:
        raise
    except Exception as err:  # anndata/h5py errors on a damaged file that passed the structure check
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{option} {path} cannot be read as AnnData: {reason}") from err


def _write_h5ad(adata, path) -> None:
    """Write atomically: a temporary file renamed into place, so no half-written output."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp.h5ad")
    adata.write_h5ad(tmp)
    os.replace(tmp, out)


def _pretrain(args, plan) -> int:
    from .model import Concerto

    if args.shards:
        model = Concerto.from_shards(args.input, batch_key=args.batch_key, **plan["hyper"])
    else:
        adata = _read_h5ad(args.input, "--input")
        model = Concerto(adata, batch_key=args.batch_key, modalities=plan["modalities"], layer=args.layer, **plan["hyper"])
    model.train(checkpoint_dir=args.checkpoint_dir, strategy=args.strategy)
    model.save(args.output, overwrite=args.overwrite)
    print(json.dumps({"model": str(args.output), "history": model.history}), file=sys.stdout)
    return 0


def _embed(args, plan) -> int:
    from .model import Concerto

    model = Concerto.load(args.model)
    adata = _read_h5ad(args.input, "--input")
    model.embed(adata, key_added=args.key_added, batch_key=plan["batch_key"], student=args.student,
                modalities=plan["modalities"], unseen_source=args.unseen_source, min_gene_overlap=args.min_gene_overlap)
    _write_h5ad(adata, args.output)
    return 0


def _map(args, plan) -> int:
    from .finetune import finetune_query
    from .label_transfer import transfer_labels
    from .model import Concerto

    labels = plan["labels"]
    reference, query = _read_h5ad(args.reference, "--reference"), _read_h5ad(args.query, "--query")
    if args.finetune_dir:
        model = finetune_query(args.model, query, args.finetune_dir, batch_key=args.query_batch_key,
                               epochs=args.finetune_epochs, lr=args.finetune_lr, min_gene_overlap=args.min_gene_overlap,
                               verbose=True)
    else:
        model = Concerto.load(args.model)
    model.embed(reference)
    model.embed(query, batch_key=args.query_batch_key, unseen_source=args.unseen_source,
                min_gene_overlap=args.min_gene_overlap)
    transfer_labels(reference, query, labels if len(labels) > 1 else labels[0], k=args.k, threshold=args.threshold,
                    hierarchical=True if args.hierarchical else None)
    _write_h5ad(query, args.output)
    print(json.dumps({"query": str(args.output), "cells": int(query.n_obs), "labels": labels,
                      "model": str(args.finetune_dir or args.model)}), file=sys.stdout)
    return 0


def _finetune(args, plan) -> int:
    from .finetune import fine_tune
    from .model import Concerto

    adata = _read_h5ad(args.input, "--input")
    target = _read_h5ad(args.target, "--target") if args.target else None
    model = Concerto.load(args.model)
    clf = fine_tune(model, adata, args.label_key, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    freeze_teacher=args.freeze_teacher, seed=args.seed, target_adata=target,
                    consistency_weight=args.consistency_weight)
    clf.save(args.output, overwrite=args.overwrite)
    print(json.dumps({"classifier": str(args.output), "categories": list(clf.categories)}), file=sys.stdout)
    return 0


def _classify(args, plan) -> int:
    from .finetune import ConcertoClassifier

    clf = ConcertoClassifier.load(args.classifier)
    adata = _read_h5ad(args.input, "--input")
    clf.annotate(adata, threshold=args.threshold, batch_key=plan["batch_key"], unseen_source=args.unseen_source)
    _write_h5ad(adata, args.output)
    return 0


COMMANDS = {
    "pretrain": (_check_pretrain, _pretrain),
    "embed": (_check_embed, _embed),
    "map": (_check_map, _map),
    "finetune": (_check_finetune, _finetune),
    "classify": (_check_classify, _classify),
}

# Raised by the package for bad input (data that does not fit the model, a missing column, ...):
# reported like argument errors. Anything else is a bug and keeps its traceback.
INPUT_ERRORS = (UsageError, ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError,
                NotADirectoryError, IsADirectoryError)


def _report_user_error(err: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(err)
    message = err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else str(err)
    print(f"concerto: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        check, run = COMMANDS[args.command]
        plan = check(args)
    except UsageError as err:
        return _report_user_error(err, debug)
    try:
        if args.threads:
            from .kernels import set_cpu_threads

            set_cpu_threads(args.threads)
        return run(args, plan)
    except KeyboardInterrupt:
        print("concerto: interrupted", file=sys.stderr)
        return 130
    except INPUT_ERRORS as err:
        return _report_user_error(err, debug)
    except Exception:
        traceback.print_exc()
        print("concerto: internal error (a bug: please report it with the traceback above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
