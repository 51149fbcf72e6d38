"""The real datasets' sources (``config/sources.yaml``): loading, checking, and the file paths
the download and convert rules (``rules/download.smk``) use.

Every downloaded file lives at ``results/downloads/<source id>/<file name>`` (the URL's last
path segment, or the file's role when that has no extension, e.g. figshare's numeric ids); the
converted dataset at ``results/downloads/<source id>/standard.h5ad`` and an ortholog table at
``results/downloads/<source id>/orthologs.tsv``.
"""
from __future__ import annotations

import functools
import os
import urllib.parse
from pathlib import Path

import yaml

from .download import Checksum

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "config" / "sources.yaml"
SCHEMA = REPO / "rules" / "sources.schema.yaml"
LOCK = REPO / "config" / "downloads.lock.yaml"
DOWNLOADS = "results/downloads"


def load_sources(path: str | os.PathLike = SOURCES) -> dict[str, dict]:
    """{source id: entry}, validated against ``rules/sources.schema.yaml`` (defaults filled);
    roles the convert block names must be among the entry's files or local_files. Read once
    per file version (the Snakefile and the config checks both ask); do not modify the result."""
    p = Path(path)
    return _load_sources(str(p.resolve()), p.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_sources(path: str, mtime_ns: int) -> dict[str, dict]:
    from snakemake.utils import validate

    data = yaml.safe_load(Path(path).read_text())
    validate(data, str(SCHEMA))
    sources = data["sources"]
    for sid, s in sources.items():
        roles = set(s["files"]) | set(s.get("local_files", {}))
        named = [s["gene_map"]["file"]] if "gene_map" in s else []
        conv = s.get("convert", {})
        for part in ("counts", "protein"):
            f = conv.get(part, {}).get("file")
            named += f if isinstance(f, list) else [f] if f else []
        named += [conv["metadata"]["file"]] if "metadata" in conv else []
        named += [v for k, v in conv.get("counts", {}).get("options", {}).items() if k in ("features", "barcodes")]
        missing = sorted(set(named) - roles)
        if missing:
            raise ValueError(f"{path}: sources.{sid} names file roles {missing} that are neither under "
                             f"files nor local_files ({sorted(roles)})")
        if "convert" in s and "gene_map" in s:
            raise ValueError(f"{path}: sources.{sid} has both convert and gene_map; it is one or the other")
    return sources


def file_name(role: str, url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return name if "." in name else role


def download_path(source_id: str, role: str, url: str) -> str:
    return f"{DOWNLOADS}/{source_id}/{file_name(role, url)}"


def converted_path(source_id: str) -> str:
    return f"{DOWNLOADS}/{source_id}/standard.h5ad"


def gene_map_path(source_id: str) -> str:
    return f"{DOWNLOADS}/{source_id}/orthologs.tsv"


def source_files(source: dict, source_id: str) -> dict[str, str]:
    """{role: path} of every file a source's conversion reads: downloads and local files."""
    out = {role: download_path(source_id, role, f["url"]) for role, f in source["files"].items()}
    out.update(source.get("local_files", {}))
    return out


def file_spec(sources: dict, source_id: str, name: str) -> tuple[str, str, Checksum | None]:
    """(role, url, published checksum or None) of the file ``name`` of a source."""
    for role, f in sources[source_id]["files"].items():
        if file_name(role, f["url"]) == name:
            checksum = (Checksum("sha256", f["sha256"]) if f.get("sha256") else
                        Checksum("md5", f["md5"]) if f.get("md5") else None)
            return role, f["url"], checksum
    raise KeyError(f"source {source_id!r} has no file {name!r}; its files: "
                   f"{[file_name(r, f['url']) for r, f in sources[source_id]['files'].items()]}")
