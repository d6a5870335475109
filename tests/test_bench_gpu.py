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

    clock = IterClock(ends=[0.0, 10.0, 11.0, 12.0, 13.0], images=[4, 4, 4, 4, 2])
    steady = clock.steady(skip=1)  # iterations 3-5 between t=10 and t=13: 10 images in 3 s
    assert steady["timed_iterations"] == 3 and abs(steady["images_per_s"] - 10 / 3) < 1e-9
    assert IterClock(ends=[1.0], images=[4]).steady(skip=1)["images_per_s"] is None


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
    for run in ("adapter", "native"):
        assert row[run]["timed_iterations"] >= 2 and row[run]["images_per_s"] > 0
        assert row[run]["peak_gpu_gib"] is None  # CPU
    assert row["ratio_adapter_over_native"] > 0 and row["predict"]["images"] == 4
    assert "| yolov5 | yolov5n | 128 | 4 |" in (out / "bench_gpu.md").read_text()
