"""A Hydra app on the real conf tree that runs only what cxr-train runs before a job's training:
`assign_gpu` (launcher=gpus); each job records the GPU environment it got, and the CUDA devices
torch sees where there is a GPU (tests/test_gpu_jobs.py)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.cli.common import CONF_DIR, output_dir  # noqa: E402


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from harness.jobs.gpus import assign_gpu

    from harness.jobs.gpus import visible_gpus

    gpu = assign_gpu(cfg)
    import torch
    from torch.utils.data import DataLoader  # a GPU job's loader workers start inside the loky worker

    loaded = sum(int(b.sum()) for b in DataLoader(list(range(8)), batch_size=2, num_workers=2))
    record = {"gpu": gpu, "env": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
              "job": HydraConfig.get().job.num, "n_jobs": HydraConfig.get().launcher.get("n_jobs"),
              "device": cfg.train.device, "order": os.environ.get("CUDA_DEVICE_ORDER"),
              "visible": visible_gpus(),  # what the job may use, as the harness counts it
              "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else None,
              "loaded": loaded}
    (output_dir() / "gpu_env.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
