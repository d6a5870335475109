"""YOLOv5 (n/s/m/l/x) behind the shared `Detector` interface, trained and run by ultralytics 8.4.

Architecture. The model is built from ultralytics' own YOLOv5 model YAML (`yolov5n.yaml` ...
`yolov5x.yaml`, i.e. `cfg/models/v5/yolov5.yaml` at that scale), never from a `.pt` hub name. That
YAML keeps YOLOv5's CSP-Darknet backbone and PANet neck but ends in ultralytics' anchor-free,
decoupled `Detect` head (DFL box regression, task-aligned assigner) - the model ultralytics calls
"YOLOv5u". It is NOT the classic anchor-based YOLOv5 of the original Kaggle notebooks (that code
lives in the unmaintained `yolov5` PyPI package, which breaks on this stack). `versions()` and
`HEAD` say so, and results should be labelled accordingly. The model has the dataset's classes
(`spec.classes`, from `data.label_set`: the 14 VinBigData classes by default; class index == COCO
category id).

Weights. From scratch by default (`pretrained=False`). With `spec.weights` (a LOCAL ultralytics
`.pt`), the variant's YAML architecture is built and the checkpoint's tensors are transferred by
name and shape (`pretrained=<path>`): a head trained for another class count, or a 3-channel
first conv in a 1-channel model, keeps its random init.

Data. The shared COCO split is converted inside `workdir/yolo_data/` (built in a temporary folder,
then renamed into place): `images/{train,val}/<stem>.png` are symlinks to the prepared PNGs (a copy
where symlinks are impossible), `labels/{train,val}/<stem>.txt` hold `class cx cy w h` normalised
by the PNG size (an empty file for an image without findings: a background image), and
`data.yaml` has the absolute path, the 14 names and `channels`. Nothing is written into the
dataset folder. Channels: `spec.channels == 1` trains a true 1-channel model (`channels: 1` in the
data YAML: the first conv has one input channel and images are read with IMREAD_GRAYSCALE);
3 = the gray PNG replicated into three channels (ultralytics' default reading).

Offline by construction (`ultralytics_offline`). Before ultralytics is imported, YOLO_OFFLINE=1,
YOLO_AUTOINSTALL=0 and YOLO_CONFIG_DIR=<workdir>/ultralytics_config are set, and matplotlib's
DejaVuSans.ttf is placed as `<YOLO_CONFIG_DIR>/Ultralytics/Arial.ttf` and `Arial.Unicode.ttf`
(ultralytics' dataset check otherwise downloads Arial on every train/val). If ultralytics was
already imported in this process (its config dir and ONLINE flag are fixed at import), the same
effect is patched in for the duration of the call: every `ultralytics.*` module's copy of
USER_CONFIG_DIR points at the run's folder, ONLINE/AUTOINSTALL are False, the telemetry queue is
disabled, and the settings dict is redirected to the run's own settings.json with sync and all
logger integrations off (comet, clearml, mlflow, dvc, raytune, tensorboard, wandb). The AMP
self-test (CUDA, spec.amp True) would download yolo26n.pt: it is replaced by "trust spec.amp"
while a fit runs. Everything is restored on exit (settings, module attributes, env variables,
torch's thread count, which ultralytics' `select_device` resets) so two fits in one process do
not see each other's state.

Shared augmentation spec -> ultralytics train arguments:
    AugSpec.rotate_deg -> `degrees`  (random rotation in [-deg, +deg], boxes re-fitted to the
                                      rotated corners, ultralytics' `RandomPerspective`)
    AugSpec.hflip      -> `fliplr`   (probability of a horizontal flip)
    AugSpec.vflip      -> `flipud`   (probability of a vertical flip)
ultralytics' other augmentations stay its own recipe (mosaic 1.0 switched off for the last 10
epochs, hsv_v 0.4, translate 0.1, scale 0.5), except hsv_h and hsv_s, set to 0 because they do
nothing to a gray image (`XRAY_AUG_DEFAULTS`); the protocol card lists them.
Any key in `spec.native` overrides these and everything else below (passed to `model.train`).

Training arguments: epochs, batch (= spec.batch_size; ultralytics still accumulates gradients up to
its nominal batch `nbs` 64 and scales weight decay by batch*accumulate/nbs - its recipe; set
native {"nbs": N} to change), imgsz, optimizer (sgd -> "SGD", adam -> "Adam", adamw -> "AdamW"),
lr0 = spec.lr, weight_decay, seed, deterministic=True, device (cpu; cuda/cuda:N -> "0"/"N";
spec.gpus = N > 1 -> "0,1,...,N-1": ultralytics' own DDP in subprocesses, CUDA only, batch = the
total over the N GPUs; the callbacks below reach its workers, which ultralytics pickles them into),
workers, amp, project=<workdir>, name="train", val=False (the val split is scored once after the
last epoch by ultralytics, as a log line; cxr-bench scores `predict()`'s output), plots=False.
`fit` returns `train/weights/last.pt` - the last epoch, never a "best" picked on the val fold.
Resuming (`adapters.resume`): save_period = spec.checkpoint_interval makes ultralytics write
`train/weights/epoch<N>.pt` (N counted from 0); a callback records each as resumable, keeps the newest
spec.checkpoint_keep and updates the progress file. A rerun loads the chosen one and trains with
ultralytics' own `resume=True` (args, optimizer, EMA and epoch from the checkpoint); ultralytics
cannot resume a finished training, so a checkpoint of the last epoch is never chosen.

Training images: the shared protocol's `spec.negatives`. "drop" leaves the images without findings
out of the YOLO train folder (the Faster R-CNNs' FILTER_EMPTY_ANNOTATIONS / filter_empty_gt);
"keep" writes them with an empty label file, which ultralytics trains on as background images.
What ultralytics consumed is read back from its built training dataset (`labels`) after the fit.

Prediction (the shared protocol): `model.predict` on the PNG paths in batches of
spec.batch_predict through `MultiLabelPredictor`, ultralytics' DetectionPredictor with its NMS called
as ultralytics' own validation calls it (`multi_label=True`: a box keeps every class above the
threshold, as both Faster R-CNN heads do); conf=spec.score_thr, max_det=spec.max_det, NMS IoU
spec.nms_iou (class-aware), imgsz=spec.imgsz (letterboxed; ultralytics maps boxes back to the PNG
pixels, `Results.boxes.xyxy`). native {"iou": x} or {"multi_label": False} override these for
prediction too. The harness's shared post-processing (`adapters.base.postprocess`) follows.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from adapters.base import (AugSpec, Detector, RawDetections, TrainSpec, consumed_counts,
                           protocol_row)
from adapters.resume import prune, records, write_record
from harness import atomic
from harness.classes import CLASSES, NUM_CLASSES
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

VARIANTS = ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")
HEAD = "anchor-free decoupled Detect head (ultralytics YOLOv5u), not the classic anchor-based YOLOv5"

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}

# ultralytics' own augmentation defaults (cfg/default.yaml) that the harness changes: hue and
# saturation jitter do nothing to a gray image replicated into 3 channels, so they are switched off
# (saves the HSV conversion). Everything else - mosaic 1.0 (off for the last close_mosaic=10
# epochs), hsv_v 0.4, translate 0.1, scale 0.5, mixup/cutmix/copy_paste 0 - is ultralytics' recipe.
XRAY_AUG_DEFAULTS: dict[str, float] = {"hsv_h": 0.0, "hsv_s": 0.0}
# ultralytics' defaults for the rest of its augmentation, as recorded on the protocol card
NATIVE_AUG: dict[str, float] = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "translate": 0.1, "scale": 0.5,
                                "shear": 0.0, "perspective": 0.0, "mosaic": 1.0, "close_mosaic": 10,
                                "mixup": 0.0, "cutmix": 0.0, "copy_paste": 0.0}
# ultralytics' training recipe (cfg/default.yaml, YOLOv5's hyp.scratch): what the card compares to
NATIVE = {"optimizer": "SGD", "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005,
          "warmup_epochs": 3.0, "nbs": 64, "iou": 0.7, "max_det": 300}

# native keys that also apply at prediction time (`iou` overrides spec.nms_iou there too)
PREDICT_KEYS = ("iou", "agnostic_nms", "augment", "half", "multi_label")

_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}


# ---------------------------------------------------------------------------------------------
# spec -> ultralytics arguments (pure functions: no framework import)
# ---------------------------------------------------------------------------------------------

def yolo_device(device: str) -> str:
    """cxr-bench device string -> ultralytics' ("cpu", "cuda" -> "0", "cuda:N" -> "N")."""
    device = str(device).strip().lower()
    if device in ("", "cpu"):
        return "cpu"
    if device == "cuda":
        return "0"
    if match := re.fullmatch(r"cuda:(\d+)", device):
        return match.group(1)
    raise ValueError(f"device must be cpu, cuda or cuda:N, not {device!r}")


def aug_args(aug: AugSpec) -> dict[str, float]:
    """The shared AugSpec as ultralytics train arguments, on top of the X-ray defaults."""
    if not 0.0 <= aug.hflip <= 1.0 or not 0.0 <= aug.vflip <= 1.0:
        raise ValueError(f"flip probabilities must be in [0, 1]: hflip={aug.hflip}, vflip={aug.vflip}")
    if aug.rotate_deg < 0:
        raise ValueError(f"rotate_deg must be >= 0, not {aug.rotate_deg}")
    return {**XRAY_AUG_DEFAULTS, "degrees": float(aug.rotate_deg), "fliplr": float(aug.hflip),
            "flipud": float(aug.vflip)}


def _trust_amp_in_this_process(trainer) -> None:
    """ultralytics callback for DDP workers (ultralytics pickles the callbacks into them): the AMP
    self-test there would download yolo26n.pt, as `ultralytics_offline(trust_amp=True)` avoids here."""
    import ultralytics.engine.trainer as utrainer

    utrainer.check_amp = lambda model: True


def _load_checkpoint(path: Path) -> dict:
    """A cxr-bench checkpoint ultralytics wrote (trusted: it pickles ultralytics' model classes)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def train_args(spec: TrainSpec, data_yaml: Path, workdir: Path) -> dict[str, Any]:
    """Every keyword `YOLO.train` receives for this spec (spec.native last, overriding)."""
    args: dict[str, Any] = {
        "data": str(Path(data_yaml).resolve()),
        "epochs": int(spec.epochs),
        "batch": int(spec.batch_size),
        "imgsz": int(spec.imgsz),
        "optimizer": OPTIMIZERS[spec.optimizer],
        "lr0": float(spec.lr),
        "weight_decay": float(spec.weight_decay),
        "seed": int(spec.seed),
        "deterministic": True,
        # train.gpus > 1: ultralytics' own DDP over GPUs 0..N-1 (CUDA only; batch is the total)
        "device": yolo_device(spec.device) if spec.gpus == 1 else ",".join(str(i) for i in range(spec.gpus)),
        "workers": int(spec.workers),
        "amp": bool(spec.amp),
        "pretrained": str(Path(spec.weights).resolve()) if spec.weights else False,
        "project": str(Path(workdir).resolve()),
        "name": "train",
        "exist_ok": True,
        "val": False,
        "plots": False,
        "save_period": int(spec.checkpoint_interval),  # epoch{N}.pt: the resumable checkpoints
        **aug_args(spec.aug),
    }
    args.update(spec.native)
    return args


# ---------------------------------------------------------------------------------------------
# COCO split -> YOLO dataset
# ---------------------------------------------------------------------------------------------

def _yolo_label_lines(image: dict, anns: list[dict], source: Path, n_classes: int = NUM_CLASSES) -> list[str]:
    """`class cx cy w h` lines (normalised) for one image; boxes are clipped to the image, and a
    box with no area left is skipped with a warning naming it."""
    width, height = float(image["width"]), float(image["height"])
    lines = []
    for ann in anns:
        cat = ann.get("category_id")
        if not isinstance(cat, int) or not 0 <= cat < n_classes:
            raise ValueError(f"{source}: annotation id {ann.get('id')} (image {image['file_name']}) has "
                             f"category_id {cat!r}; expected 0..{n_classes - 1}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(width, x + w), min(height, y + h)
        if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
            log.warning("%s: annotation id %s (image %s) has no area inside the image, skipped: bbox %s",
                        source, ann.get("id"), image["file_name"], ann["bbox"])
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{cat} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines


def _link_or_copy(target: Path, link: Path) -> None:
    try:
        os.symlink(target, link)
    except OSError:
        shutil.copy2(target, link)


def _write_subset(coco_json: Path, image_root: Path, out: Path, subset: str,
                  drop_negatives: bool = False, n_classes: int = NUM_CLASSES) -> tuple[int, list[str]]:
    """Write images/<subset> links and labels/<subset> txt files; return (images written, problems).
    `drop_negatives` leaves out images without any box (the protocol's negatives="drop")."""
    import json

    from PIL import Image

    coco = json.loads(Path(coco_json).read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    img_dir, lbl_dir = out / "images" / subset, out / "labels" / subset
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    problems: list[str] = []
    written = 0
    for image in coco["images"]:
        src = (image_root / image["file_name"]).resolve()
        try:
            with Image.open(src) as im:
                size = im.size
        except (OSError, ValueError) as err:
            problems.append(f"{coco_json}: image id {image['id']} ({src}) cannot be read: {err}")
            log.error(problems[-1])
            continue
        if size != (image["width"], image["height"]):
            problems.append(f"{coco_json}: image id {image['id']} ({src}) is {size[0]}x{size[1]} px but its "
                            f"record says {image['width']}x{image['height']}; skipped")
            log.error(problems[-1])
            continue
        lines = _yolo_label_lines(image, by_image.get(image["id"], []), coco_json, n_classes)
        if drop_negatives and not lines:
            continue
        stem = src.stem if src.stem not in used else f"{src.stem}__id{image['id']}"
        used.add(stem)
        _link_or_copy(src, img_dir / f"{stem}{src.suffix}")
        (lbl_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        written += 1
    return written, problems


def write_yolo_dataset(split: Split, root: Path, channels: int = 3, negatives: str = "keep",
                       classes: Sequence[str] = CLASSES) -> Path:
    """Convert the split's train/val COCO files into a YOLO dataset at `root`; return its data YAML.

    Built in a temporary sibling folder and renamed into place, so `root` is either the old or the
    complete new dataset. Unreadable images or size mismatches are skipped with an error naming the
    file; if a subset ends up empty, ValueError. negatives="drop" leaves images without boxes out of
    the train subset (the val subset always has every image).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    root = Path(root).resolve()
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    try:
        for subset, coco_json in (("train", split.train_json), ("val", split.val_json)):
            counts[subset], _ = _write_subset(Path(coco_json), Path(split.image_root), tmp, subset,
                                              drop_negatives=subset == "train" and negatives == "drop",
                                              n_classes=len(classes))
            if counts[subset] == 0:
                raise ValueError(f"{coco_json}: no usable {subset} images (see errors above)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    names = "\n".join(f"  {i}: {name!r}" for i, name in enumerate(classes))
    data_yaml = root / "data.yaml"
    atomic.write_text(
        data_yaml,
        f"# written by cxr-bench adapters.yolov5 from {split.train_json} and {split.val_json}\n"
        f"# split hash {split.split_hash}; {counts['train']} train (negatives={negatives}) / {counts['val']} val images\n"
        f"path: {root}\ntrain: images/train\nval: images/val\nchannels: {channels}\n"
        f"nc: {len(classes)}\nnames:\n{names}\n",
    )
    return data_yaml


# ---------------------------------------------------------------------------------------------
# offline sandbox around every ultralytics call
# ---------------------------------------------------------------------------------------------

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


_TRANSFORM_ATTRS = ("p", "direction", "degrees", "translate", "scale", "shear", "perspective", "hgain",
                    "sgain", "vgain")


def describe_transforms(transform) -> list[dict[str, Any]]:
    """The training transforms ultralytics actually built, flattened to [{"type", <settings>}]:
    recorded after each fit (`last_fit["train_transforms"]`) as proof of the augmentation mapping."""
    if transform is None:
        return []
    children = getattr(transform, "transforms", None)
    if type(transform).__name__ == "Compose" and isinstance(children, list):
        return [entry for child in children for entry in describe_transforms(child)]
    entry: dict[str, Any] = {"type": type(transform).__name__}
    for attr in _TRANSFORM_ATTRS:
        value = getattr(transform, attr, None)
        if isinstance(value, (int, float, str)):
            entry[attr] = value
    return [entry]


# ---------------------------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------------------------

def _multi_label_predictor():
    """ultralytics' DetectionPredictor whose NMS runs as its DetectionValidator runs it
    (multi_label=True), unless the predictor's args say multi_label=False."""
    from ultralytics.models.yolo.detect import DetectionPredictor
    from ultralytics.utils import nms, ops

    class MultiLabelPredictor(DetectionPredictor):
        multi_label = True

        def postprocess(self, preds, img, orig_imgs, **kwargs):
            preds = nms.non_max_suppression(
                preds, self.args.conf, self.args.iou, self.args.classes, self.args.agnostic_nms,
                multi_label=self.multi_label, max_det=self.args.max_det,
                end2end=getattr(self.model, "end2end", False))
            if not isinstance(orig_imgs, list):
                orig_imgs = ops.convert_torch2numpy_batch(orig_imgs)[..., ::-1]
            return self.construct_results(preds, img, orig_imgs)

    return MultiLabelPredictor


def training_set_counts(dataset) -> dict[str, int]:
    """Images and boxes of ultralytics' built training dataset (YOLODataset.labels)."""
    return consumed_counts([len(label["cls"]) for label in dataset.labels])


def cached_training_set_counts(labels_dir: Path) -> dict[str, int]:
    """The same counts from the label cache ultralytics' training dataset wrote (`<labels_dir>.cache`):
    what a DDP training, whose dataset lives in its worker processes, consumed."""
    from ultralytics.data.utils import load_dataset_cache_file

    cache = Path(labels_dir).with_suffix(".cache")
    if not cache.is_file():
        raise FileNotFoundError(f"ultralytics wrote no label cache at {cache}")
    return consumed_counts([len(label["cls"]) for label in load_dataset_cache_file(cache)["labels"]])


class YoloV5Detector(Detector):
    """YOLOv5 n/s/m/l/x (anchor-free YOLOv5u head) via ultralytics."""

    name = "yolov5"
    framework = "ultralytics"
    default_variant = "yolov5n"
    variants = tuple(VARIANTS)
    native_protocol = {
        "negatives": ("keep", "ultralytics trains on background images when given; the protocol drops them, "
                              "as the study and the public Kaggle pipelines did"),
        "score_thr": (0.001, "ultralytics' val default (predict's is 0.25)"),
        "max_det": (300, "the protocol keeps 100 per image for every model (COCO's maxDets)"),
        "nms_iou": (0.7, "the protocol uses one NMS IoU for every model (the Faster R-CNNs' default 0.5)"),
        "multi_label": (True, "as ultralytics' validation (its predict uses one label per box)"),
        "init_weights": ("scratch", ""),
    }

    def __init__(self, spec: TrainSpec):
        super().__init__(spec)
        yolo_device(spec.device)  # fail early on a bad device string
        aug_args(spec.aug)
        self.last_fit: dict[str, Any] = {}

    # -- training -------------------------------------------------------------------------------
    def fit(self, split: Split, workdir: Path) -> Path:
        from adapters.ddp import check_gpus

        check_gpus(self.spec.gpus, self.spec.device, self.name, cpu_ok=False)
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        data_yaml = write_yolo_dataset(split, workdir / "yolo_data", self.spec.channels, self.spec.negatives,
                                       self.spec.classes)
        args = train_args(self.spec, data_yaml, workdir)
        weights_dir = workdir / args["name"] / "weights"
        n_train = sum(1 for _ in (workdir / "yolo_data" / "images" / "train").iterdir())
        log.info("yolov5: training %s (%s) on %d images (negatives=%s) for %d epochs -> %s",
                 self.spec.variant, HEAD, n_train, self.spec.negatives, self.spec.epochs, workdir / args["name"])
        trust_amp = bool(self.spec.amp) and args["device"] != "cpu"
        with ultralytics_offline(workdir / "ultralytics_config", trust_amp=trust_amp):
            from ultralytics import YOLO

            # ultralytics cannot resume a finished training: only checkpoints before the last epoch
            point = self.resume_point(split, weights_dir, _load_checkpoint, before_epoch=int(args["epochs"]))
            if point is None:
                shutil.rmtree(weights_dir, ignore_errors=True)  # no stale checkpoint
                model = YOLO(f"{self.spec.variant}.yaml", task="detect")
                if self.spec.weights:
                    model.add_callback("on_pretrain_routine_end", self._record_yolo_init)
            else:  # ultralytics' own resume: args, optimizer, EMA and epoch from the checkpoint
                model = YOLO(str(point.checkpoint), task="detect")
                args["resume"] = True
            self._add_checkpoint_callbacks(model, self.training_key(split), workdir)
            if trust_amp and self.spec.gpus > 1:  # DDP workers are new processes: patch there too
                model.add_callback("on_pretrain_routine_start", _trust_amp_in_this_process)
            start = time.perf_counter()
            model.train(**args)
            seconds = time.perf_counter() - start
            if self.resumed is not None:
                self.resumed["framework_start_epoch"] = int(model.trainer.start_epoch)
            save_dir = Path(model.trainer.save_dir)
            if self.spec.gpus > 1:  # the dataset lived in ultralytics' DDP subprocesses
                transforms = None
                self._check_consumed(split, cached_training_set_counts(workdir / "yolo_data" / "labels" / "train"))
            else:
                dataset = model.trainer.train_loader.dataset
                transforms = describe_transforms(getattr(dataset, "transforms", None))
                self._check_consumed(split, training_set_counts(dataset))
            batch = int(model.trainer.batch_size)
            accumulate = int(getattr(model.trainer, "accumulate", 1))
        checkpoint = save_dir / "weights" / "last.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"ultralytics finished but wrote no checkpoint at {checkpoint}")
        epochs = int(args["epochs"])
        self.last_fit = {"seconds": seconds, "train_images": self.consumed["images"], "epochs": epochs,
                         "iterations": epochs * math.ceil(self.consumed["images"] / batch),
                         "accumulate": accumulate, "args": {k: v for k, v in args.items() if k not in
                                                            ("data", "project", "name", "resume")},
                         "train_images_per_s": self.consumed["images"] * epochs / seconds if seconds > 0 else math.nan,
                         "save_dir": str(save_dir), "checkpoint": str(checkpoint),
                         "train_transforms": transforms}
        log.info("yolov5: trained on %d images / %d boxes in %.1f s (%.2f images/s); checkpoint %s",
                 self.consumed["images"], self.consumed["boxes"], seconds, self.last_fit["train_images_per_s"],
                 checkpoint)
        return checkpoint

    def _record_yolo_init(self, trainer) -> None:
        """ultralytics callback: the model about to train vs the checkpoint it was loaded from."""
        from ultralytics.nn.tasks import load_checkpoint

        source, _ = load_checkpoint(self.spec.weights)
        self._record_init(trainer.model.state_dict(), source.float().state_dict())

    def _add_checkpoint_callbacks(self, model, key: str, workdir: Path) -> None:
        """Record each `epoch{N}.pt` ultralytics saves (save_period) as resumable, keep the newest
        spec.checkpoint_keep of them (ultralytics keeps all), and update the progress file."""
        keep = self.spec.checkpoint_keep

        def on_model_save(trainer) -> None:
            checkpoint = Path(trainer.wdir) / f"epoch{trainer.epoch}.pt"  # ultralytics counts epochs from 0
            if trainer.save_period > 0 and trainer.epoch % trainer.save_period == 0 and checkpoint.is_file():
                write_record(checkpoint, key, trainer.epoch + 1, trainer.epochs)
                prune(trainer.wdir, keep)

        def on_fit_epoch_end(trainer) -> None:
            saved = records(trainer.wdir)
            self.report_progress(workdir, trainer.epoch + 1, trainer.epochs,
                                 Path(trainer.wdir) / saved[0][1]["checkpoint"] if saved else None)

        model.add_callback("on_model_save", on_model_save)
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)

    # -- prediction -----------------------------------------------------------------------------
    def _untrained(self):
        """A seeded, randomly initialised model of the variant for spec.classes, with spec.channels inputs."""
        import torch
        from ultralytics import YOLO
        from ultralytics.nn.tasks import DetectionModel

        yolo = YOLO(f"{self.spec.variant}.yaml", task="detect")
        torch.manual_seed(self.spec.seed)
        model = DetectionModel(dict(yolo.model.yaml), ch=self.spec.channels, nc=len(self.spec.classes), verbose=False)
        model.names = dict(enumerate(self.spec.classes))
        model.args, model.task = yolo.model.args, "detect"
        yolo.model = model
        return yolo

    def predict_kwargs(self, workdir: Path) -> dict[str, Any]:
        """What `model.predict` receives: the shared post-processing settings, then native overrides."""
        native = {k: v for k, v in self.spec.native.items() if k in PREDICT_KEYS and k != "multi_label"}
        return {"conf": float(self.spec.score_thr), "max_det": int(self.spec.max_det),
                "iou": float(self.spec.nms_iou), "imgsz": int(self.spec.imgsz),
                "device": yolo_device(self.spec.device), "batch": max(1, int(self.spec.batch_predict)),
                "verbose": False, "save": False, "project": str(Path(workdir).resolve()), "name": "predict",
                "exist_ok": True, **native}

    @contextlib.contextmanager
    def prediction_session(self, checkpoint: Path | None, workdir: Path):
        workdir = Path(workdir).resolve()
        kwargs = self.predict_kwargs(workdir)
        with ultralytics_offline(workdir / "ultralytics_config"):
            from ultralytics import YOLO

            if checkpoint is None:
                model = self._untrained()
            else:
                if not Path(checkpoint).is_file():
                    raise FileNotFoundError(f"yolov5 checkpoint not found: {checkpoint}")
                model = YOLO(str(checkpoint), task="detect")
            predictor = _multi_label_predictor()
            predictor.multi_label = bool(self.spec.native.get("multi_label", self.spec.multi_label))

            def infer(refs: list[ImageRef]) -> list[RawDetections]:
                paths = [str(Path(ref.path).resolve()) for ref in refs]
                results = model.predict(paths, predictor=predictor, **kwargs)  # built once, then reused
                outputs = {str(Path(res.path).resolve()): res for res in results}
                return [self._raw(ref, outputs.get(path)) for ref, path in zip(refs, paths)]

            yield infer

    @staticmethod
    def _raw(ref: ImageRef, res) -> RawDetections:
        if res is None:
            raise RuntimeError("ultralytics could not decode the image")
        h, w = res.orig_shape[:2]
        if (w, h) != (ref.width, ref.height):
            log.warning("%s: PNG is %dx%d but its record says %dx%d; boxes are in the PNG's pixels",
                        ref.path, w, h, ref.width, ref.height)
        boxes = res.boxes
        return RawDetections(boxes.xyxy.detach().cpu().numpy(), boxes.conf.detach().cpu().numpy(),
                             boxes.cls.detach().cpu().numpy().astype(int))

    # -- the protocol card ----------------------------------------------------------------------
    def recipe(self) -> list[dict]:
        spec, fit = self.spec, self.last_fit
        args = fit.get("args") or train_args(spec, Path("data.yaml"), Path("."))
        get = args.get
        aug = {k: get(k, v) for k, v in NATIVE_AUG.items()}
        return [
            protocol_row("architecture", "architecture",
                         f"{spec.variant}.yaml (YOLOv5 backbone/neck, anchor-free YOLOv5u head)",
                         note="classic anchor-based YOLOv5 is not in ultralytics"),
            protocol_row("epochs", "epochs", int(get("epochs", spec.epochs))),
            protocol_row("iterations", "iterations (batches)", fit.get("iterations")),
            protocol_row("batch_size", "batch (gradient accumulation to nbs)",
                         f"{get('batch', spec.batch_size)} (nbs {get('nbs', NATIVE['nbs'])})",
                         f"{get('batch', spec.batch_size)} (nbs {NATIVE['nbs']})",
                         note="" if get("nbs", 64) == 64 else "nominal batch lowered for a small training set"),
            protocol_row("optimizer", "optimizer", f"{get('optimizer', 'SGD')}(momentum {get('momentum', 0.937)})",
                         f"{NATIVE['optimizer']}(momentum {NATIVE['momentum']})",
                         note="ultralytics' optimizer=auto picks SGD for runs > 10k iterations, AdamW below"),
            protocol_row("lr", "learning rate", float(get("lr0", spec.lr)), NATIVE["lr0"]),
            protocol_row("schedule", "lr schedule", f"linear to lrf={get('lrf', NATIVE['lrf'])}",
                         f"linear to lrf={NATIVE['lrf']}"),
            protocol_row("warmup", "warmup", f"{get('warmup_epochs', NATIVE['warmup_epochs'])} epochs",
                         f"{NATIVE['warmup_epochs']} epochs"),
            protocol_row("weight_decay", "weight decay", float(get("weight_decay", spec.weight_decay)),
                         NATIVE["weight_decay"], note="scaled by batch*accumulate/nbs (ultralytics)"),
            protocol_row("norm_decay", "weight decay on norm layers and biases", "none", "none"),
            protocol_row("grad_clip", "gradient clipping", "max norm 10", "max norm 10"),
            protocol_row("framework_aug", "framework's own augmentation", aug, NATIVE_AUG,
                         note="hsv_h/hsv_s 0: no effect on a gray image"),
        ]

    # -- provenance -----------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        import importlib.metadata as md

        out = {}
        for dist in ("ultralytics", "torch", "torchvision"):
            try:
                out[dist] = md.version(dist)
            except md.PackageNotFoundError:
                out[dist] = "not installed"
        out["architecture"] = f"ultralytics {self.spec.variant}.yaml (YOLOv5 backbone + PANet neck)"
        out["head"] = HEAD
        out["licence"] = "AGPL-3.0"
        return out
