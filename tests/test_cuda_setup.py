"""The CUDA-ready environment on a CPU machine: setup's mmcv build plan, `cxr-doctor`'s CUDA ops check and
the mmdet adapter's refusal, with a "CUDA" device simulated by patching torch.cuda.is_available (mmcv
here is the real CPU-only build, exactly what a venv built without a GPU holds)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from conftest import ROOT


def load_plan():
    spec = importlib.util.spec_from_file_location("mmcv_build_plan", ROOT / "scripts" / "mmcv_build_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plan = load_plan()


def test_arch_list_adds_ptx_of_the_newest_gpu():
    assert plan.arch_list([(9, 0)]) == "9.0+PTX"
    assert plan.arch_list([(9, 0), (8, 0), (9, 0)]) == "8.0;9.0+PTX"
    assert plan.arch_list([]) == plan.DEFAULT_ARCHS


@pytest.mark.parametrize("force, caps, torch_cuda, home, driver, mode, needle", [
    (None, [(9, 0)], "13.0", "/cuda", 1, "cuda", "9.0+PTX"),  # a GPU: CUDA ops without being asked
    (None, [], "13.0", "/cuda", 2, "cuda", "8.0;9.0+PTX"),  # driver shows GPUs torch cannot see
    (None, [], "13.0", "/cuda", 0, "cpu", "FORCE_CUDA=1 make setup"),  # nvcc only (this machine)
    (None, [], None, None, 0, "cpu", "no GPU, no nvcc"),
    (None, [(8, 6)], "13.0", None, 1, "refuse", "FORCE_CUDA=0 make setup"),  # GPU, no nvcc
    (None, [], None, "/cuda", 1, "refuse", "CPU-only build"),  # GPU, CPU-only torch
    ("0", [(9, 0)], "13.0", "/cuda", 1, "cpu", "CPU only"),
    ("1", [], "13.0", "/cuda", 0, "cuda", "8.0;9.0+PTX"),
])
def test_build_plan(force, caps, torch_cuda, home, driver, mode, needle):
    out = plan.decide(force, caps, torch_cuda, home, driver)
    assert out["MMCV_MODE"] == mode
    assert needle in out["MMCV_REASON"]
    if mode == "cuda":
        assert out["FORCE_CUDA"] == "1" and out["CUDA_HOME"] == home
        assert out["TORCH_CUDA_ARCH_LIST"].endswith("+PTX")


def test_build_plan_reads_the_gpu_torch_sees(monkeypatch):
    monkeypatch.delenv("FORCE_CUDA", raising=False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (9, 0))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(plan, "cuda_home", lambda env: "/opt/cuda")
    out = plan.plan()
    assert (out["MMCV_MODE"], out["TORCH_CUDA_ARCH_LIST"], out["CUDA_HOME"]) == ("cuda", "9.0+PTX", "/opt/cuda")


def test_build_plan_prints_shell_assignments_and_installed_state():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "mmcv_build_plan.py"), "--installed"],
                         capture_output=True, text=True, check=True).stdout
    # the real mmcv of this CPU venv: compiled ops, no CUDA ops
    assert out.strip() == "MMCV_STATE=cpu"
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup_env.sh")]).returncode == 0


def test_tiny_ops_run_with_the_expected_values_on_cpu():
    from adapters.mmcv_cuda import compiled_cuda_version, run_tiny_ops

    assert compiled_cuda_version() is None  # this venv's mmcv is a CPU-only build
    run_tiny_ops("cpu")  # the values the CUDA check expects are right


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch says a GPU is here; mmcv stays the real CPU-only build."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Simulated GPU")


def test_doctor_fails_mmdet_when_mmcv_lacks_cuda_ops(fake_cuda, capsys):
    from adapters.probe import probe_mmdet
    from harness.cli.doctor import report

    probe = probe_mmdet()
    assert not probe.ok
    assert "built without CUDA ops" in probe.verdict and "make setup" in probe.verdict
    assert report() == 1
    assert "[FAIL] mmdet" in capsys.readouterr().out


def test_doctor_mmdet_ok_without_a_gpu():
    from adapters.probe import probe_mmdet

    probe = probe_mmdet()
    assert probe.ok, probe.verdict
    assert "mmcv CUDA ops" not in probe.details


def test_mmdet_adapter_refuses_cuda_without_cuda_ops_before_training(fake_cuda, toy_dataset, tmp_path):
    from adapters.base import TrainSpec
    from adapters.mmdet_frcnn import MMDetFasterRCNN
    from harness.split import make_split

    split = make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path / "split")
    detector = MMDetFasterRCNN(TrainSpec(variant="R18-FPN", device="cuda", epochs=1))
    with pytest.raises(RuntimeError, match=r"train.device=cuda refused: .*built without CUDA ops.*make setup"):
        detector.fit(split, tmp_path / "work")
    assert not any((tmp_path / "work").rglob("*.pth"))  # nothing trained
