"""Download one checkpoint into the cache: resumable, checksum-verified, atomic.

The transfer goes to `.<name>.part` beside the target; an interrupted transfer leaves only that
file, and the next fetch continues it with an HTTP Range request. Only a complete file whose
sha256 matches the published digest (or prefix), or the digest recorded at its first fetch, and
whose content is in the registry's `format` (harness.weights.formats, when given) is renamed onto
the target; a mismatch deletes the partial file, so the cache never holds a file that failed its
check.

A digest is recorded (for files with no published checksum) only after a complete transfer of
known length (the server announced the length and that many bytes arrived); `Fetched.check` says
which check the file passed, so the caller says "recorded" only when a digest was recorded.
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
from harness.weights.formats import check_format

log = logging.getLogger(__name__)
CHUNK = 1 << 20
RECORD_FILE = "checksums.json"


class ChecksumMismatch(RuntimeError):
    """A downloaded file's sha256 differs from the published or recorded one."""


class IncompleteDownload(RuntimeError):
    """The server closed the transfer before the announced length arrived."""


# how a fetched file was checked (Fetched.check)
PUBLISHED = "published"              # the registry's sha256 / prefix
RECORDED_NOW = "recorded now"        # no published digest: recorded after a complete transfer of known length
MATCHED_RECORD = "matched record"    # the digest recorded at an earlier fetch
UNVERIFIED = "unverified"            # no published or recorded digest, and none recorded now (length unknown)


@dataclass(frozen=True)
class Fetched:
    """A verified cache file: its sha256 and which check it passed (PUBLISHED, RECORDED_NOW, ...)."""

    digest: str
    check: str
    downloaded: bool

    def describe(self) -> str:
        return {PUBLISHED: "matches the published checksum",
                RECORDED_NOW: "no published checksum: digest recorded now, enforced from now on",
                MATCHED_RECORD: "matches the digest recorded at its first fetch",
                UNVERIFIED: "NOT verified: no published checksum, and no digest recorded (the server sent no "
                            "length, so the transfer's completeness is unknown)"}[self.check]


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


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """Append the missing bytes of `url` to `part` (Range request when `part` has some); True when
    the file's full length was announced and that many bytes are there."""
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
    return total is not None


def _complete_length(err: urllib.error.HTTPError, part: Path) -> bool:
    """A 416 answer to our Range request: True when its `Content-Range: bytes */N` says the partial
    file holds exactly the N bytes of the file."""
    value = (err.headers or {}).get("Content-Range", "") if hasattr(err, "headers") else ""
    total = value.rsplit("/", 1)[-1].strip() if "/" in value else ""
    return total.isdigit() and int(total) == part.stat().st_size


def _check_format(path: Path, fmt: str | None, label: str) -> None:
    if fmt is not None:
        check_format(path, fmt, label)


def fetch(url: str, target: str | os.PathLike, expected: Expected = Expected(), *, cache_dir=None,
          timeout: float = 60.0, progress: bool = True, fmt: str | None = None) -> Fetched:
    """Make `target` a verified copy of `url`. An existing target is re-verified instead of fetched
    again. `fmt` (the registry's format: ultralytics | detectron2 | mmdet | torchvision) is checked
    on the file's content too (formats.WrongWeightsFormat; a wrong download leaves nothing). Digests
    of files with no published checksum are recorded in `cache_dir`/checksums.json after a complete
    transfer of known length, and enforced afterwards."""
    target = Path(target)
    cache_dir = Path(cache_dir) if cache_dir is not None else target.parent
    recorded = recorded_digests(cache_dir).get(url)
    must = Expected(expected.sha256 or recorded, expected.sha256_prefix)
    check = PUBLISHED if expected.known else MATCHED_RECORD if recorded else UNVERIFIED
    if target.is_file():
        digest = sha256_of(target)
        must.check(digest, target)
        _check_format(target, fmt, target.name)
        return Fetched(digest, check, downloaded=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    try:
        known_length = _transfer(url, part, timeout, progress)
    except urllib.error.HTTPError as err:
        if err.code != 416:  # 416: the partial file already holds every byte
            raise
        known_length = _complete_length(err, part)
    digest = sha256_of(part)
    try:
        must.check(digest, target)
        _check_format(part, fmt, target.name)
    except Exception:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    if not must.known and known_length:
        _record(cache_dir, url, digest)
        check = RECORDED_NOW
    elif not must.known:
        log.warning("%s: the server sent no length: the transfer's completeness is unknown, so no digest is "
                    "recorded for %s", url, target)
    return Fetched(digest, check, downloaded=True)
