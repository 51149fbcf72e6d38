"""Training checkpoints: one directory per completed epoch, each written whole and renamed in.

Layout of ``checkpoint_dir``::

    epoch-00002/            the last completed epoch (older ones are removed)
        network.weights.h5      weights, BatchNorm statistics and dropout RNG states
        optimizer.weights.h5    Adam state
        state.json              epoch, history, what the run was (architecture, training
                                settings, gene names, sources) and the sha256 of both files

A killed run leaves either the previous epoch's directory or the new one, never files of
two epochs mixed: the new directory is renamed into place only after all three files are
written, and its ``state.json`` digests tie the files to each other. Resuming checks that
the checkpoint was written for the same genes (by name and order), sources, architecture
and training settings; anything else is refused with the difference named.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from . import io as model_io

STATE = "state.json"
NETWORK = "network.weights.h5"
OPTIMIZER = "optimizer.weights.h5"
_EPOCH_DIR = re.compile(r"^epoch-(\d{5,})$")


def optimizer_variables(optimizer) -> dict:
    return {f"v{i:05d}": v for i, v in enumerate(optimizer.variables)}


class TrainingCheckpoint:
    """The checkpoints of one training run in ``directory``."""

    def __init__(self, directory):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"checkpoint_dir {self.directory} exists and is not a directory")
        if (self.directory / STATE).exists():
            raise ValueError(f"checkpoint_dir {self.directory} holds a checkpoint in the old single-directory layout "
                             "(files replaced one by one, not safe to resume); delete it or use another checkpoint_dir")

    def epochs(self) -> list:
        """(epoch, directory) of every completed checkpoint, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _EPOCH_DIR.match(p.name)) and p.is_dir()]
        return sorted(found)

    def write(self, epoch: int, network_vars: dict, optimizer_vars: dict, state: dict) -> Path:
        """Write epoch ``epoch`` as a new directory, then drop older ones and unfinished leftovers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=f".epoch-{epoch:05d}.tmp-"))
        try:
            model_io.save_variables(tmp / NETWORK, network_vars, "checkpoint")
            model_io.save_variables(tmp / OPTIMIZER, optimizer_vars, "optimizer checkpoint")
            files = {name: model_io.sha256_file(tmp / name) for name in (NETWORK, OPTIMIZER)}
            body = {**state, "epoch": int(epoch), "files": files}
            data = json.dumps({**body, "state_sha256": model_io.sha256_json(body)}, indent=1).encode()
            (tmp / STATE).write_bytes(data)
            final = self.directory / f"epoch-{epoch:05d}"
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old_epoch, path in self.epochs():
            if old_epoch < epoch:
                shutil.rmtree(path, ignore_errors=True)
        for leftover in self.directory.glob(".epoch-*.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return final

    def latest(self):
        """``(state, directory)`` of the last completed epoch, verified; ``None`` when there is none."""
        found = self.epochs()
        if not found:
            return None
        epoch, path = found[-1]
        try:
            state = json.loads((path / STATE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"checkpoint {path} is unreadable ({err}); delete it to start over") from None
        body = {k: v for k, v in state.items() if k != "state_sha256"}
        if state.get("state_sha256") != model_io.sha256_json(body) or state.get("epoch") != epoch:
            raise ValueError(f"checkpoint {path}: {STATE} was changed or belongs to another epoch; delete it to start over")
        for name, digest in state["files"].items():
            file = model_io.contained_file(path, name)
            if not file.is_file() or model_io.sha256_file(file) != digest:
                raise ValueError(f"checkpoint {path}: {name} is missing or does not match {STATE} (mixed or "
                                 "corrupt checkpoint); delete it to start over")
        return state, path

    def restore(self, path: Path, network_vars: dict, optimizer_vars: dict) -> None:
        model_io.load_variables(path / NETWORK, network_vars, "checkpoint")
        model_io.load_variables(path / OPTIMIZER, optimizer_vars, "optimizer checkpoint")


def describe_mismatch(saved: dict, current: dict, directory) -> str | None:
    """Why a checkpoint's run description ``saved`` differs from the run ``current``, or None.

    Both hold ``vocabularies`` (modality -> gene names), ``sources``, ``config`` and
    ``training``; ``epochs`` may differ (a resumed run may train longer).
    """
    where = f"checkpoint in {directory}"
    fix = "; use another checkpoint_dir or delete it"
    for m in sorted(set(saved["vocabularies"]) | set(current["vocabularies"])):
        old, new = saved["vocabularies"].get(m), current["vocabularies"].get(m)
        if old is None or new is None:
            return f"{where} was written for other modalities ({sorted(saved['vocabularies'])} vs {sorted(current['vocabularies'])}){fix}"
        if old != new:
            shared = len(set(old) & set(new))
            what = ("the same genes in another order" if shared == len(old) == len(new)
                    else f"{len(old)} genes, {shared} of them among this model's {len(new)}")
            first = next((f"{a!r} vs {b!r}" for a, b in zip(old, new) if a != b), "")
            return f"{where} was trained on other [{m}] genes ({what}; first difference {first}){fix}"
    if saved["sources"] != current["sources"]:
        return f"{where} was written for other sources ({saved['sources'][:5]} vs {current['sources'][:5]}){fix}"
    for section in ("config", "training"):
        old = {k: v for k, v in saved[section].items() if k != "epochs"}
        new = {k: v for k, v in current[section].items() if k != "epochs"}
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            return f"{where} used other hyperparameters ({diff}){fix}"
    return None
