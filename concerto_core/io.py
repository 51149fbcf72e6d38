"""Model directories: strict HDF5 weights plus a JSON manifest (no pickle, no code execution).

Layout of a model directory::

    manifest.json           package version, hyperparameters, vocabularies, sources, seed,
                            sha256 of the weight file, training history
    weights.weights.h5      one dataset per variable, keyed by its explicit layer/variable path
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

MANIFEST = "manifest.json"
WEIGHTS = "weights.weights.h5"
FORMAT = "concerto-model"
FORMAT_VERSION = 1


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


def save_variables(path, variables: dict) -> None:
    def write(tmp):
        with h5py.File(tmp, "w") as fh:
            fh.attrs["format"] = FORMAT
            for name, v in variables.items():
                fh.create_dataset(name, data=np.asarray(v.numpy() if hasattr(v, "numpy") else v))

    atomic_write_bytes(path, write)


def load_variables(path, variables: dict, what: str = "model") -> None:
    """Assign stored values to ``variables``; any missing, extra or mis-shaped entry is an error."""
    stored = {}
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda name, obj: stored.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
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
    for name, v in variables.items():
        v.assign(stored[name])


def write_manifest(directory: Path, manifest: dict) -> None:
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    atomic_write_bytes(Path(directory) / MANIFEST, lambda tmp: Path(tmp).write_bytes(data))


def read_manifest(directory) -> dict:
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a Concerto model directory (no such directory)")
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not a Concerto model directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a Concerto model manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest['format_version']}, newer than this package supports "
            f"({FORMAT_VERSION}); upgrade concerto_core"
        )
    return manifest
