"""mAP@IoU0.4 (and AP50, AP50:95) with pycocotools, the reference COCO implementation.

Why pycocotools and not a re-implementation: it is what every framework's own evaluator wraps, so
our numbers stay comparable with theirs. Three settings differ from COCO's defaults, on purpose:

* IoU thresholds are ``[0.4, 0.50, 0.55, ..., 0.95]``: index 0 is the VinBigData threshold, indices
  1..10 are COCO's standard ten, so one pass gives mAP@0.4, AP50 and AP50:95.
* ``maxDets`` is ``[1, 10, max_dets]`` with ``max_dets`` at least the largest number of detections
  any image has (never below 100, COCO's default). COCO cuts each image's detections of a class
  after ``maxDets[-1]``; an ensemble of several models can exceed 100 per image and must not lose
  its low-score tail silently, because the low-score tail is where mAP's recall comes from.
* pycocotools prints progress to stdout; the stages run with stdout redirected.

Backends: ``faster_coco_eval`` (the default for the metric: the same COCOeval with evaluate and
accumulate in C++; its precision arrays equal pycocotools' to 1e-12 at these thresholds, ties
included, tests/test_coco_backends.py, speed in docs/benchmarks.md) and ``pycocotools`` (the
reference). Everything that reads the per-image match records (``cocoeval.evalImgs``: the bootstrap,
harness.eval.matches, AP by size) uses pycocotools, which keeps them; faster_coco_eval does not.

The stages stay visible, like pycocotools' own API, for anyone who wants to inspect them::

    ev = CocoMapEval(gt, preds)      # builds COCO gt / results objects, sets params
    ev.evaluate()                    # per image x class matching (ev.cocoeval.evalImgs)
    ev.accumulate()                  # precision/recall arrays (ev.cocoeval.eval["precision"])
    scores = ev.summarize()          # {"map40", "per_class", "ap50", "ap50_95", "max_dets"}

Category ids are the ground truth's class ids 0..N-1 (its label set: harness.classes; predictions with
other ids are refused); ``per_class`` is keyed by class name and holds None
for classes without ground truth in the evaluated images (pycocotools' -1).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from harness.classes import CLASSES, class_names
from harness.predictions import PredictionFileError, Predictions

#: IoU thresholds of the single COCOeval pass: 0.4 first, then COCO's standard 0.50:0.05:0.95.
IOU_THRS = np.concatenate([[0.4], np.linspace(0.5, 0.95, 10)])
#: The smallest last ``maxDets`` used (COCO's default).
MIN_MAX_DETS = 100
#: COCOeval implementations (see the module doc); the first is the metric's default.
BACKENDS = ("faster_coco_eval", "pycocotools")
DEFAULT_BACKEND = BACKENDS[0]


def _backend_classes(backend: str):
    """(COCO class, COCOeval factory) of a backend."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        def cocoeval(gt, dt, iouType):  # noqa: N803 (pycocotools' argument name)
            return COCOeval_faster(gt, dt, iouType=iouType, print_function=lambda *args, **kwargs: None)

        return COCO, cocoeval
    raise ValueError(f"unknown COCO evaluation backend {backend!r}: one of {', '.join(BACKENDS)}")


def load_gt(gt_coco: str | Path | dict) -> dict:
    """The ground-truth COCO dict, from a path or a dict (the dict is not modified)."""
    if isinstance(gt_coco, dict):
        return gt_coco
    path = Path(gt_coco)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read ground-truth COCO file: {err}") from err


def check_images(gt: dict, preds: Predictions, where: str = "<ground truth>") -> None:
    """Raise PredictionFileError when the predictions name images the ground truth does not hold, or
    category ids that are not its categories (another label set: pycocotools would drop them silently)."""
    known = {img["id"] for img in gt.get("images", [])}
    unknown = sorted(set(preds.image_ids) - known)
    if unknown:
        raise PredictionFileError(
            f"predictions {preds.source!r} name {len(unknown)} image id(s) absent from the ground truth "
            f"{where}: {unknown[:10]}{' ...' if len(unknown) > 10 else ''} (wrong split or labels file?)"
        )
    cats = {int(c["id"]) for c in gt.get("categories") or []} or set(range(len(CLASSES)))
    foreign = sorted({int(d["category_id"]) for d in preds.detections} - cats)
    if foreign:
        raise PredictionFileError(
            f"predictions {preds.source!r} use category id(s) {foreign[:10]} that the ground truth {where} does not "
            f"have (its {len(cats)} classes: {', '.join(class_names(gt))}): a model of another label set? "
            "Score it through a class mapping (cxr-predict predict.input=external mapping=<name>)"
        )


def auto_max_dets(preds: Predictions) -> int:
    """The last maxDets value: the largest per-image detection count, at least MIN_MAX_DETS."""
    per_image = Counter(det["image_id"] for det in preds.detections)
    return max([MIN_MAX_DETS, *per_image.values()])


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _gt_coco_object(gt: dict, backend: str = "pycocotools"):
    coco_class, _ = _backend_classes(backend)
    dataset = copy.deepcopy({k: gt[k] for k in ("images", "annotations", "categories") if k in gt})
    dataset.setdefault("annotations", [])
    dataset.setdefault("categories", [{"id": i, "name": n} for i, n in enumerate(CLASSES)])
    for ann in dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    coco = coco_class()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


class CocoMapEval:
    """pycocotools' COCOeval (bbox) set up for mAP@0.4 on exactly the images in ``preds.image_ids``
    (``backend``: see the module doc; ``cocoeval.evalImgs`` exists with "pycocotools" only)."""

    def __init__(self, gt_coco: str | Path | dict, preds: Predictions, max_dets: int | None = None,
                 backend: str = "pycocotools"):
        _, cocoeval_class = _backend_classes(backend)
        self.backend = backend
        self.gt = load_gt(gt_coco)
        check_images(self.gt, preds, str(gt_coco) if not isinstance(gt_coco, dict) else "<dict>")
        self.preds = preds
        self.max_dets = int(max_dets) if max_dets else auto_max_dets(preds)
        largest = auto_max_dets(preds)
        if self.max_dets < largest:
            raise ValueError(f"max_dets={self.max_dets} would cut detections: an image of {preds.source!r} "
                             f"has {largest}; use max_dets=None (automatic) or >= {largest}")
        self.coco_gt = _gt_coco_object(self.gt, backend)
        self.cat_ids = sorted(cat["id"] for cat in self.coco_gt.dataset["categories"])
        # loadRes fails on an empty list: with no detections, every class with GT scores 0.
        self.empty = not preds.detections
        if self.empty:
            self.coco_dt = None
            self.cocoeval = None
            return
        with _quiet():
            self.coco_dt = self.coco_gt.loadRes(copy.deepcopy(preds.detections))
        self.cocoeval = cocoeval_class(self.coco_gt, self.coco_dt, iouType="bbox")
        params = self.cocoeval.params
        params.imgIds = sorted(set(preds.image_ids))
        params.catIds = self.cat_ids
        params.iouThrs = IOU_THRS.copy()
        params.maxDets = [1, 10, self.max_dets]

    def evaluate(self) -> "CocoMapEval":
        if not self.empty:
            with _quiet():
                self.cocoeval.evaluate()
        return self

    def accumulate(self) -> "CocoMapEval":
        if not self.empty:
            with _quiet():
                self.cocoeval.accumulate()
        return self

    def per_class_ap(self, iou_index: int | slice = 0) -> dict[int, float | None]:
        """AP per category id at IOU_THRS[iou_index] (a slice averages thresholds); None = no GT."""
        if self.empty:
            scored = set(self.preds.image_ids)
            with_gt = {ann["category_id"] for ann in self.coco_gt.dataset["annotations"] if ann["image_id"] in scored}
            return {cat: (0.0 if cat in with_gt else None) for cat in self.cat_ids}
        # precision: [T iou, R=101 recall points, K classes, A area ranges ("all" first), M maxDets]
        precision = self.cocoeval.eval["precision"][iou_index, :, :, 0, -1]
        if precision.ndim == 2:
            precision = precision[None]
        result = {}
        for k, cat in enumerate(self.cat_ids):
            values = precision[:, :, k]
            valid = values[values > -1]
            result[cat] = float(valid.mean()) if valid.size else None
        return result

    def summarize(self) -> dict:
        """{"map40", "per_class" (name -> AP@0.4 or None), "ap50", "ap50_95", "max_dets"}."""
        per_class40 = self.per_class_ap(0)
        per_class50 = self.per_class_ap(1)
        per_class_all = self.per_class_ap(slice(1, None))

        def mean(values: dict) -> float:
            present = [v for v in values.values() if v is not None]
            return float(np.mean(present)) if present else 0.0

        classes = class_names(self.coco_gt.dataset)
        names = {cat: (classes[cat] if 0 <= cat < len(classes) else str(cat)) for cat in self.cat_ids}
        return {
            "map40": mean(per_class40),
            "per_class": {names[cat]: ap for cat, ap in per_class40.items()},
            "ap50": mean(per_class50),
            "ap50_95": mean(per_class_all),
            "max_dets": self.max_dets,
        }


def coco_map(gt_coco: str | Path | dict, preds: Predictions, max_dets: int | None = None,
             backend: str = DEFAULT_BACKEND) -> dict:
    """Run all three stages; see CocoMapEval.summarize for the keys."""
    return CocoMapEval(gt_coco, preds, max_dets, backend).evaluate().accumulate().summarize()
