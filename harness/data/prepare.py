"""DICOM folders → PNG folder + manifest, in parallel, resumable, atomic, failures reported per file.

PNG inputs (NIH ChestX-ray14) take the same pool, resume and manifest path through
`convert_files`, with `png_input.convert_png` instead of the DICOM stage.

`convert_dicom` turns one file into one PNG and one manifest row and never raises: a bad file becomes
a row with status "failed" and its reason. `convert_folders` runs it over `raw/train` and `raw/test`
with a process pool and a progress bar; a rerun reuses every PNG whose sidecar says it was made with
the same settings (including `exact` and the PNG compression level). The pixels come from
`harness.data.render` (the fast look-up-table path unless `exact`); the manifest's `pixel_path`
column says which path produced each PNG.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from harness import atomic
from harness.data import dicom, manifest, png_input, render

log = logging.getLogger(__name__)
DICOM_SUFFIXES = (".dicom", ".dcm")
PNG_STRATEGIES = {"huffman": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY, "rle": cv2.IMWRITE_PNG_STRATEGY_RLE,
                  "default": cv2.IMWRITE_PNG_STRATEGY_DEFAULT}


def size_folder(size: int | str, square: bool = False, bits: int = 8) -> str:
    """images/<name>: "1024", "512", "orig"; "-sq" when stretched to a square; "-16bit" for 16-bit."""
    name = str(size)
    if square:
        name += "-sq"
    if bits == 16:
        name += "-16bit"
    return name


@dataclass(frozen=True)
class ConvertSettings:
    size: int | str = 1024
    square: bool = False
    bits: int = 8
    voi: bool = True
    exact: bool = False  # True: the float pipeline on the full image (reference); False: the fast path
    # PNG: zlib level 0-9 and strategy, with the "average" row filter. With the "rle" or "huffman"
    # strategy zlib ignores the level (1-9 give the same file; 0 stores uncompressed); "default" is
    # zlib's LZ77 search, where the level matters. On radiographs (smooth, noisy) rle is smaller than
    # level 9 at ~17x its speed; huffman is ~10% faster still and ~4% larger (docs/benchmarks.md)
    png_compression: int = 1
    png_strategy: str = "rle"

    def params(self) -> dict:
        return {"size": str(self.size), "square": self.square, "bits": self.bits, "voi": self.voi,
                "exact": self.exact, "png_compression": self.png_compression, "png_strategy": self.png_strategy}

    def png_params(self) -> list[int]:
        if not 0 <= int(self.png_compression) <= 9:
            raise ValueError(f"png_compression must be 0..9, got {self.png_compression}")
        if self.png_strategy not in PNG_STRATEGIES:
            raise ValueError(f"png_strategy must be one of {sorted(PNG_STRATEGIES)}, got {self.png_strategy!r}")
        # the strategy after the level: cv2 resets the strategy when it reads a compression level
        return [cv2.IMWRITE_PNG_COMPRESSION, int(self.png_compression), cv2.IMWRITE_PNG_STRATEGY,
                PNG_STRATEGIES[self.png_strategy], cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_AVG]


@dataclass
class ConvertSummary:
    manifest: Path
    image_dir: Path
    converted: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    reconverted: list[tuple[str, str]] = field(default_factory=list)  # (image id, why its PNG was not reused)


def convert_dicom(src: Path, dst: Path, split: str, settings: ConvertSettings, out_root: Path,
                  source: dict | None = None) -> dict:
    """Convert one DICOM to `dst` (PNG) atomically; return its manifest row (never raises). `source`
    (manifest.source_identity, taken before reading) goes into the sidecar."""
    row = manifest.empty_row(src.stem, split)
    try:
        img = render.render(src, settings.size, settings.square, settings.bits, settings.voi, settings.exact)
        h, w = img.orig_height, img.orig_width
        out_h, out_w = img.pixels.shape
        with atomic.atomic_path(dst) as tmp:
            if not cv2.imwrite(str(tmp), img.pixels, settings.png_params()):
                raise dicom.DicomError("write failed", f"cv2.imwrite could not write {tmp}")
        row.update(orig_height=h, orig_width=w, height=out_h, width=out_w, scale_x=out_w / w,
                   scale_y=out_h / h, photometric=img.photometric, bits_stored=img.bits_stored,
                   transfer_syntax=img.transfer_syntax, status="ok", reason="",
                   png=dst.relative_to(out_root).as_posix(), pixel_path=img.method)
        manifest.write_sidecar(dst, row, settings.params(), source)
    except dicom.DicomError as err:
        row["reason"] = str(err)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
        row["reason"] = f"unexpected error: {type(err).__name__}: {err} ({src})"
    if row["status"] != "ok":
        _fill_header(row, src)
    return row


def _fill_header(row: dict, src: Path) -> None:
    """Best effort: a failed file's header facts still help the user (size, syntax)."""
    try:
        head = dicom.read_header(src)
    except dicom.DicomError:
        return
    row.update(orig_height=head.rows, orig_width=head.columns, photometric=head.photometric,
               bits_stored=head.bits_stored, transfer_syntax=head.transfer_syntax)


def _convert_task(task: tuple) -> tuple[dict, str]:
    """(manifest row, "" when its PNG was reused, else why it was converted: "new", "other settings",
    "source changed (size a -> b, ...)"). A PNG is reused only when made with the same settings from
    the same source file (path, size, mtime)."""
    src, dst, split, settings, out_root = task
    try:
        source = manifest.source_identity(src)
    except OSError:
        source = None  # vanished: the conversion reports it
    cached, why = manifest.sidecar_state(dst, settings.params(), source or {"path": str(src)})
    if cached is not None:
        return cached, ""
    convert = png_input.convert_png if Path(src).suffix.lower() in png_input.PNG_SUFFIXES else convert_dicom
    return convert(src, dst, split, settings, out_root, source), why


def _pool_context():
    """forkserver, not fork: a child forked from this (threaded) process inherits OpenCV's and BLAS'
    thread-pool locks in whatever state the parent's threads left them, and can hang forever in its
    first cv2 call (seen under load). The fork server is a clean single-threaded process that imports
    this module and loads the compiled kernels once (`prepare_server`), so its workers start warm in
    milliseconds (spawn would re-import cv2/numpy/pydicom and reload the kernels in every worker)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["harness.data.prepare_server"])
    return context


def _worker_init() -> None:
    """One OpenCV thread per pool process: the pool already uses every core it is given."""
    cv2.setNumThreads(1)


def find_dicoms(raw_dir: Path) -> list[tuple[Path, str]]:
    """(path, split) for raw/train/* and raw/test/* DICOM files, sorted."""
    found = []
    for split in ("train", "test"):
        folder = Path(raw_dir) / split
        if folder.is_dir():
            found += [(p, split) for p in sorted(folder.iterdir())
                      if p.is_file() and p.suffix.lower() in DICOM_SUFFIXES]
    return found


def convert_folders(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, settings: ConvertSettings = ConvertSettings(),
                    workers: int | None = None, progress: bool = True) -> ConvertSummary:
    """Convert raw/{train,test}/*.dicom into out/images/<size>/ and write out/manifest.csv.

    `workers`: processes (None → min(cpu count, 8); 0 or 1 → in this process). The workers start
    from a fork server, which (as with spawn) imports the calling script's main module: a script
    that calls this with workers > 1 needs the `if __name__ == "__main__":` guard.
    """
    raw_dir = Path(raw_dir)
    files = find_dicoms(raw_dir)
    if not files:
        raise FileNotFoundError(f"no DICOM files under {raw_dir}/train or {raw_dir}/test")
    return convert_files(files, out_dir, settings, workers, progress, where=raw_dir)


def convert_files(files: list[tuple[Path, str]], out_dir: str | os.PathLike, settings: ConvertSettings = ConvertSettings(),
                  workers: int | None = None, progress: bool = True, where: str | os.PathLike = "") -> ConvertSummary:
    """Convert (path, split) files — DICOMs, or PNGs by their suffix — into out/images/<size>/ and write
    out/manifest.csv; see convert_folders. `where` names the input folder in errors."""
    out_dir = Path(out_dir)
    ids = [p.stem for p, _ in files]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate image ids under {where}: {dup}")
    image_dir = out_dir / "images" / size_folder(settings.size, settings.square, settings.bits)
    tasks = [(p, image_dir / f"{p.stem}.png", split, settings, out_dir) for p, split in files]
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    summary = ConvertSummary(out_dir / "manifest.csv", image_dir)
    rows = []
    bar = tqdm(total=len(tasks), desc="prepare: → PNG", unit="img", disable=not progress)
    if workers <= 1:
        results = map(_convert_task, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, mp_context=_pool_context())
        # one file per task: a chest X-ray takes 20-700 ms, far above the ~0.1 ms a task costs to send,
        # and single files keep the workers evenly busy to the end (a chunk of slow JPEG 2000 files
        # left one worker running alone)
        results = pool.map(_convert_task, tasks)
    try:
        for row, why in results:
            rows.append(row)
            if row["status"] != "ok":
                summary.failed += 1
                summary.failures.append((row["image_id"], row["reason"]))
                log.warning("prepare: %s failed: %s", row["image_id"], row["reason"])
            elif not why:
                summary.skipped += 1
            else:
                summary.converted += 1
            if why and why != "new":
                summary.reconverted.append((row["image_id"], why))
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    manifest.write_manifest(rows, summary.manifest)
    if summary.reconverted:
        reasons: dict[str, int] = {}
        for _, why in summary.reconverted:
            kind = why.split(" (")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        first_id, first_why = summary.reconverted[0]
        log.warning("prepare: %d image(s) converted again instead of reusing their PNG: %s (e.g. %s: %s)",
                    len(summary.reconverted), ", ".join(f"{n} {kind}" for kind, n in sorted(reasons.items())),
                    first_id, first_why)
    if summary.failed:
        log.warning("prepare: %d of %d images failed (reasons in %s)", summary.failed, len(rows), summary.manifest)
    return summary
