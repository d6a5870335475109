"""Benchmark: `prepare` DICOM → PNG throughput vs the common single-process notebook recipe.

The reference is what most public VinBigData notebooks run: pydicom.dcmread → apply_voi_lut →
MONOCHROME1 inversion → min-max to uint8 → cv2.resize → cv2.imwrite, one file after another.
cxr-bench's `convert_folders` is timed on the same files in the same process/run, once with one
worker and once with a process pool. Each timed run writes into a fresh folder (nothing skipped).

    .venv/bin/python experiments/bench_prepare.py --preset small --size 256 --workers 2

Prints one JSON object (images/s for each, ratios). Not a test: timings depend on the machine.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from harness.data.prepare import ConvertSettings, convert_folders, find_dicoms  # noqa: E402
from harness.synth import generate  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--raw", type=Path, default=None, help="existing raw folder (default: generate the preset)")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        raw = args.raw or generate(work / "raw", args.preset, seed=args.seed, progress=False)
        files = [p for p, _ in find_dicoms(raw)]
        results = {"files": len(files), "size": args.size, "workers": args.workers, "cpus": os.cpu_count(),
                    "python": platform.python_version(), "preset": None if args.raw else args.preset}
        times = {"reference": [], "cxr_1_worker": [], f"cxr_{args.workers}_workers": []}
        for r in range(args.repeats):
            t = time.perf_counter()
            reference_recipe(files, work / f"ref{r}", args.size)
            times["reference"].append(time.perf_counter() - t)
            for key, workers in (("cxr_1_worker", 1), (f"cxr_{args.workers}_workers", args.workers)):
                t = time.perf_counter()
                s = convert_folders(raw, work / f"{key}{r}", ConvertSettings(size=args.size), workers=workers,
                                    progress=False)
                times[key].append(time.perf_counter() - t)
                assert s.converted == len(files) and s.failed == 0
            t = time.perf_counter()  # resumed rerun: everything already converted
            s = convert_folders(raw, work / f"cxr_1_worker{r}", ConvertSettings(size=args.size), workers=1, progress=False)
            times.setdefault("cxr_rerun_skip", []).append(time.perf_counter() - t)
            assert s.skipped == len(files)
        for key, ts in times.items():
            results[f"{key}_img_per_s"] = round(len(files) / min(ts), 2)
        ref = results["reference_img_per_s"]
        results["ratio_1_worker"] = round(results["cxr_1_worker_img_per_s"] / ref, 2)
        results[f"ratio_{args.workers}_workers"] = round(results[f"cxr_{args.workers}_workers_img_per_s"] / ref, 2)
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
