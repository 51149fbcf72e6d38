"""Checks of the command line's arguments and files, made before any TensorFlow import.

Only the standard library, h5py and the JSON manifests are used here, so ``concerto``
rejects a wrong option or path within a second or two instead of after TensorFlow's
start-up (30-45 s) or, worse, after training. A failed check raises :class:`UsageError`,
which the command line prints as one line (``concerto: error: ...``, exit status 2).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class UsageError(Exception):
    """A mistake in the arguments or the input files (not a bug): one line, exit status 2."""


# --- value types for argparse: an invalid value is reported as "argument --k: must be >= 1, got 0"

def int_at_least(low: int):
    """argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False):
    """argparse type: a finite float in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    interval = f"{'(' if low_open else '['}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{')' if high_open or high == math.inf else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    return parse


# --- paths

def same_location(a, b) -> bool:
    """True when two paths name the same file or directory (relative paths, symlinks, bind mounts)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_dir(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class H5adSummary:
    """What an .h5ad file holds, read from its HDF5 structure without loading the data."""

    obs_columns: frozenset | None  # None: an old on-disk layout whose columns are not listed
    layers: frozenset
    obsm: frozenset

    def require_obs(self, column: str, option: str, path) -> None:
        if self.obs_columns is not None and column not in self.obs_columns:
            have = ", ".join(sorted(self.obs_columns)[:20]) or "none"
            raise UsageError(f"{option} {column!r} is not a column of {path}'s obs (columns: {have})")


def check_h5ad(path, option: str) -> H5adSummary:
    """An existing, readable, intact AnnData (.h5ad) file; returns what it holds."""
    import h5py

    p = Path(path)
    if not p.exists():
        raise UsageError(f"{option} {path} does not exist")
    if p.is_dir():
        raise UsageError(f"{option} {path} is a directory, expected an .h5ad file")
    if p.suffix != ".h5ad":
        raise UsageError(f"{option} {path} is not an .h5ad file (AnnData); convert it first, "
                         "e.g. anndata.read_csv(...).write_h5ad(...)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except OSError as err:
        raise UsageError(f"{option} {path} cannot be read: {err.strerror}") from None
    if head != HDF5_SIGNATURE and not h5py.is_hdf5(p):
        raise UsageError(f"{option} {path} is not an HDF5 file, so not an .h5ad (AnnData) file")
    try:
        with h5py.File(p, "r") as fh:
            if not ("obs" in fh and "var" in fh):
                raise UsageError(f"{option} {path} is an HDF5 file but not AnnData (no obs/var groups)")
            return H5adSummary(_obs_columns(fh["obs"]), _keys(fh, "layers"), _keys(fh, "obsm"))
    except OSError as err:
        reason = str(err).splitlines()[0]
        raise UsageError(f"{option} {path} is damaged or truncated (an incomplete copy or write?): {reason}") from None


def _obs_columns(obs) -> frozenset | None:
    import h5py

    if not isinstance(obs, h5py.Group):
        return None
    if "column-order" in obs.attrs:
        return frozenset(str(c) for c in obs.attrs["column-order"])
    index = obs.attrs.get("_index", "_index")
    return frozenset(k for k in obs.keys() if k not in (index, "__categories"))


def _keys(fh, group: str) -> frozenset:
    return frozenset(fh[group].keys()) if group in fh and hasattr(fh[group], "keys") else frozenset()


def check_modality_specs(specs: dict, summary: H5adSummary, option: str, path) -> None:
    """``layer:NAME`` and ``obsm:KEY[:...]`` modality specs name slots that exist in the file."""
    for name, spec in specs.items():
        kind, _, rest = spec.partition(":")
        key = rest.split(":")[0]
        if kind == "layer" and key not in summary.layers:
            raise UsageError(f"{option} {name}={spec}: {path} has no layer {key!r} (layers: {sorted(summary.layers)})")
        if kind == "obsm" and key not in summary.obsm:
            raise UsageError(f"{option} {name}={spec}: {path} has no obsm {key!r} (obsm: {sorted(summary.obsm)})")
        if kind not in ("X", "layer", "obsm") or (kind != "X" and not key):
            raise UsageError(f"{option} {name}={spec}: the spec must be X, layer:NAME or obsm:KEY[:UNS_NAMES_KEY]")


def check_shards(path, option: str) -> dict:
    """A sharded dataset directory (``shards.json`` plus its shard files); returns its manifest."""
    from .shards import read_manifest

    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"{option} {path}: no such directory (--shards expects a sharded dataset directory)")
    try:
        return read_manifest(p)
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"{option} {path}: {err}") from None


def check_model_dir(path, option: str, classifier: bool = False) -> dict:
    """A model directory whose manifest and weight files verify (digests, paths inside the
    directory); returns the manifest. Hashing the weights costs milliseconds, not a TensorFlow start."""
    from . import io as model_io

    p = Path(path)
    writer = "'concerto finetune'" if classifier else "'concerto pretrain'"
    if not p.exists():
        raise UsageError(f"{option} {path} does not exist")
    if not p.is_dir():
        raise UsageError(f"{option} {path} is a file, expected a model directory written by {writer}")
    try:
        manifest = model_io.read_model_directory(p)
    except (OSError, ValueError) as err:
        raise UsageError(f"{option} {err}") from None
    if classifier and not isinstance(manifest.get("classifier"), dict):
        raise UsageError(f"{option} {path} holds a pretrained model, not a classifier; make one with 'concerto finetune'")
    return manifest


def check_output_file(path, option: str, inputs: dict) -> None:
    """An .h5ad output in an existing, writable directory that is none of the input files.

    ``inputs`` maps option -> path of the files the command reads.
    """
    p = Path(path)
    if p.suffix != ".h5ad":
        raise UsageError(f"{option} {path}: the output is an AnnData file and must end in .h5ad (for a table, "
                         "read it back: pandas.DataFrame(anndata.read_h5ad(path).obsm[KEY]).to_csv(...))")
    if p.is_dir():
        raise UsageError(f"{option} {path} is a directory, expected an .h5ad file name")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {parent} does not exist")
    if not _writable_dir(parent):
        raise UsageError(f"{option} {path}: the directory {parent} is not writable")
    for other_option, other in inputs.items():
        if other is not None and same_location(p, other):
            raise UsageError(f"{option} {path} is the {other_option} file; write the result to a new file")


def check_output_dir(path, option: str, protected: dict) -> None:
    """A directory that is or can be created writable and is none of the ``protected`` directories.

    ``protected`` maps option -> path of directories the command must leave unchanged
    (compared after resolving relative paths and symlinks).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {path} exists and is not a directory")
    for other_option, other in protected.items():
        if other is not None and same_location(p, other):
            raise UsageError(f"{option} {path} is the {other_option} directory, which this command leaves "
                             "unchanged; choose a new directory")
    existing = _nearest_existing(p)
    if not _writable_dir(existing):
        raise UsageError(f"{option} {path}: {existing} is not a writable directory")
