"""mmengine-side pieces: the trusted checkpoint loader, the Runner that honours the device, the hooks
the adapter registers (init record, resumable checkpoints); what the Runner built is read back in
`adapters.mmdet_frcnn.readback`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from adapters.base import trusted_load
from adapters.mmdet_frcnn.config import TRUSTED_PREFIX
from adapters.trainset import consumed_counts

log = logging.getLogger(__name__)


def training_set_counts(dataset) -> dict[str, int]:
    """Images and boxes of mmdet's built, filtered training dataset (ignored/crowd boxes excluded)."""
    return consumed_counts([
        sum(1 for inst in dataset.get_data_info(i)["instances"] if not inst.get("ignore_flag", 0))
        for i in range(len(dataset))])


def init_recorder(detector):
    """An mmengine hook that, once `load_from` is applied (before_train), records which model
    tensors came from spec.weights (Detector._record_init)."""
    from mmengine.hooks import Hook

    class RecordInit(Hook):
        def before_train(self, runner) -> None:
            source = load_trusted_checkpoint(detector.spec.weights)
            model = getattr(runner.model, "module", runner.model)
            detector._record_init(model.state_dict(), source.get("state_dict", source))

    return RecordInit()


def load_trusted_checkpoint(filename: str | Path, map_location: Any = "cpu") -> dict:
    """torch.load of a checkpoint cxr-bench trusts (its own, or the user's local weights file):
    weights_only=False, because mmengine checkpoints pickle non-tensor metadata."""
    return trusted_load(Path(str(filename).removeprefix(TRUSTED_PREFIX)), map_location)


def load_from_cxrbench_trusted(filename: str, map_location: Any = None) -> dict:
    # mmengine prints `loader.__name__[10:]` as the backend name: "cxrbench_trusted".
    return load_trusted_checkpoint(filename, map_location)


def register_trusted_loader() -> None:
    """Add the `cxrbench-trusted://` scheme to mmengine's CheckpointLoader (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes=TRUSTED_PREFIX, loader=load_from_cxrbench_trusted, force=True)


def runner_class(device: str):
    """mmengine's Runner, moving the model to `device` (its own wrap_model always picks CUDA when
    present, so `device: cpu` on a GPU machine would otherwise be ignored)."""
    from mmengine.runner import Runner

    class DeviceRunner(Runner):
        def wrap_model(self, model_wrapper_cfg, model):
            model = super().wrap_model(model_wrapper_cfg, model)
            return model.to(device)

    return DeviceRunner


def close_file_handlers(logger) -> None:
    for handler in list(getattr(logger, "handlers", [])):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)
