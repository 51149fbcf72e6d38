"""Fetch one file over HTTP(S): retries with back-off, resume, checksum, atomic rename.

Why a downloader of our own rather than ``curl``: the checksum decides whether the file becomes
an output. Bytes go to ``.<name>.part`` in the destination's directory; only when the whole body
has arrived *and* its checksum matches is it renamed (atomically, same file system) to the
destination, so a Snakemake output is either complete and verified or absent.

Checksums: a published ``sha256`` / ``md5`` of the source (``config/sources.yaml``) is checked
when there is one. Otherwise the file's sha256 is recorded at its first download in the lock
file (``config/downloads.lock.yaml``, committed to the repository) and every later download is
checked against it. A mismatch removes the bad file and raises :class:`DownloadError` naming the
dataset and the URL.

Resume: an interrupted transfer (connection dropped, time-out, short body) is retried after
``backoff * 2**attempt`` seconds, asking for the missing bytes with an HTTP ``Range`` header;
a server that ignores ``Range`` (answers 200) is read again from the start. HTTP 404 / 403 /
410 are not retried: they raise at once, naming the dataset and the URL.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

ALGORITHMS = ("sha256", "md5")
#: HTTP statuses that will not change on a retry
PERMANENT = (400, 401, 403, 404, 410)
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that cannot give a verified file (missing, forbidden, wrong checksum, ...)."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str   # 'sha256' or 'md5'
    value: str       # lower-case hex digest

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"checksum algorithm {self.algorithm!r}; known: {ALGORITHMS}")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------- lock file


def read_lock(path: str | os.PathLike) -> dict:
    """{key: {url, sha256, bytes, recorded}} from the lock file ({} if it does not exist)."""
    p = Path(path)
    if not p.exists():
        return {}
    data = yaml.safe_load(p.read_text()) or {}
    return dict(data.get("files", {}))


def record_in_lock(path: str | os.PathLike, key: str, url: str, sha256: str, size: int) -> None:
    """Add one entry to the lock file (rewritten atomically; entries sorted for stable diffs)."""
    import fcntl

    p = Path(path)
    header = ("# sha256 of every downloaded file whose source publishes no checksum, recorded at its\n"
              "# first download (concerto_workflow.download) and verified on every later one.\n"
              "# Commit this file. Delete an entry only if the source really changed the file.\n")
    # parallel download jobs finish at any time: one writer at a time, so no entry is lost
    with open(p.with_name(f".{p.name}.flock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        files = read_lock(p)
        files[key] = {"url": url, "sha256": sha256, "bytes": int(size),
                      "recorded": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(header + yaml.safe_dump({"files": dict(sorted(files.items()))}, sort_keys=False))
        os.replace(tmp, p)


# ------------------------------------------------------------------------------- transfer


def _transfer(url: str, part: Path, *, name: str, timeout: float) -> bool:
    """One HTTP request appending to ``part`` (from its current size). True when the body is
    complete; False when it was cut short (the caller retries). Raises on permanent errors."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "concerto-workflow-download"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:     # nothing left to send: the part file is already complete
            return True
        if e.code in PERMANENT:
            raise DownloadError(f"dataset {name!r}: {url} answered HTTP {e.code} {e.reason}; the "
                                f"file is not there (or not public). Check the URL in config/sources.yaml.") from None
        raise
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        if status == 206:
            start = int(resp.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
            if start != have:
                raise ConnectionError(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:                          # 200: the server ignored Range; start again
            mode, have = "wb", 0
        expected = have + int(length) if length is not None else None
        got = have
        with open(part, mode) as f:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                got += len(block)
    if expected is not None and got < expected:
        log.warning("%s: connection closed after %d of %d bytes", url, got, expected)
        return False
    return True


def fetch(url: str, dest: str | os.PathLike, *, name: str, checksum: Checksum | None = None,
          lock: str | os.PathLike | None = None, lock_key: str | None = None, retries: int = 5,
          backoff: float = 2.0, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    ``name`` (the dataset) goes into every error message. ``checksum`` is the source's published
    one; without it, ``lock`` / ``lock_key`` (default: ``name/<file name>``) hold the sha256
    recorded at the first download. ``retries`` interrupted transfers are resumed, waiting
    ``backoff * 2**attempt`` seconds in between. A partly received ``.part`` file stays for the
    next run to resume; a complete file with a wrong checksum is deleted.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    key = lock_key or f"{name}/{dest.name}"
    recorded = read_lock(lock).get(key) if lock else None
    if checksum is None and recorded is not None:
        checksum = Checksum("sha256", recorded["sha256"])
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            log.info("%s: retry %d of %d in %.1f s (%s)", url, attempt, retries, wait, last_error)
            time.sleep(wait)
        try:
            if _transfer(url, part, name=name, timeout=timeout):
                break
            last_error = ConnectionError("connection closed before the end of the file")
        except DownloadError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                TimeoutError, OSError) as e:
            last_error = e
    else:
        raise DownloadError(f"dataset {name!r}: {url} could not be downloaded after {retries + 1} "
                            f"attempts (last error: {last_error}); the partial file {part} is kept "
                            f"so that the next run resumes it")
    _verify(part, url=url, name=name, checksum=checksum)
    if checksum is None and lock:
        record_in_lock(lock, key, url, file_digest(part, "sha256"), part.stat().st_size)
        log.info("%s: sha256 recorded in %s under %r", url, lock, key)
    os.replace(part, dest)
    return dest


def _verify(part: Path, *, url: str, name: str, checksum: Checksum | None) -> None:
    if checksum is None:
        return
    got = file_digest(part, checksum.algorithm)
    if got != checksum.value.lower():
        part.unlink()
        raise DownloadError(f"dataset {name!r}: {url} downloaded, but its {checksum.algorithm} is "
                            f"{got}, not the expected {checksum.value}; the file was removed. The "
                            f"source may have changed the file (then update config/sources.yaml or "
                            f"the entry in config/downloads.lock.yaml) or the transfer was corrupted.")
