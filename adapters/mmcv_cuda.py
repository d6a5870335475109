"""Do mmcv's compiled ops (the RoIAlign and NMS kernels mmdet's Faster R-CNN needs) run on CUDA here?

mmcv built without `FORCE_CUDA=1` imports fine and runs on CPU, but every mmdet job on a GPU then
fails at its first RoIAlign/NMS; one built for another GPU architecture without PTX fails with
"no kernel image is available". `cuda_ops_problem(device)` finds both before anything trains: it
reads which CUDA version mmcv was compiled against ("not available" for a CPU-only build), then runs
a tiny `mmcv.ops.nms` and `RoIAlign` on the device and checks their values. Used by `cxr-doctor`,
by the mmdet adapter (which refuses `train.device=cuda` when it fails) and by scripts/setup_env.sh
(which rebuilds mmcv when it fails on a CUDA machine). Nothing here imports a framework at import time.
"""
from __future__ import annotations

import functools
import os

FIX = ("rebuild mmcv with CUDA ops on this machine: `make setup` (it detects the GPU and builds "
       "them for its architecture; or `FORCE_CUDA=1 CUDA_HOME=/usr/local/cuda make setup`)")


def compiled_cuda_version() -> str | None:
    """The CUDA version mmcv's ops were compiled against, or None for a CPU-only build.
    Raises ImportError when mmcv has no compiled ops at all (mmcv-lite)."""
    from mmcv.ops import get_compiling_cuda_version

    version = str(get_compiling_cuda_version()).strip()
    return None if version in ("", "not available") else version


def run_tiny_ops(device: str) -> None:
    """nms and RoIAlign on `device`, on inputs whose answer is known; raises when they fail or err."""
    import torch
    from mmcv.ops import RoIAlign, nms

    # A=[0,0,10,10], B overlaps A at IoU 0.818, C overlaps A at 0.5: at 0.6, B is suppressed
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 5.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    _, keep = nms(boxes, scores, iou_threshold=0.6)
    # a linear ramp f(x, y) = x + 10 y: RoIAlign (aligned) of [2, 2, 6, 6] in 2x2 bins samples the
    # bin centres 3 and 5, i.e. 2.5 and 4.5 after the half-pixel shift
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    feats = (xs + 10 * ys)[None, None].to(device)
    rois = torch.tensor([[0, 2.0, 2.0, 6.0, 6.0]], device=device)
    out = RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # kernel errors ("no kernel image") surface here
    if keep.cpu().tolist() != [0, 2]:
        raise RuntimeError(f"mmcv.ops.nms on {device} kept {keep.cpu().tolist()}, expected [0, 2]")
    expected = torch.tensor([[27.5, 29.5], [47.5, 49.5]])
    if not torch.allclose(out[0, 0].float().cpu(), expected, atol=1e-3):
        raise RuntimeError(f"mmcv.ops.RoIAlign on {device} gave {out[0, 0].cpu().tolist()}, expected {expected.tolist()}")


@functools.lru_cache(maxsize=None)
def _tiny_ops_error(device: str) -> str | None:
    """Why the tiny ops fail on `device` (None: they work); run once per device and process."""
    try:
        run_tiny_ops(device)
    except Exception as err:  # noqa: BLE001
        text = str(err).strip()
        return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
    return None


def _check(device: str) -> str | None:
    import torch

    if not torch.cuda.is_available():
        return (f"device {device!r} requested but torch {torch.__version__} sees no CUDA device "
                f"(torch's CUDA build: {torch.version.cuda})")
    try:
        import mmcv

        built = compiled_cuda_version()
    except Exception as err:  # noqa: BLE001 - reported, with the fix
        return f"mmcv has no compiled ops ({type(err).__name__}: {err}); {FIX}"
    if built is None:
        return f"mmcv {mmcv.__version__} was built without CUDA ops (a CPU-only build); {FIX}"
    error = _tiny_ops_error(device)
    if error:
        return f"mmcv {mmcv.__version__}'s CUDA ops (compiled for CUDA {built}) fail on {device}: {error}; {FIX}"
    return None


def own_index(local_rank: str | None, visible: int, current: int) -> int:
    """The index of this process's own GPU: LOCAL_RANK's in a data-parallel worker (torchrun and
    adapters.ddp.spawn set it) when that many GPUs are visible, else torch's current device (a
    worker given one GPU by CUDA_VISIBLE_DEVICES, or a single process)."""
    rank = (local_rank or "").strip()
    if rank.isdigit() and int(rank) < visible:
        return int(rank)
    return current


def own_device(device: str = "cuda") -> str:
    """`device` with its index: a bare "cuda" is this process's own GPU (`own_index`), not always cuda:0."""
    if device != "cuda":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cuda:0"
    try:
        visible, current = torch.cuda.device_count(), torch.cuda.current_device()
    except RuntimeError:  # no usable driver: the ops check itself reports the problem on cuda:0
        return "cuda:0"
    return f"cuda:{own_index(os.environ.get('LOCAL_RANK'), visible, current)}"


def cuda_ops_problem(device: str = "cuda") -> str | None:
    """None when mmcv's nms and RoIAlign run correctly on `device` (cuda: this process's own GPU,
    `own_device`; or cuda:N), else why not, naming the fix. The tiny ops run once per device and process."""
    return _check(own_device(device))


def require_cuda_ops(device: str, who: str = "mmdet_frcnn") -> None:
    """Raise before anything trains when `device` is CUDA and mmcv's ops cannot run there."""
    if not str(device).startswith("cuda"):
        return
    problem = cuda_ops_problem(str(device))
    if problem:
        raise RuntimeError(f"{who}: train.device={device} refused: {problem}")
