"""The offline sandbox around every ultralytics call (see the package docstring): config dir under
the run, no network, no telemetry, no logger integrations, local fonts; all restored on exit."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

from adapters.yolov5.compat import offline_patches

log = logging.getLogger(__name__)

_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


def trust_amp_in_this_process(trainer) -> None:
    """ultralytics callback for DDP workers (ultralytics pickles the callbacks into them): the AMP
    self-test there would download yolo26n.pt, as `ultralytics_offline(trust_amp=True)` avoids here."""
    import ultralytics.engine.trainer as utrainer

    utrainer.check_amp = lambda model: True


def _install_fonts(settings_dir: Path) -> None:
    """Place a local TTF where ultralytics looks for Arial, so it never downloads one."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = settings_dir / name
        if not target.exists():
            shutil.copyfile(font, target)


def _unpatch_pil_open() -> None:
    """ultralytics replaces PIL.Image.open process-wide when imported, with a fallback that turns an
    unreadable file into a pip requirement check for a HEIF plugin (ModuleNotFoundError offline).
    Put Pillow's own function back, so the other frameworks in this process (and our error
    reporting for broken images) see Pillow's behaviour; our inputs are PNGs."""
    import PIL.Image
    import ultralytics.utils.patches as upatches

    if PIL.Image.open is upatches.image_open:
        PIL.Image.open = upatches._image_open


@contextlib.contextmanager
def ultralytics_offline(config_root: Path, trust_amp: bool = False) -> Iterator[None]:
    """Run ultralytics with its config dir under `config_root`, offline, with no telemetry and no
    logger integrations; restore all of it (and torch's thread count) on exit."""
    config_root = Path(config_root).resolve()
    settings_dir = config_root / "Ultralytics"
    settings_dir.mkdir(parents=True, exist_ok=True)
    _install_fonts(settings_dir)
    saved_env = {key: os.environ.get(key) for key in (*_ENV, "YOLO_CONFIG_DIR")}
    os.environ.update(_ENV)
    os.environ["YOLO_CONFIG_DIR"] = str(config_root)

    import torch
    import ultralytics.utils as uutils
    import ultralytics.utils.checks as uchecks
    import ultralytics.utils.events as uevents

    _unpatch_pil_open()

    threads = torch.get_num_threads()
    patches: list[tuple[object, str, Any]] = []

    def patch(obj: object, attr: str, value: Any) -> None:
        patches.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    for name, module in list(sys.modules.items()):
        if module is None or not (name == "ultralytics" or name.startswith("ultralytics.")):
            continue
        for attr, value in (("USER_CONFIG_DIR", settings_dir), ("ONLINE", False), ("AUTOINSTALL", False)):
            if attr in vars(module):
                patch(module, attr, value)
    patch(uevents.events, "enabled", False)
    for obj, attr, value in offline_patches():  # ultralytics without polars (adapters.yolov5.compat)
        patch(obj, attr, value)
    if trust_amp:
        import ultralytics.engine.trainer as utrainer

        def _amp_as_requested(model) -> bool:
            log.info("AMP self-test skipped (it would download yolo26n.pt): AMP on as spec.amp asks")
            return True

        patch(utrainer, "check_amp", _amp_as_requested)

    settings = uutils.SETTINGS
    saved_settings, saved_file = dict(settings), settings.file_path
    settings.file_path = settings.file = settings_dir / "settings.json"
    settings.update(sync=False, **{key: False for key in _INTEGRATIONS})  # saved to the run's own file
    font_cache = getattr(uchecks.check_font, "__wrapped__", None)
    if hasattr(font_cache, "cache_clear"):
        font_cache.cache_clear()  # a font path cached by an earlier run may be gone
    try:
        yield
    finally:
        for obj, attr, value in reversed(patches):
            setattr(obj, attr, value)
        dict.clear(settings)
        dict.update(settings, saved_settings)  # in memory only: no write to anyone's settings file
        settings.file_path = settings.file = saved_file
        if hasattr(font_cache, "cache_clear"):
            font_cache.cache_clear()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
