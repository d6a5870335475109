"""One GPU per job in a local parallel sweep (`launcher=gpus`, conf/launcher/gpus.yaml).

hydra-joblib-launcher runs the jobs in a pool of loky worker processes, as many as GPUs, and reuses
each worker for several jobs. CUDA fixes the visible devices when a process first touches it, so the
GPU belongs to the worker process, not to the job: the first job a worker runs claims one GPU of
`gpu_pool` (preferring pool[job.num % len(pool)]) by taking an exclusive lock file under the sweep
folder (`.gpu-locks/gpu<id>.lock`, held until the process exits, released by the OS even if it is
killed) and sets CUDA_VISIBLE_DEVICES to it, with CUDA_DEVICE_ORDER=PCI_BUS_ID (ids count the GPUs as
nvidia-smi and the driver do, not in CUDA's fastest-first order); later jobs in that worker keep it.
Two workers never hold the same GPU; a worker that finds every GPU taken waits for its preferred
one. Inside the job `train.device=cuda` is then that GPU (cuda:0 of the one visible device).

Slurm jobs get their GPUs from the scheduler instead (conf/launcher/slurm.yaml: gpus_per_node),
which sets CUDA_VISIBLE_DEVICES itself; nothing here runs then (`gpu_pool` is unset).

Framework-free: GPUs are counted from CUDA_VISIBLE_DEVICES or the NVIDIA driver, never via torch.
"""
from __future__ import annotations

import fcntl
import glob
import logging
import os
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

_claimed: tuple[str, int] | None = None  # (gpu id, fd of its lock file) of this process


class NoGpus(RuntimeError):
    pass


def driver_gpu_count(proc_dir: str | Path = "/proc/driver/nvidia/gpus", dev_dir: str | Path = "/dev") -> int:
    """GPUs the NVIDIA driver shows, without CUDA: one folder per GPU under /proc/driver/nvidia/gpus,
    else (gVisor-style sandboxes have no /proc/driver/nvidia) the /dev/nvidia<N> device files
    (nvidiactl, nvidia-uvm, ... are not GPUs)."""
    return len(glob.glob(f"{proc_dir}/*")) or len(glob.glob(f"{dev_dir}/nvidia[0-9]*"))


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else 0..N-1 for the N GPUs the
    NVIDIA driver shows (`driver_gpu_count`), numbered as nvidia-smi does (PCI bus order)."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    return [str(i) for i in range(driver_gpu_count())]


def gpu_pool_resolver() -> list[str]:
    """`${cxr_gpus:}`: the default gpu_pool of launcher=gpus; an error when there is none."""
    gpus = visible_gpus()
    if not gpus:
        raise NoGpus("launcher=gpus: no GPU found (CUDA_VISIBLE_DEVICES unset and the NVIDIA driver lists "
                     "none); give the GPUs with gpu_pool=[0,1,...] or use launcher=joblib on CPU")
    return gpus


def claim(pool: Sequence[str | int], lock_dir: str | Path, preferred: int = 0) -> tuple[str, int]:
    """Lock one GPU of `pool` for the calling process: pool[preferred % len] if free, else the next
    free one, else wait for the preferred one. Returns (gpu id, lock fd); the fd must stay open."""
    gpus = [str(g) for g in pool]
    if not gpus:
        raise NoGpus("gpu_pool is empty")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = preferred % len(gpus)
    order = gpus[start:] + gpus[:start]
    for gpu in order:
        fd = os.open(lock_dir / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return gpu, fd
    log.warning("all GPUs of %s are held by other workers: waiting for GPU %s", gpus, order[0])
    fd = os.open(lock_dir / f"gpu{order[0]}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return order[0], fd


def assign_gpu(cfg) -> str | None:
    """For a job under launcher=gpus (cfg.gpu_pool set): this process's GPU, claimed on its first
    job, exported as CUDA_VISIBLE_DEVICES. Returns the GPU id, or None when no pool is configured."""
    global _claimed
    pool = cfg.get("gpu_pool") if hasattr(cfg, "get") else None
    if not pool:
        return None
    if _claimed is None:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        num = hydra_cfg.job.get("num") or 0
        lock_dir = Path(hydra_cfg.sweep.dir) / ".gpu-locks"
        _claimed = claim(list(pool), lock_dir, int(num))
        log.info("job %s: worker process %d holds GPU %s (of %s)", num, os.getpid(), _claimed[0], list(pool))
    # the pool's ids are the driver's (nvidia-smi's) numbering: PCI bus order, not CUDA's fastest-first
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = _claimed[0]
    use_standard_processes()
    return _claimed[0]


def use_standard_processes() -> None:
    """Inside a loky worker the default multiprocessing context is loky's, whose Popen cannot start
    the frameworks' DataLoader workers ("'Process' object has no attribute 'env'"); a GPU job needs
    them (train.workers > 0), so the worker goes back to the platform's standard start method."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method("fork" if os.name == "posix" else "spawn", force=True)
