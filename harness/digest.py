"""Content digests of files: what a rerun compares to know that an input is unchanged."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of the file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_KNOWN: dict[tuple[str, int, int], str] = {}


def file_sha256_cached(path: str | Path) -> str:
    """`file_sha256`, computed once per process for a file of unchanged path, size and mtime (a job
    asks for its weights' digest several times)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _KNOWN:
        _KNOWN[key] = file_sha256(path)
    return _KNOWN[key]
