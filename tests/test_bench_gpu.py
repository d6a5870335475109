"""experiments/bench_gpu.py end to end on CPU with its --tiny settings (YOLO only here: the three
frameworks together take minutes on a 2-core machine; `python experiments/bench_gpu.py --tiny` runs
them all). Not a timed test: it checks the script measures and writes what it promises."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))


def test_iter_clock_skips_warmup():
    from bench_gpu import IterClock

    clock = IterClock(ends=[0.0, 10.0, 11.0, 12.0, 15.0], images=[4, 4, 4, 4, 2])
    steady = clock.steady(skip=1)  # iterations 3-5 between t=10 and t=15: 10 images in 5 s
    assert steady["timed_iterations"] == 3 and abs(steady["images_per_s"] - 10 / 5) < 1e-9
    assert steady["median_s_per_iter"] == 1.0  # steps 1, 1, 3 s: the slow one (an epoch boundary) does not move it
    assert IterClock(ends=[1.0], images=[4]).steady(skip=1)["images_per_s"] is None


def test_yolo_window_states_mosaic_and_warmup():
    from bench_gpu import yolo_window

    # 9 epochs < close_mosaic 10: ultralytics closes mosaic from the first epoch; warm-up 3 epochs
    closed = yolo_window({"close_mosaic": 10, "warmup_epochs": 3.0}, epochs=9, batches_per_epoch=12, skip=20)
    assert closed["mosaic"] == "out" and closed["timed_iterations"] == 108 - 21
    assert closed["warmup_timed_iterations"] == 37 - 21 and closed["warmup"].startswith("partly in")
    later = yolo_window({"close_mosaic": 2, "warmup_epochs": 0}, epochs=10, batches_per_epoch=10, skip=5)
    assert later["mosaic_timed_iterations"] == 80 - 6 and later["warmup"] == "out"


def test_bench_gpu_tiny_on_cpu(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_gpu.py"), "--tiny", "--frameworks",
                           "yolov5", "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "bench_gpu.json").read_text())
    row = result["frameworks"]["yolov5"]
    assert "error" not in row, row
    assert [(r["kind"], r["round"]) for r in row["runs"]] == [("adapter", 1), ("native", 1), ("adapter", 2),
                                                               ("native", 2)]  # A-B-A-B
    for run in ("adapter", "native"):
        assert row[run]["runs"] == 2 and row[run]["timed_iterations"] >= 2 and row[run]["images_per_s"] > 0
        assert row[run]["images_per_s_min"] <= row[run]["images_per_s"] <= row[run]["images_per_s_max"]
        assert row[run]["median_s_per_iter"] > 0
        assert row[run]["peak_gpu_gib"] is None  # CPU
    assert row["ratio_adapter_over_native"] > 0 and row["ratio_s_per_iter_adapter_over_native"] > 0
    assert row["predict"]["images"] == 4 and row["predict"]["images_per_s"] > 0 and row["predict"]["failed"] == 0
    assert row["window"]["mosaic"] in ("in", "out") or row["window"]["mosaic"].startswith("partly")
    # checkpoints only after the last iteration: no epoch<N>.pt in the adapter's runs
    assert not list((out / "yolov5").glob("adapter*/train/weights/epoch*.pt"))
    assert (out / "yolov5" / "adapter1" / "train" / "weights" / "last.pt").is_file()
    md = (out / "bench_gpu.md").read_text()
    assert "| yolov5 | yolov5n | 128 | 4 |" in md and "yolov5: mosaic" in md

    # a framework that gave no figures is recorded beside the others (experiments/run_bench_gpu.sh)
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_gpu.py"), "--frameworks", "", "--append",
                           "--record-error", "mmdet_frcnn=skipped, import mmcv.ops failed", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = json.loads((out / "bench_gpu.json").read_text())
    assert set(merged["frameworks"]) == {"yolov5", "mmdet_frcnn"} and merged["gpu"] == result["gpu"]
    assert "| mmdet_frcnn | failed: skipped, import mmcv.ops failed |" in (out / "bench_gpu.md").read_text()
