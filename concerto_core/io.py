"""Model directories: strict HDF5 weights plus a signed JSON manifest (no pickle, no code execution).

Layout of a model directory::

    manifest.json           package version, hyperparameters, vocabularies, sources, value scale,
                            seed, training history, ``files`` (sha256 of every weight file) and
                            ``manifest_sha256`` (sha256 of all of the above)
    weights.weights.h5      one dataset per variable, keyed by its explicit layer/variable path
    [classifier_head.weights.h5]   a fine-tuned classifier's head

``manifest_sha256`` covers the manifest's whole content, and through ``files`` the weights:
editing the manifest by hand (a reordered vocabulary, swapped source names, another
``bn_epsilon``) or any weight file makes :func:`read_model_directory` refuse the directory.
It is an integrity check against accidental or inconsistent edits, not an authentication
(anyone can recompute it). File names in the manifest must name files inside the directory.
A directory is written under a temporary name and renamed into place, so a crash never
leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np

MANIFEST = "manifest.json"
WEIGHTS = "weights.weights.h5"
FORMAT = "concerto-model"
FORMAT_VERSION = 2  # 2: signed manifest (manifest_sha256) and a ``files`` table
DIGEST_KEY = "manifest_sha256"


def variable_path(v, root: str = "concerto") -> str:
    """``<layer name>/<variable name>``; Keras prefixes variables built inside the model's
    call with the model name, which we drop so every path is explicit and stable."""
    path = getattr(v, "path", None) or v.name.split(":")[0]
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


def model_variables(network, include_rng_state: bool = False):
    """Variables to persist, keyed by explicit ``<layer>/<variable>`` paths.

    Dropout RNG states are excluded from model files (they are not weights) and included,
    keyed by their dropout layer's name, in training checkpoints so a resumed run draws
    the same masks as an uninterrupted one.
    """
    out = {}
    for v in network.variables:
        path = variable_path(v, network.name)
        if "seed_generator" in path:
            continue
        if path in out:
            raise RuntimeError(f"two variables share the path {path!r}; layer names must be unique")
        out[path] = v
    if include_rng_state:
        for layer in network._flatten_layers(include_self=False):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                out[f"{layer.name}/rng_state"] = generator.state
    return out


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(value) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_bytes(path: Path, writer) -> None:
    """Write through a temporary file in the same directory, then rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _values(variables: dict) -> dict:
    return {name: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for name, v in variables.items()}


def check_values(values: dict, what: str, where) -> None:
    """Refuse non-finite weights and negative BatchNorm variances (they embed cells as NaN or 0)."""
    for name, value in values.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{what} weight {name!r} in {where} contains NaN or infinite values "
                             f"({int((~np.isfinite(value)).sum())} of {value.size}); the model is unusable")
        if name.endswith("moving_variance") and value.size and value.min() < 0:
            raise ValueError(f"{what} weight {name!r} in {where} has negative BatchNorm variances "
                             f"(min {value.min():.3g}); the file is corrupt or was edited")


def save_variables(path, variables: dict, what: str = "model") -> None:
    values = _values(variables)
    check_values(values, what, path)

    def write(tmp):
        with h5py.File(tmp, "w") as fh:
            fh.attrs["format"] = FORMAT
            for name, value in values.items():
                fh.create_dataset(name, data=value)

    atomic_write_bytes(path, write)


def load_variables(path, variables: dict, what: str = "model") -> None:
    """Assign stored values to ``variables``; any missing, extra, mis-shaped or non-finite
    entry (or a negative BatchNorm variance) is an error, raised before anything is assigned."""
    stored = {}
    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(lambda name, obj: stored.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    except OSError as err:
        raise ValueError(f"{what} weights {path} are not a readable HDF5 file ({err})") from None
    missing = sorted(set(variables) - set(stored))
    extra = sorted(set(stored) - set(variables))
    if missing or extra:
        raise ValueError(
            f"{what} weights in {path} do not match the architecture: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    for name, v in variables.items():
        value = stored[name]
        if tuple(value.shape) != tuple(v.shape):
            raise ValueError(f"{what} weight {name!r} has shape {value.shape} in {path}, the model expects {tuple(v.shape)}")
    check_values({name: np.asarray(value) for name, value in stored.items()}, what, path)
    for name, v in variables.items():
        v.assign(stored[name])


def contained_file(directory, name) -> Path:
    """``directory / name`` for a plain file name; anything that could leave the directory
    (absolute paths, ``..``, sub-folders, symlinks pointing out) is refused."""
    directory = Path(directory)
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"file name {name!r} in {directory / MANIFEST} is not a plain file name inside the "
                         "model directory; refusing to read it")
    path = directory / name
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ValueError(f"{path} points outside the model directory {directory}; refusing to read it")
    return path


def sign_manifest(manifest: dict) -> dict:
    """A copy of ``manifest`` with ``manifest_sha256`` over the rest of its content."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return {**body, DIGEST_KEY: sha256_json(body)}


def write_manifest(directory: Path, manifest: dict) -> None:
    data = json.dumps(sign_manifest(manifest), indent=1, sort_keys=True, allow_nan=False).encode()
    atomic_write_bytes(Path(directory) / MANIFEST, lambda tmp: Path(tmp).write_bytes(data))


def read_manifest(directory) -> dict:
    """The manifest of a model directory (format checked, content not yet verified)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a Concerto model directory (no such directory)")
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a Concerto model directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        what = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path} is not a Concerto model manifest (format={what!r})")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version!r}, newer than this package supports "
                         f"({FORMAT_VERSION}); upgrade concerto_core")
    return manifest


def _legacy_files(manifest: dict) -> dict:
    """Files and digests of a format-1 manifest (weights, and a classifier head if present)."""
    files = {manifest.get("weights_file", WEIGHTS): manifest.get("weights_sha256")}
    head = manifest.get("classifier")
    if isinstance(head, dict) and head.get("head_weights_file"):
        files[head["head_weights_file"]] = head.get("head_weights_sha256")
    return files


def read_model_directory(directory) -> dict:
    """Read and verify a model directory's manifest: its own digest, then every listed file's
    location (inside the directory) and sha256. Returns the manifest with ``files`` filled in."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    path = directory / MANIFEST
    if manifest.get("format_version", 0) < 2:
        warnings.warn(f"{path} is an unsigned format-1 manifest (written by an older concerto_core): only the "
                      "weight files' digests are checked; save the model again to sign it", UserWarning, stacklevel=3)
        files = _legacy_files(manifest)
    else:
        if manifest.get(DIGEST_KEY) != sha256_json({k: v for k, v in manifest.items() if k != DIGEST_KEY}):
            raise ValueError(f"{path} was changed after the model was saved (its content no longer matches "
                             f"{DIGEST_KEY}); vocabulary, sources and hyperparameters cannot be trusted. "
                             "Restore the original file or save the model again")
        files = manifest.get("files")
        if not isinstance(files, dict) or WEIGHTS not in files:
            raise ValueError(f"{path} lists no weight files")
    for name in files:  # confine every path before touching any file
        contained_file(directory, name)
    for name, digest in files.items():
        file = contained_file(directory, name)
        if not file.is_file():
            raise FileNotFoundError(f"file {file} listed in {path} is missing")
        if sha256_file(file) != digest:
            raise ValueError(f"{file} does not match the sha256 in {path} (file changed or corrupt)")
    return {**manifest, "files": files}


def write_model_directory(directory, manifest: dict, weight_files: dict, overwrite: bool = False) -> Path:
    """Write ``weight_files`` (file name -> variables) and the signed manifest as one directory.

    Everything is written into a temporary sibling directory first, which then replaces
    ``directory`` by renames: readers see the old model or the new one, never a mix. An
    existing model is replaced only with ``overwrite=True``; a directory holding other files
    is refused (they would be lost).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} exists and is not a directory")
    if directory.is_dir():
        entries = sorted(p.name for p in directory.iterdir())
        if MANIFEST in entries and not overwrite:
            raise FileExistsError(f"{directory} already holds a Concerto model; pass overwrite=True to replace it")
        ours = {MANIFEST, *weight_files}
        if MANIFEST in entries:
            try:
                ours |= set(_legacy_files(read_manifest(directory))) | set(read_manifest(directory).get("files") or {})
            except (ValueError, FileNotFoundError):
                pass
        foreign = [e for e in entries if e not in ours]
        if foreign:
            raise FileExistsError(f"{directory} holds other files ({foreign[:5]}); choose a new or empty directory "
                                  "(replacing it would delete them)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        files = {}
        for name, variables in weight_files.items():
            contained_file(tmp, name)
            save_variables(tmp / name, variables)
            files[name] = sha256_file(tmp / name)
        manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
        write_manifest(tmp, manifest)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _swap_in(new: Path, target: Path) -> None:
    """Replace directory ``target`` by ``new`` with renames (the old one is deleted last)."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
