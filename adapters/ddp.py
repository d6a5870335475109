"""Data-parallel training inside one job (`train.gpus=N`, N > 1), through each framework's own machinery.

  * ultralytics: `device="0,1,...,N-1"`: its trainer writes a DDP script and runs it under
    `torch.distributed.run` in subprocesses (NCCL; CUDA only: ultralytics refuses DDP on CPU).
  * detectron2: `detectron2.engine.launch(main, num_gpus_per_machine=N, dist_url=<free_port()>)`: N spawned
    processes (NCCL on GPUs, gloo on a CPU-only machine), DefaultTrainer wraps the model in DDP,
    its sampler shards the data, rank 0 writes the checkpoints.
  * mmengine/mmdet: the Runner with `launcher="pytorch"`, as under `torchrun --nproc_per_node=N`:
    `spawn` below starts N processes with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE,
    MASTER_ADDR/PORT) and joins the process group (NCCL on GPUs, gloo on CPU) before the Runner is
    built, which then wraps the model in MMDistributedDataParallel and shards the data with its
    DefaultSampler; rank 0 writes the checkpoints.

`TrainSpec.batch_size` is the total batch over all processes in every framework (ultralytics and
detectron2 take the total and split it; mmengine's dataloader batch is per process, so the mmdet
adapter gives it batch_size / N). The effective batch, and therefore the recipe's learning rate,
do not change with N: more GPUs train the same recipe faster (no linear lr scaling is applied).
On CPU the same code runs N processes with the gloo backend (how the tests check it).
The rendezvous port (`free_port`) is drawn outside the kernel's ephemeral port range (ultralytics
draws its own the same way).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable


def check_gpus(gpus: int, device: str, framework: str, cpu_ok: bool = True) -> None:
    """Fail before anything trains when `gpus` processes cannot run on `device`."""
    if gpus <= 1:
        return
    if str(device).startswith("cuda"):
        import torch

        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < gpus:
            raise RuntimeError(f"{framework}: train.gpus={gpus} but {have} GPU(s) are visible "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    elif not cpu_ok:
        raise RuntimeError(f"{framework}: train.gpus={gpus} needs train.device=cuda: {framework}'s DDP runs on "
                           "CUDA only (here)")


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_ports(path: str = EPHEMERAL_RANGE_FILE) -> range:
    """The ports the kernel hands out by itself (outgoing connections, bind to port 0)."""
    try:
        low, high = (int(v) for v in Path(path).read_text().split()[:2])
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def rendezvous_candidates(ephemeral: range) -> range:
    """Ports to draw the rendezvous port from: below the ephemeral range (from 10000), else above it."""
    below = range(10000, ephemeral.start)
    return below if len(below) >= 1000 else range(ephemeral.stop, 65536)


def free_port(tries: int = 50) -> int:
    """A TCP port free on localhost now, for the process group's rendezvous, drawn at random outside
    the kernel's ephemeral range. The port is released here and bound again by rank 0 a moment
    later; a port from bind(("", 0)) is an ephemeral one, which the kernel may hand to any outgoing
    connection in between (the rendezvous then fails with EADDRINUSE). Outside that range only a
    process choosing the same port on purpose can take it, and the random draw makes concurrent
    jobs unlikely to collide."""
    import random

    candidates = rendezvous_candidates(ephemeral_ports())
    for port in random.SystemRandom().sample(candidates, min(tries, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # someone listens there
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all taken: an ephemeral one
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(local_rank: int, fn: Callable, nprocs: int, port: int, cuda: bool, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nprocs),
                      LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=local_rank, world_size=nprocs)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], nprocs: int, cuda: bool, args: tuple = ()) -> None:
    """Run `fn(*args)` in `nprocs` fresh processes that form one process group, as torchrun would
    (its environment variables set); raises when any of them fails."""
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(fn, nprocs, free_port(), cuda, args), nprocs=nprocs, join=True,
                       start_method="spawn")


def is_main_process() -> bool:
    """Rank 0, or no process group at all."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
