"""One GPU per job (launcher=gpus, harness/jobs/gpus.py) on a CPU machine: the GPU ids are only
strings in CUDA_VISIBLE_DEVICES, so what each job would see is checked without a GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import ROOT

from harness.jobs.gpus import NoGpus, claim, driver_gpu_count, gpu_pool_resolver, visible_gpus


def test_visible_gpus_from_cuda_visible_devices():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_driver_gpus_from_proc_else_dev_nodes(tmp_path):
    """gVisor-style machines have /dev/nvidia<N> but no /proc/driver/nvidia/gpus."""
    proc, dev = tmp_path / "proc_gpus", tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"):
        (dev / name).touch()
    assert driver_gpu_count(proc, dev) == 2  # no /proc listing: the numbered device files
    (proc / "0000:3b:00.0").mkdir(parents=True)
    assert driver_gpu_count(proc, dev) == 1  # the driver's own listing wins where it exists
    assert driver_gpu_count(proc, tmp_path / "none") == 1
    assert driver_gpu_count(tmp_path / "none", tmp_path / "none") == 0


def test_no_gpu_is_an_error_naming_the_override(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(NoGpus, match=r"gpu_pool=\[0,1"):
        gpu_pool_resolver()


def test_claim_prefers_the_job_index_and_never_shares(tmp_path):
    first, fd1 = claim(["3", "5"], tmp_path, preferred=1)
    second, fd2 = claim(["3", "5"], tmp_path, preferred=1)  # 5 is held: the other one
    try:
        assert (first, second) == ("5", "3")
        assert (tmp_path / "gpu5.lock").read_text().strip() == str(os.getpid())
    finally:
        os.close(fd1)
        os.close(fd2)
    again, fd3 = claim(["3", "5"], tmp_path, preferred=0)  # released with its fd (or its process)
    os.close(fd3)
    assert again == "3"


def test_joblib_sweep_gives_each_worker_its_own_gpu(tmp_path):
    """A real joblib multirun with launcher=gpus over 4 jobs: each job sees exactly one GPU of the
    pool (torch.cuda.device_count() == 1 where the machine has GPUs, whose pool is then the real
    ones; else the pool is 2 "GPUs" that exist only as ids in the environment), numbered in PCI bus
    order, and a worker process keeps one GPU for all its jobs."""
    real = driver_gpu_count() > 0
    pool = visible_gpus() if real else ["3", "5"]
    if not pool:
        pytest.skip("CUDA_VISIBLE_DEVICES hides every GPU of this machine")
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "tests" / "gpu_env_app.py"), "-m", "launcher=gpus",
           f"gpu_pool=[{','.join(pool)}]", f"sweep_dir={sweep}", "data.fold=0,1,2,3"]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/fold*/gpu_env.json"))]
    assert len(records) == 4
    by_pid = defaultdict(set)
    for rec in records:
        assert rec["n_jobs"] == len(pool) and rec["device"] == "cuda"
        assert rec["loaded"] == 28  # DataLoader workers (train.workers: 4) start inside the joblib worker
        assert rec["env"] == rec["gpu"] and rec["gpu"] in pool
        assert rec["visible"] == [rec["gpu"]] and rec["order"] == "PCI_BUS_ID"  # exactly one, the driver's id
        assert rec["cuda_devices"] == (1 if real else None)
        by_pid[rec["pid"]].add(rec["gpu"])
    assert all(len(gpus) == 1 for gpus in by_pid.values())  # a worker never changes GPU
    gpus_of_workers = [next(iter(g)) for g in by_pid.values()]
    assert len(gpus_of_workers) == len(set(gpus_of_workers))  # two workers never share one
    assert sorted((sweep / ".gpu-locks").iterdir())
