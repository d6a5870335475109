"""How scripts/setup_env.sh builds mmcv's ops on this machine: CPU ops only, or CUDA ops too.

Run with the venv's python (torch installed). Prints shell assignments that setup_env.sh evals:

    python scripts/mmcv_build_plan.py             # the build plan:
        MMCV_MODE=cpu|cuda|refuse  MMCV_REASON=...  (cuda: FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST, CUDA_HOME, CPATH)
    python scripts/mmcv_build_plan.py --installed # the installed mmcv: MMCV_STATE=none|cpu|cuda|cuda-broken

The decision (FORCE_CUDA=1 / FORCE_CUDA=0 in the environment always win):
  * a GPU is here (torch sees one, or the NVIDIA driver lists one) -> CUDA ops, compiled for the
    GPUs' architectures plus PTX of the newest (TORCH_CUDA_ARCH_LIST, e.g. "9.0+PTX"), through the
    C++20 wrapper for nvcc; refused (with the fixing command) when nvcc or a CUDA build of torch is
    missing, because a CPU-only mmcv would fail every mmdet job on that GPU;
  * nvcc but no GPU (a build host, or this project's CPU test machine, which has a CUDA toolkit):
    CPU ops as before, with a hint - a CUDA build is an hour on a small CPU machine and nothing there
    could run it. FORCE_CUDA=1 builds them anyway (for TORCH_CUDA_ARCH_LIST, default 8.0;9.0+PTX);
  * neither: CPU ops.
"""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHS = "8.0;9.0+PTX"  # A100/H100 class, plus PTX for newer GPUs


def arch_list(capabilities: list[tuple[int, int]]) -> str:
    """TORCH_CUDA_ARCH_LIST for these compute capabilities: each once, oldest first, PTX of the newest
    (so a GPU newer than all of them still gets a kernel by JIT instead of "no kernel image")."""
    archs = sorted({(int(major), int(minor)) for major, minor in capabilities})
    if not archs:
        return DEFAULT_ARCHS
    return ";".join(f"{major}.{minor}" for major, minor in archs) + "+PTX"


def cuda_home(env: dict[str, str]) -> str | None:
    """The CUDA toolkit holding nvcc: $CUDA_HOME, /usr/local/cuda, or the one `nvcc` on PATH runs."""
    candidates = [env.get("CUDA_HOME"), env.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for home in candidates:
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return home
    return None


def driver_gpus() -> int:
    """GPUs the NVIDIA driver shows (without torch): /proc/driver/nvidia/gpus or /dev/nvidiaN."""
    return len(glob.glob("/proc/driver/nvidia/gpus/*")) or len(glob.glob("/dev/nvidia[0-9]*"))


def decide(force: str | None, capabilities: list[tuple[int, int]], torch_cuda: str | None, home: str | None,
           driver: int = 0, arch_env: str | None = None) -> dict[str, str]:
    """The plan as shell variables. `capabilities`: compute capabilities of the GPUs torch sees;
    `torch_cuda`: torch.version.cuda (None: CPU-only torch); `home`: the CUDA toolkit, if any;
    `driver`: GPUs the driver shows; `arch_env`: TORCH_CUDA_ARCH_LIST already set by the user."""
    gpu = bool(capabilities) or driver > 0
    fix = "install the CUDA toolkit matching torch (nvcc), set CUDA_HOME, and rerun `make setup`"
    if force == "0":
        note = " (a GPU is here: mmdet will train on CPU only)" if gpu else ""
        return {"MMCV_MODE": "cpu", "MMCV_REASON": f"FORCE_CUDA=0: CPU ops only{note}"}
    if force == "1" or gpu:
        why = "FORCE_CUDA=1" if force == "1" else f"{max(len(capabilities), driver)} GPU(s) here"
        if torch_cuda is None:
            return {"MMCV_MODE": "refuse", "MMCV_REASON": f"{why}, but torch is a CPU-only build: install a "
                    "CUDA build of torch (requirements/base.txt's pin from the CUDA index) and rerun `make setup`, "
                    "or `FORCE_CUDA=0 make setup` for CPU-only mmcv ops"}
        if home is None:
            return {"MMCV_MODE": "refuse", "MMCV_REASON": f"{why}, but no nvcc (CUDA {torch_cuda} toolkit) was "
                    f"found to build mmcv's CUDA ops: {fix}; or `FORCE_CUDA=0 make setup` for CPU-only mmcv ops"}
        archs = arch_env or arch_list(capabilities)
        return {"MMCV_MODE": "cuda", "MMCV_REASON": f"{why}: CUDA ops for {archs} (CUDA_HOME={home})",
                "FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": archs, "CUDA_HOME": home}
    if home is not None:
        return {"MMCV_MODE": "cpu", "MMCV_REASON": f"no GPU here (nvcc found in {home}): CPU ops; "
                "`FORCE_CUDA=1 make setup` builds CUDA ops too (TORCH_CUDA_ARCH_LIST, default "
                f"{DEFAULT_ARCHS})"}
    return {"MMCV_MODE": "cpu", "MMCV_REASON": "no GPU, no nvcc: CPU ops"}


def nvidia_include_dirs() -> list[str]:
    """CUDA headers shipped in torch's nvidia-* wheels (cu13 layout: site-packages/nvidia/cu13/include),
    which nvcc needs on CPATH to build against a pip-installed torch."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    return sorted(str(p) for p in site.glob("nvidia/cu[0-9]*/include") if p.is_dir())


def plan() -> dict[str, str]:
    try:
        import torch

        caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
        torch_cuda = torch.version.cuda
    except Exception:  # noqa: BLE001 - no usable torch: decide from the driver and nvcc alone
        caps, torch_cuda = [], None
    out = decide(os.environ.get("FORCE_CUDA"), caps, torch_cuda, cuda_home(dict(os.environ)), driver_gpus(),
                 os.environ.get("TORCH_CUDA_ARCH_LIST"))
    if out["MMCV_MODE"] == "cuda":
        extra = nvidia_include_dirs()
        if extra:
            out["CPATH"] = ":".join([*extra, *filter(None, [os.environ.get("CPATH")])])
    return out


def installed_state() -> str:
    """none (no compiled ops) | cpu (CPU-only build) | cuda (CUDA ops that run here, or no GPU to try
    them on) | cuda-broken (CUDA ops that fail on this machine's GPU, e.g. built for another arch)."""
    sys.path.insert(0, str(ROOT))
    from adapters.mmcv_cuda import compiled_cuda_version, cuda_ops_problem

    try:
        built = compiled_cuda_version()
    except Exception:  # noqa: BLE001
        return "none"
    if built is None:
        return "cpu"
    import torch

    if torch.cuda.is_available() and cuda_ops_problem("cuda"):
        return "cuda-broken"
    return "cuda"


def main(argv: list[str]) -> None:
    values = {"MMCV_STATE": installed_state()} if "--installed" in argv else plan()
    for key, value in values.items():
        print(f"{key}={shlex.quote(value)}")


if __name__ == "__main__":
    main(sys.argv[1:])
