"""Benchmark: `prepare` DICOM → PNG throughput vs the common single-process notebook recipe.

The reference is what most public VinBigData notebooks run: pydicom.dcmread → apply_voi_lut →
MONOCHROME1 inversion → min-max to uint8 → cv2.resize → cv2.imwrite, one file after another.
cxr-bench's `convert_folders` is timed on the same files in the same run: the fast path (default)
with one worker and with a process pool, and the exact path (`exact=True`) with one worker. Each
timed run writes into a fresh folder (nothing skipped); the best of `--repeats` is kept.

The file set: the synthetic `realsize` preset (2000-3000 px, 12-16 bits, ~80 % uncompressed, ~10 %
JPEG 2000, ~10 % RLE; generated once into `--cache`) plus pydicom-data's real grayscale radiographs
and MR/CT files (RG1, RG3, MR2, 693 in their transfer syntaxes) unless `--no-real`.

    .venv/bin/python experiments/bench_prepare.py --size 1024 --workers 2 --cache /tmp/cxr_realsize

"Per core": OpenCV runs single-threaded in every timed path (the pool's workers do that anyway),
so the 1-worker figures use one core each. Then, file by file in one process, the recipe's and
the fast path's time per group of files (synthetic / pydicom-data, by transfer syntax), to show
where the ratio comes from, with the fast path's decode step timed alone (`ratio_ceiling_decode_only`:
the ratio were everything else free), and the full-resolution JPEG 2000 files' decode time through each
installed OpenJPEG wrapper. Also prints PNG sizes and encode times for a few
compression settings on the fast path's outputs. Prints one JSON object. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from harness.data import manifest  # noqa: E402
from harness.data.prepare import ConvertSettings, convert_folders, find_dicoms  # noqa: E402
from harness.synth import generate  # noqa: E402

REPLICA = "_x"  # marks the extra names of a replicated file (`--replicate`)
REAL = [f"{s}_{t}" for s in ("RG1", "RG3", "MR2") for t in ("UNCR", "UNCI", "J2KR", "J2KI")] + \
       ["693_UNCR", "693_UNCI", "693_J2KR"]


def reference_recipe(files: list[Path], out_dir: Path, size: int) -> None:
    """The usual notebook loop (kept deliberately plain)."""
    import pydicom
    from pydicom.pixels import apply_voi_lut

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        ds = pydicom.dcmread(path)
        data = apply_voi_lut(ds.pixel_array, ds)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            data = np.amax(data) - data
        data = data - np.min(data)
        data = data / np.max(data)
        data = (data * 255).astype(np.uint8)
        h, w = data.shape
        scale = size / max(h, w)
        data = cv2.resize(data, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out_dir / f"{path.stem}.png"), data)


def build_raw(work: Path, synthetic: Path | None, real: bool, replicate: int = 1) -> Path:
    """raw/train with links to the synthetic files and copies of the real pydicom-data files; with
    `replicate` n > 1, n - 1 more links to each under other names (a longer run on the same mix)."""
    raw = work / "raw"
    (raw / "train").mkdir(parents=True)
    if synthetic is not None:
        for path, _ in find_dicoms(synthetic):
            (raw / "train" / path.name).symlink_to(path.resolve())
    if real:
        from pydicom.data import get_testdata_file

        for name in REAL:
            shutil.copy(get_testdata_file(f"{name}.dcm"), raw / "train" / f"{name}.dicom")
    originals = sorted((raw / "train").iterdir())
    for copy in range(1, replicate):
        for path in originals:
            (raw / "train" / f"{path.stem}{REPLICA}{copy}{path.suffix}").symlink_to(path.resolve())
    return raw


def per_file_groups(files: list[Path], work: Path, size: int, repeats: int) -> dict:
    """One process, file by file: the recipe's and the fast path's seconds per file (best of
    `repeats`), summed per group of files (where the data comes from; its transfer syntax)."""
    from harness.data import dicom, render
    from harness.data.prepare import convert_dicom

    settings, out = ConvertSettings(size=size), work / "per_file"
    groups: dict[str, dict] = {}
    for path in files:
        if REPLICA in path.stem:  # a replicate: same file, same times
            continue
        ref = fast = decode = float("inf")
        for r in range(repeats):
            t = time.perf_counter()
            reference_recipe([path], out / f"ref{r}", size)
            ref = min(ref, time.perf_counter() - t)
            t = time.perf_counter()
            row = convert_dicom(path, out / f"fast{r}" / f"{path.stem}.png", "train", settings, out)
            fast = min(fast, time.perf_counter() - t)
            assert row["status"] == "ok", row
            ds = dicom.open_dicom(path, mapped=True)
            t = time.perf_counter()
            render._decode_fast(ds, path, size, False)  # the fast path's decode step alone
            decode = min(decode, time.perf_counter() - t)
        source = "pydicom-data" if path.stem in REAL else "synthetic"
        syntax = dicom.read_header(path).transfer_syntax
        for key in (source, f"{source}: {syntax}", "all"):
            g = groups.setdefault(key, {"files": 0, "reference_s": 0.0, "fast_s": 0.0, "fast_decode_s": 0.0})
            g["files"] += 1
            g["reference_s"] += ref
            g["fast_s"] += fast
            g["fast_decode_s"] += decode
    for g in groups.values():
        g["ratio"] = round(g["reference_s"] / g["fast_s"], 2)
        # the ratio if everything but decoding the pixel data took no time (compressed data: the
        # codec's own time, the same library the recipe calls, unless decoded at reduced resolution)
        g["ratio_ceiling_decode_only"] = round(g["reference_s"] / g["fast_decode_s"], 2)
        for key in ("reference_s", "fast_s", "fast_decode_s"):
            g[key] = round(g[key], 3)
    return dict(sorted(groups.items()))


def j2k_decoders(files: list[Path], repeats: int) -> dict:
    """Seconds to decode the JPEG 2000 files of `files` at full resolution (summed, best of `repeats`)
    through each JPEG 2000 decoder installed: Pillow, pylibjpeg-openjpeg and, if present, imagecodecs
    (not a dependency; single-threaded). All three wrap OpenJPEG: whether another wrapper is faster."""
    import io

    from PIL import Image
    from pydicom.encaps import generate_frames

    from harness.data import dicom

    def pillow(frame: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(frame)) as im:
            return np.asarray(im)

    decoders = {"Pillow": pillow}
    try:
        import openjpeg

        decoders["pylibjpeg-openjpeg"] = openjpeg.decode
    except ImportError:
        pass
    try:
        import imagecodecs

        decoders["imagecodecs"] = lambda frame: imagecodecs.jpeg2k_decode(frame, numthreads=1)
    except ImportError:
        pass
    frames = []
    for path in files:
        if REPLICA not in path.stem and "JPEG 2000" in dicom.read_header(path).transfer_syntax:
            frames.append(next(generate_frames(dicom.open_dicom(path).PixelData, number_of_frames=1)))
    table = {"files": len(frames)}
    for name, decode in decoders.items():
        total = 0.0
        for frame in frames:
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                decode(frame)
                best = min(best, time.perf_counter() - t)
            total += best
        table[f"{name}_s"] = round(total, 3)
    return table


def png_table(pngs: list[Path]) -> dict:
    """Total bytes and encode seconds of the same images under a few cv2 PNG settings."""
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in pngs]
    settings = {"cv2 default": [], "level 1": [cv2.IMWRITE_PNG_COMPRESSION, 1],
                "level 3": [cv2.IMWRITE_PNG_COMPRESSION, 3], "level 9": [cv2.IMWRITE_PNG_COMPRESSION, 9],
                "Z_RLE + avg filter (chosen)": ConvertSettings().png_params(),
                "Huffman-only + avg filter": ConvertSettings(png_strategy="huffman").png_params(),
                "level 9 + avg filter": ConvertSettings(png_compression=9, png_strategy="default").png_params()}
    table = {}
    for name, params in settings.items():
        t, size = time.perf_counter(), 0
        for img in images:
            ok, buf = cv2.imencode(".png", img, params)
            size += len(buf)
        table[name] = {"MB": round(size / 1e6, 2), "s": round(time.perf_counter() - t, 2)}
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="realsize", help="synthetic preset ('none': real files only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="folder for the generated preset (reused)")
    ap.add_argument("--no-real", action="store_true", help="leave out pydicom-data's real files")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--replicate", type=int, default=1,
                    help="use every file this many times (under other names): the pool's steady state")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        synthetic = None
        if args.preset != "none":
            synthetic = generate(args.cache or work / "synth", args.preset, seed=args.seed, progress=False)
        raw = build_raw(work, synthetic, not args.no_real, args.replicate)
        files = [p for p, _ in find_dicoms(raw)]
        results = {"files": len(files), "replicate": args.replicate, "MB": round(sum(p.stat().st_size for p in files) / 1e6),
                   "size": args.size, "workers": args.workers, "cpus": os.cpu_count(),
                   "python": platform.python_version(), "preset": args.preset, "real_files": not args.no_real,
                   "load_before": os.getloadavg()}
        runs = {"cxr_fast_1_worker": (1, False), f"cxr_fast_{args.workers}_workers": (args.workers, False),
                "cxr_exact_1_worker": (1, True)}
        times = {key: [] for key in ["reference", *runs]}
        for r in range(args.repeats):
            t = time.perf_counter()
            reference_recipe(files, work / f"ref{r}", args.size)
            times["reference"].append(time.perf_counter() - t)
            for key, (workers, exact) in runs.items():
                t = time.perf_counter()
                s = convert_folders(raw, work / f"{key}{r}", ConvertSettings(size=args.size, exact=exact),
                                    workers=workers, progress=False)
                times[key].append(time.perf_counter() - t)
                assert s.converted == len(files) and s.failed == 0, s.failures
        t = time.perf_counter()  # resumed rerun: everything already converted
        s = convert_folders(raw, work / "cxr_fast_1_worker0", ConvertSettings(size=args.size), workers=1, progress=False)
        times["cxr_rerun_skip"] = [time.perf_counter() - t]
        assert s.skipped == len(files)
        results["load_after"] = os.getloadavg()
        for key, ts in times.items():
            results[f"{key}_img_per_s"] = round(len(files) / min(ts), 2)
        ref = results["reference_img_per_s"]
        for key in runs:
            results[f"ratio_{key}"] = round(results[f"{key}_img_per_s"] / ref, 2)
        results["scaling_1_to_n_workers"] = round(results[f"cxr_fast_{args.workers}_workers_img_per_s"]
                                                  / results["cxr_fast_1_worker_img_per_s"], 2)
        rows = manifest.read_manifest(work / "cxr_fast_1_worker0" / "manifest.csv")
        results["fast_pixel_paths"] = dict(Counter(rows["pixel_path"]))
        results["png_MB"] = {"reference": round(sum(p.stat().st_size for p in (work / "ref0").glob("*.png")) / 1e6, 2),
                             "cxr_fast": round(sum(p.stat().st_size for p in s.image_dir.glob("*.png")) / 1e6, 2)}
        results["per_file_1_process"] = per_file_groups(files, work, args.size, args.repeats)
        results["j2k_full_decode_by_wrapper"] = j2k_decoders(files, args.repeats)
        results["png_settings_first_12"] = png_table(sorted(s.image_dir.glob("*.png"))[:12])
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
