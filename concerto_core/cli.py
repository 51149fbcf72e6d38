"""Command line: ``concerto pretrain | embed | map | finetune | classify`` (``concerto <command> --help``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _modalities(values):
    """Parse repeated ``--modality name=spec`` options into an ordered dict."""
    if not values:
        return None
    out = {}
    for item in values:
        name, sep, spec = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--modality expects name=spec (e.g. rna=X, protein=obsm:protein), got {item!r}")
        out[name] = spec
    return out


def _read_h5ad(path):
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise SystemExit(f"input file {path} does not exist")
    if path.suffix != ".h5ad":
        raise SystemExit(f"input file {path} is not an .h5ad file (AnnData); convert it first")
    return ad.read_h5ad(path)


def _set_threads(n):
    from .kernels import set_cpu_threads

    set_cpu_threads(n)


def _subcommand(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand parser with defaults in its --help and the shared --threads option."""
    parser = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for TensorFlow and the numba kernels (default: all)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    from .config import ConcertoConfig

    defaults = ConcertoConfig()
    p = argparse.ArgumentParser(prog="concerto", description="Concerto single-cell contrastive learning")
    sub = p.add_subparsers(dest="command", required=True)

    pre = _subcommand(sub, "pretrain", "contrastive pretraining on an .h5ad; writes a model directory")
    pre.add_argument("--input", required=True, help="training cells (.h5ad; X log-normalised, var_names = genes), or a shard directory with --shards")
    pre.add_argument("--output", required=True, help="model directory to write")
    pre.add_argument("--batch-key", default=None, help="obs column with the source/batch (source-aware BatchNorm)")
    pre.add_argument("--layer", default=None, help="use adata.layers[LAYER] instead of X for RNA")
    pre.add_argument("--modality", action="append", metavar="NAME=SPEC",
                     help="a modality, repeatable: rna=X, rna=layer:NAME, protein=obsm:KEY[:UNS_NAMES_KEY]")
    pre.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training cells")
    pre.add_argument("--batch-size", type=int, default=defaults.batch_size, help="cells per mini-batch (paper: 32)")
    pre.add_argument("--lr", type=float, default=defaults.lr, help="initial Adam learning rate")
    pre.add_argument("--lr-end", type=float, default=defaults.lr_end, help="learning rate at the end (exponential decay)")
    pre.add_argument("--dropout", type=float, default=defaults.dropout, help="dropout rate of the augmentation")
    pre.add_argument("--temperature", type=float, default=defaults.temperature, help="NT-Xent temperature tau")
    pre.add_argument("--embedding-dim", type=int, default=defaults.embedding_dim, help="embedding size d")
    pre.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    pre.add_argument("--checkpoint-dir", default=None, help="save per-epoch checkpoints here and resume from them")
    pre.add_argument("--authors-code-variant", action="store_true",
                     help="use the released code's architecture (tanh after pooling, value BatchNorm, 2-layer student, dropout 0.1)")
    pre.add_argument("--mixed-precision", choices=["none", "bfloat16", "float16"], default="none",
                     help="low-precision compute for GPUs (weights, BatchNorm and loss stay float32)")
    pre.add_argument("--cpu-kernels", choices=["auto", "numba", "tensorflow"], default=defaults.cpu_kernels,
                     help="fused numba CPU kernels or TensorFlow graphs for attention pooling and the student input "
                          "('auto': numba without a GPU)")
    pre.add_argument("--precise-bn-max-cells", type=int, default=defaults.precise_bn_max_cells,
                     help="cells per source sampled for the BatchNorm statistics after training (0: all cells)")
    pre.add_argument("--strategy", choices=["none", "mirrored", "multiworker"], default="none",
                     help="tf.distribute: 'mirrored' = all local GPUs, 'multiworker' = machines listed in TF_CONFIG")
    pre.add_argument("--shards", action="store_true",
                     help="--input is a sharded dataset directory (streamed, for data larger than memory)")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing model directory")

    emb = _subcommand(sub, "embed", "embed cells with a trained model; writes an .h5ad with obsm[KEY]")
    emb.add_argument("--model", required=True, help="model directory written by 'concerto pretrain'")
    emb.add_argument("--input", required=True, help="cells to embed (.h5ad, same gene identifiers as the model)")
    emb.add_argument("--output", required=True, help="output .h5ad (input plus the embedding)")
    emb.add_argument("--key-added", default="X_concerto", help="obsm key of the embedding")
    emb.add_argument("--batch-key", default="__model__", help="obs column with sources (default: the model's key)")
    emb.add_argument("--student", action="store_true", help="also write the student embedding (KEY_student)")
    emb.add_argument("--modalities", default=None, help="comma-separated subset of the model's modalities, e.g. rna")
    emb.add_argument("--unseen-source", choices=["adapt", "pooled"], default="adapt",
                     help="BatchNorm of sources unseen in training: own statistics or training average")
    emb.add_argument("--min-gene-overlap", type=float, default=0.5, help="refuse queries sharing fewer vocabulary genes")

    mp = _subcommand(sub, "map", "map query cells onto an annotated reference: embed both with the reference model "
                                 "(optionally fine-tuned on the query first) and vote labels among k nearest "
                                 "reference cells; writes the query with obs['predicted_label'], obs['conf_score']")
    mp.add_argument("--model", required=True, help="reference model directory written by 'concerto pretrain'")
    mp.add_argument("--reference", required=True, help="annotated reference cells (.h5ad; the model's batch key in obs)")
    mp.add_argument("--query", required=True, help="query cells (.h5ad, genes matched to the model by name)")
    mp.add_argument("--output", required=True, help="output .h5ad: the query plus obsm['X_concerto'] and the predictions")
    mp.add_argument("--label-key", required=True, help="reference obs column(s) to transfer, comma-separated (coarse,fine)")
    mp.add_argument("--hierarchical", action="store_true", help="vote the fine level among cells of the voted coarse label")
    mp.add_argument("--k", type=int, default=5, help="neighbours that vote")
    mp.add_argument("--threshold", type=float, default=None,
                    help="confidence below which a cell is labelled 'unknown' (rejection); default: none")
    mp.add_argument("--query-batch-key", default=None,
                    help="query obs column with its sources (each gets its own BatchNorm statistics); default: one source")
    mp.add_argument("--finetune-dir", default=None,
                    help="first fine-tune the model on the query (unsupervised, paper's mapping mode b) and save it here")
    mp.add_argument("--finetune-epochs", type=int, default=1, help="epochs of query fine-tuning")
    mp.add_argument("--unseen-source", choices=["adapt", "pooled"], default="adapt",
                    help="BatchNorm of query sources unseen in training (direct inference): own statistics or training average")
    mp.add_argument("--min-gene-overlap", type=float, default=0.5, help="refuse queries sharing fewer vocabulary genes")

    ft = _subcommand(sub, "finetune", "supervised fine-tuning of a pretrained model on labelled cells (eq 12; "
                                      "eq 13 domain adaptation with --target); writes a classifier directory")
    ft.add_argument("--model", required=True, help="pretrained model directory (left unchanged)")
    ft.add_argument("--input", required=True, help="labelled cells (.h5ad)")
    ft.add_argument("--label-key", required=True, help="obs column with the labels to learn (NaN = unlabelled, skipped)")
    ft.add_argument("--output", required=True, help="classifier directory to write")
    ft.add_argument("--epochs", type=int, default=1, help="passes over the labelled cells (paper: 1)")
    ft.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (paper: 1e-3)")
    ft.add_argument("--batch-size", type=int, default=32, help="cells per mini-batch (paper: 32)")
    ft.add_argument("--freeze-teacher", action="store_true", help="train the classification head only")
    ft.add_argument("--target", default=None, help="unlabelled cells of the dataset to annotate (.h5ad): adds the "
                                                   "domain-adaptation consistency loss")
    ft.add_argument("--consistency-weight", type=float, default=1.0, help="lambda of the consistency loss")
    ft.add_argument("--seed", type=int, default=None, help="random seed (default: the model's)")
    ft.add_argument("--overwrite", action="store_true", help="replace an existing classifier directory")

    cl = _subcommand(sub, "classify", "annotate cells with a fine-tuned classifier: obs['predicted_label'], "
                                      "obs['conf_score'] (below --threshold: 'unknown')")
    cl.add_argument("--classifier", required=True, help="directory written by 'concerto finetune'")
    cl.add_argument("--input", required=True, help="cells to annotate (.h5ad)")
    cl.add_argument("--output", required=True, help="output .h5ad (input plus the predictions)")
    cl.add_argument("--threshold", type=float, default=None, help="reject predictions with lower confidence")
    cl.add_argument("--batch-key", default="__model__", help="obs column with sources (default: the model's key)")
    cl.add_argument("--unseen-source", choices=["adapt", "pooled"], default="adapt",
                    help="BatchNorm of sources unseen in training: own statistics or training average")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _set_threads(args.threads)
    from .model import Concerto

    if args.command == "pretrain":
        out = Path(args.output)
        if (out / "manifest.json").exists() and not args.overwrite:
            raise SystemExit(f"{out} already holds a model; pass --overwrite to replace it")
        hyper = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_end=args.lr_end,
                     dropout=args.dropout, temperature=args.temperature, embedding_dim=args.embedding_dim, seed=args.seed,
                     mixed_precision=None if args.mixed_precision == "none" else args.mixed_precision,
                     cpu_kernels=args.cpu_kernels, precise_bn_max_cells=args.precise_bn_max_cells or None)
        if args.authors_code_variant:
            hyper.update(tanh_after_pooling=True, value_batchnorm=True, student_hidden_layers=1, dropout=0.1)
        if args.shards:
            model = Concerto.from_shards(args.input, batch_key=args.batch_key, **hyper)
        else:
            adata = _read_h5ad(args.input)
            model = Concerto(adata, batch_key=args.batch_key, modalities=_modalities(args.modality), layer=args.layer, **hyper)
        model.train(checkpoint_dir=args.checkpoint_dir, strategy=args.strategy)
        model.save(out, overwrite=args.overwrite)
        print(json.dumps({"model": str(out), "history": model.history}), file=sys.stdout)
        return 0
    if args.command == "embed":
        model = Concerto.load(args.model)
        adata = _read_h5ad(args.input)
        mods = args.modalities.split(",") if args.modalities else None
        batch_key = None if args.batch_key in ("", "none", "None") else args.batch_key
        model.embed(adata, key_added=args.key_added, batch_key=batch_key, student=args.student, modalities=mods,
                    unseen_source=args.unseen_source, min_gene_overlap=args.min_gene_overlap)
        _write_h5ad(adata, args.output)
        return 0
    if args.command == "map":
        return _map(args, Concerto)
    if args.command == "finetune":
        return _finetune(args, Concerto)
    if args.command == "classify":
        return _classify(args)
    return 2


def _write_h5ad(adata, path) -> None:
    """Write atomically: a temporary file renamed into place, so no half-written output."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp.h5ad")
    adata.write_h5ad(tmp)
    os.replace(tmp, out)


def _finetune(args, Concerto) -> int:
    from .finetune import fine_tune

    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"{out} is not empty; pass --overwrite to replace it")
    adata = _read_h5ad(args.input)
    if args.label_key not in adata.obs:
        raise SystemExit(f"--label-key {args.label_key!r} is not a column of {args.input}'s obs")
    target = _read_h5ad(args.target) if args.target else None
    model = Concerto.load(args.model)
    clf = fine_tune(model, adata, args.label_key, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    freeze_teacher=args.freeze_teacher, seed=args.seed, target_adata=target,
                    consistency_weight=args.consistency_weight)
    clf.save(out, overwrite=args.overwrite)
    print(json.dumps({"classifier": str(out), "categories": list(clf.categories)}), file=sys.stdout)
    return 0


def _classify(args) -> int:
    from .finetune import ConcertoClassifier

    if Path(args.output).suffix != ".h5ad":
        raise SystemExit(f"--output {args.output} must end in .h5ad")
    clf = ConcertoClassifier.load(args.classifier)
    adata = _read_h5ad(args.input)
    batch_key = None if args.batch_key in ("", "none", "None") else args.batch_key
    clf.annotate(adata, threshold=args.threshold, batch_key=batch_key, unseen_source=args.unseen_source)
    _write_h5ad(adata, args.output)
    return 0


def _map(args, Concerto) -> int:
    from .finetune import finetune_query
    from .label_transfer import transfer_labels

    out = Path(args.output)
    if out.suffix != ".h5ad":
        raise SystemExit(f"--output {out} must end in .h5ad")
    labels = [k for k in args.label_key.split(",") if k]
    reference, query = _read_h5ad(args.reference), _read_h5ad(args.query)
    missing = [k for k in labels if k not in reference.obs]
    if missing:
        raise SystemExit(f"label column(s) {missing} not in the reference's obs (have {list(reference.obs.columns)[:20]})")
    model = Concerto.load(args.model)
    if model.batch_key is not None and model.batch_key not in reference.obs:
        raise SystemExit(f"the reference lacks obs[{model.batch_key!r}], the model's batch key")
    if args.query_batch_key is not None and args.query_batch_key not in query.obs:
        raise SystemExit(f"--query-batch-key {args.query_batch_key!r} is not a column of the query's obs")
    if args.finetune_dir:
        model = finetune_query(args.model, query, args.finetune_dir, batch_key=args.query_batch_key,
                               epochs=args.finetune_epochs, min_gene_overlap=args.min_gene_overlap, verbose=True)
    model.embed(reference)
    model.embed(query, batch_key=args.query_batch_key, unseen_source=args.unseen_source,
                min_gene_overlap=args.min_gene_overlap)
    transfer_labels(reference, query, labels if len(labels) > 1 else labels[0], k=args.k, threshold=args.threshold,
                    hierarchical=True if args.hierarchical else None)
    _write_h5ad(query, out)
    print(json.dumps({"query": str(out), "cells": int(query.n_obs), "labels": labels,
                      "model": str(args.finetune_dir or args.model)}), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
