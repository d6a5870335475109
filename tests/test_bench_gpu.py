"""experiments/bench_gpu.py and experiments/run_bench_gpu.sh on CPU with the --tiny settings: the
bookkeeping (every finished measurement kept as a JSON line, the summary built from those lines and
naming what did not finish, also when the run is stopped in the middle of a framework), the summary's
figures from constructed records, and the NCCL check's CPU answer. YOLO only here: the three frameworks
and the zoo smokes together take minutes on a 2-core machine (`bash experiments/run_bench_gpu.sh --tiny`
with BENCH_INSTALL=0 runs them all). Not a timed test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

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


def run(kind: str, round_: int, ips: float, s_iter: float) -> dict:
    return {"framework": "yolov5", "variant": "yolov5n", "imgsz": 128, "batch": 4, "epochs": 3, "amp": True,
            "kind": kind, "round": round_, "step": f"{kind}{round_}", "iterations": 9, "timed_iterations": 7,
            "images_per_s": ips, "s_per_iter": s_iter, "median_s_per_iter": s_iter, "wall_s": 5.0,
            "peak_gpu_gib": None}


def test_summary_is_built_from_the_records_and_names_what_did_not_finish(tmp_path):
    from bench_gpu import RECORDS, Recorder, pair_steps, smoke_steps, write_summary

    record = Recorder(tmp_path)
    record("plan", frameworks={"yolov5": pair_steps(2), "detectron2_frcnn": pair_steps(2),
                               "mmdet_frcnn": pair_steps(2)},
           coverage={"ultralytics": smoke_steps("ultralytics", True), "nccl": ["nccl"]})
    record("meta", gpu="CPU (x86_64)", torch="2.x", python="3.11", device="cpu", dataset="toy 24 images at 128 px")
    record("run", **run("adapter", 1, 30.0, 0.10), train_images=12)
    record("run", **run("native", 1, 20.0, 0.20))
    record("run", **run("adapter", 2, 34.0, 0.12))
    record("run", **run("native", 2, 24.0, 0.16))
    record("predict", framework="yolov5", step="predict", images=4, images_per_s=50.0, failed=0)
    record("run", **{**run("adapter", 1, 1.0, 2.0), "framework": "detectron2_frcnn", "variant": "R18-FPN"})
    record("note", target="detectron2_frcnn", reason="cut off after its 60 s share of BENCH_TIMEOUT=540 s")
    record("note", target="mmdet_frcnn", reason="skipped, import mmcv.ops failed: ModuleNotFoundError")
    record("smoke", item="ultralytics", step="YOLO11 (yolo11n)", family="YOLO11", arch="yolo11n", passed=True,
           wall_s=3.0)
    record("smoke", item="ultralytics", step="RT-DETR (rtdetr-l)", family="RT-DETR", arch="rtdetr-l", passed=False,
           error="RuntimeError: boom", wall_s=1.0)
    record("nccl", step="nccl", status="not available on CPU", error=None, rehearsal="gloo: passed")
    with open(tmp_path / RECORDS, "a") as f:
        f.write('{"type": "run", "framework": "yol')  # a line cut off by a kill mid-write
    result = write_summary(tmp_path)

    yolo = result["frameworks"]["yolov5"]
    assert yolo["status"] == "finished" and yolo["missing"] == []
    assert yolo["adapter"]["images_per_s"] == 32.0 and yolo["native"]["images_per_s"] == 22.0  # medians
    assert (yolo["adapter"]["images_per_s_min"], yolo["adapter"]["images_per_s_max"]) == (30.0, 34.0)
    assert yolo["ratio_adapter_over_native"] == round(32 / 22, 3) and yolo["train_images"] == 12
    d2 = result["frameworks"]["detectron2_frcnn"]
    assert d2["status"] == "partly finished" and d2["missing"] == ["native1", "adapter2", "native2", "predict"]
    assert d2["adapter"]["runs"] == 1 and d2["native"]["runs"] == 0 and d2["ratio_adapter_over_native"] is None
    assert result["frameworks"]["mmdet_frcnn"]["status"] == "no figures"
    assert result["unreadable_lines"] == 1
    md = (tmp_path / "bench_gpu.md").read_text()
    assert "| yolov5 | finished | yolov5n | 128 | 4 | 32.0 (30.0–34.0) | 22.0 (20.0–24.0) | 1.455 |" in md
    assert "| detectron2_frcnn | partly finished (1+0 runs) | R18-FPN |" in md
    assert "| mmdet_frcnn | no figures: skipped, import mmcv.ops failed" in md
    assert ("- detectron2_frcnn: native1, adapter2, native2, predict (cut off after its 60 s share of "
            "BENCH_TIMEOUT=540 s)") in md
    assert "- mmdet_frcnn: adapter1, native1, adapter2, native2, predict (skipped, import mmcv.ops failed" in md
    assert "| ultralytics | YOLO11 | yolo11n | passed | 3.0 |" in md
    assert "| ultralytics | RT-DETR | rtdetr-l | failed: RuntimeError: boom | 1.0 |" in md
    assert "NCCL (adapters.ddp.spawn, world size 1, the `train.gpus` path): not available on CPU" in md
    assert "1 line(s) of bench_gpu.jsonl could not be read" in md
    assert not any(x.startswith(("yolov5", "ultralytics", "nccl")) for x in result["not_finished"])


def test_nccl_check_on_cpu_says_not_available_and_rehearses_the_spawn(tmp_path):
    from bench_gpu import Recorder, nccl_check, read_records

    nccl_check(SimpleNamespace(device="cpu"), tmp_path, Recorder(tmp_path))
    (line,), _ = read_records(tmp_path)
    assert line["status"] == "not available on CPU"
    # the same adapters.ddp.spawn path ran in a spawned process with gloo: all_reduce and a DDP step
    assert line["rehearsal"] == "adapters.ddp.spawn, world size 1, gloo: passed", line
    assert line["backend"] == "gloo" and line["world_size"] == 1 and line["ddp_step"] is True


@pytest.mark.slow
def test_stopped_mid_framework_keeps_its_finished_runs(tmp_path):
    """The forced cut: run_bench_gpu.sh --tiny (YOLO only, the running Python as is) is stopped with
    SIGTERM - as an outer time limit would - in the middle of YOLO's four runs (it stalls after its first
    one, BENCH_GPU_STALL_AFTER); the finished run is in the records, and the summary, built at exit, has
    it and names the rest as not finished; log.txt holds the last line."""
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_OUT": str(out), "BENCH_INSTALL": "0",
           "PYTHON": sys.executable, "FRAMEWORKS": "yolov5", "COVERAGE": "", "BENCH_TIMEOUT": "1500",
           "BENCH_GPU_STALL_AFTER": "run:yolov5"}
    proc = subprocess.Popen(["bash", str(ROOT / "experiments" / "run_bench_gpu.sh"), "--tiny"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    records = out / "bench_gpu.jsonl"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if records.is_file() and '"type": "run"' in records.read_text():
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGTERM)  # the script and tee; the stalled step is stopped by the script
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, output[-3000:]

    lines = [json.loads(line) for line in records.read_text().splitlines()]
    runs = [r for r in lines if r["type"] == "run"]
    assert [(r["kind"], r["round"]) for r in runs] == [("adapter", 1)]
    assert runs[0]["images_per_s"] > 0 and runs[0]["timed_iterations"] >= 2 and runs[0]["peak_gpu_gib"] is None
    assert runs[0]["median_s_per_iter"] > 0 and runs[0]["train_images"] > 0
    assert runs[0]["window"]["mosaic"] in ("in", "out") or runs[0]["window"]["mosaic"].startswith("partly")
    # checkpoints only after the last iteration: no epoch<N>.pt in the adapter's run, its last.pt written
    assert not list((out / "yolov5").glob("adapter1/train/weights/epoch*.pt"))
    assert (out / "yolov5" / "adapter1" / "train" / "weights" / "last.pt").is_file()
    assert any(r["type"] == "note" and r["target"] == "yolov5" and "stopped (SIGTERM)" in r["reason"] for r in lines)
    result = json.loads((out / "bench_gpu.json").read_text())
    yolo = result["frameworks"]["yolov5"]
    assert yolo["status"] == "partly finished" and yolo["adapter"]["runs"] == 1
    assert yolo["missing"] == ["native1", "adapter2", "native2", "predict"]
    md = (out / "bench_gpu.md").read_text()
    assert "| yolov5 | partly finished (1+0 runs) | yolov5n | 128 | 4 |" in md
    assert "- yolov5: native1, adapter2, native2, predict (cut off: the run was stopped (SIGTERM)" in md
    log_lines = (out / "log.txt").read_text().splitlines()
    assert "stopped by SIGTERM; ended after" in log_lines[-1]  # tee wrote the script's last line
    assert "Did not finish" in "\n".join(log_lines)  # the summary, printed at exit, is in the log
    assert (out / "cache" / "ultralytics").is_dir()  # ultralytics' settings under BENCH_OUT, not $HOME
    assert (out / "env.txt").is_file()

    # a second run into the same folder is refused: nothing is appended to an earlier run's records
    again = subprocess.run(["bash", str(ROOT / "experiments" / "run_bench_gpu.sh"), "--tiny"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already holds a run's records" in again.stderr
    assert records.read_text().count('"type": "plan"') == 1
