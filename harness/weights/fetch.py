"""Download one checkpoint into the cache: resumable, checksum-verified, atomic.

The transfer goes to `.<name>.part` beside the target; an interrupted transfer leaves only that
file, and the next fetch continues it with an HTTP Range request. Only a complete file whose
sha256 matches the published digest (or prefix), or the digest recorded at its first fetch, is
renamed onto the target; a mismatch deletes the partial file, so the cache never holds a file that
failed its check.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.atomic import write_json

log = logging.getLogger(__name__)
CHUNK = 1 << 20
RECORD_FILE = "checksums.json"


class ChecksumMismatch(RuntimeError):
    """A downloaded file's sha256 differs from the published or recorded one."""


class IncompleteDownload(RuntimeError):
    """The server closed the transfer before the announced length arrived."""


@dataclass(frozen=True)
class Expected:
    """What a fetched file must hash to: the full sha256 and/or its leading hex digits."""

    sha256: str | None = None
    sha256_prefix: str | None = None

    def check(self, digest: str, path: Path) -> None:
        if self.sha256 and digest != self.sha256.lower():
            raise ChecksumMismatch(f"{path.name}: sha256 {digest} != expected {self.sha256}")
        if self.sha256_prefix and not digest.startswith(self.sha256_prefix.lower()):
            raise ChecksumMismatch(f"{path.name}: sha256 {digest} does not start with the published "
                                   f"{self.sha256_prefix}")

    @property
    def known(self) -> bool:
        return bool(self.sha256 or self.sha256_prefix)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_digests(cache_dir: Path) -> dict[str, str]:
    path = Path(cache_dir) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(cache_dir: Path, url: str, digest: str) -> None:
    records = recorded_digests(cache_dir)
    records[url] = digest
    write_json(Path(cache_dir) / RECORD_FILE, records)


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the missing bytes of `url` to `part` (Range request when `part` has some)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "cxr-bench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:  # the server ignored the Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name.strip(".")[:-5])
        try:
            with open(part, "ab" if have else "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise IncompleteDownload(f"{url}: got {size} of {total} bytes; rerun to resume")


def fetch(url: str, target: str | os.PathLike, expected: Expected = Expected(), *, cache_dir=None,
          timeout: float = 60.0, progress: bool = True) -> str:
    """Make `target` a verified copy of `url`; returns its sha256. An existing target is re-verified
    instead of fetched again. Digests of files with no published checksum are recorded (and printed
    by the caller) in `cache_dir`/checksums.json on first fetch and enforced afterwards."""
    target = Path(target)
    cache_dir = Path(cache_dir) if cache_dir is not None else target.parent
    recorded = recorded_digests(cache_dir).get(url)
    must = Expected(expected.sha256 or recorded, expected.sha256_prefix)
    if target.is_file():
        digest = sha256_of(target)
        must.check(digest, target)
        return digest
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    try:
        _transfer(url, part, timeout, progress)
    except urllib.error.HTTPError as err:
        if err.code != 416:  # 416: the partial file already holds every byte
            raise
    digest = sha256_of(part)
    try:
        must.check(digest, target)
    except ChecksumMismatch:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    if not must.known:
        _record(cache_dir, url, digest)
    return digest
