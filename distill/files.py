"""File helpers shared by every stage: atomic writes and the commit marker of caches and checkpoints.

Reads and writes only the paths given. A file is written to `NAME.tmp`, fsynced, then renamed over
NAME, so a reader (or a run killed mid-write) sees the old file or the new one, never half of one.
A directory is "committed" once its marker (`complete.json`) exists: the marker lists the size and
sha256 of every file it covers, and a directory without one is never read as finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from distill.errors import InputError

MARKER = "complete.json"


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Open `path`'s temporary twin for writing; on a clean exit fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str | Path, obj, *, indent: int = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False))


def write_marker(directory: Path, *, covers: Path | None = None, **info) -> None:
    """Commit `directory`: write its marker listing every file under `covers` (default: the directory)."""
    directory = Path(directory)
    root = Path(covers) if covers is not None else directory
    files = {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != MARKER}
    write_json(directory / MARKER, {**info, "files": files})


def is_committed(directory: Path) -> bool:
    return (Path(directory) / MARKER).is_file()


def read_marker(directory: Path, *, what: str, fix: str) -> dict:
    """The marker's contents; InputError `{what} DIR: ...; {fix}` when it cannot be read."""
    marker = Path(directory) / MARKER
    try:
        info = json.loads(marker.read_text())
        if not isinstance(info.get("files"), dict):
            raise ValueError
        return info
    except (OSError, ValueError):
        raise InputError(f"{what} {directory}: unreadable commit marker {marker.name}; {fix}") from None


def verify_marker(directory: Path, *, what: str, fix: str) -> dict:
    """Check every listed file's size and sha256; InputError naming the first bad file. Returns the marker."""
    directory = Path(directory)
    info = read_marker(directory, what=what, fix=fix)
    for name, meta in info["files"].items():
        path = directory / name
        if not path.is_file():
            raise InputError(f"{what} {directory}: {name} is missing; {fix}")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise InputError(f"{what} {directory}: {name} is truncated ({size} of {meta['bytes']} bytes); {fix}")
        if sha256_file(path) != meta["sha256"]:
            raise InputError(f"{what} {directory}: {name} is corrupt (sha256 differs); {fix}")
    return info
