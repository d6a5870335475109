"""ultralytics-side helpers: the multi-label predictor, and what ultralytics built (training set counts,
transforms); the settings it ran are read back in `adapters.yolov5.readback`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.trainset import consumed_counts

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


def multi_label_predictor():
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


def background_images(dataset) -> int:
    """Training images without a box in ultralytics' built dataset (its background images)."""
    return sum(1 for label in dataset.labels if len(label["cls"]) == 0)
