"""Shared fixtures and helpers. Tests run offline: ultralytics' switches are set before anything imports it.

Fixtures: `toy_dataset` (a prepared 2-class dataset), `split0` (its fold-0 split), `forbid_network`.
Helpers (import them: `from conftest import run_app`): ROOT, FAST and `run_app` (a Hydra app in a
subprocess), `tiny_spec` (a CPU TrainSpec for seconds-long fits), `coco_gt` and `random_case` (ground
truth and predictions for the mAP tests).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
# ultralytics writes settings at import: keep them out of the user's home during tests
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="cxr-bench-yolo-"))

sys.path.insert(0, str(Path(__file__).parent))  # for `from toy import make_toy_dataset`

from adapters.base import TrainSpec  # noqa: E402
from harness.classes import coco_categories  # noqa: E402
from harness.netguard import no_network  # noqa: E402
from harness.predictions import Predictions  # noqa: E402
from harness.split import make_split  # noqa: E402
from toy import make_toy_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]  # the repository root

# Small, fast settings shared by the end-to-end tests (tiny synthetic data at 128 px, 1-2 epochs).
FAST = [
    "data.size=128", "data.folds=2", "train.imgsz=128", "train.batch_size=4",
    "per_model.yolov5.variant=yolov5n", "per_model.detectron2_frcnn.variant=R18-FPN",
    "per_model.mmdet_frcnn.variant=R18-FPN", "report.overlays=2",
]


def run_app(module: str, args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the repository root with CXR_BENCH_ROOT=root (its runs, data and
    caches go there); with `check`, a non-zero exit fails the test with the app's output tail."""
    env = {**os.environ, "CXR_BENCH_ROOT": str(root)}
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {out.returncode}\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-5000:]}")
    return out


# the smallest variant of each detector: what adapter tests train
SMALL_VARIANTS = {"yolov5": "yolov5n", "detectron2_frcnn": "R18-FPN", "mmdet_frcnn": "R18-FPN"}


def tiny_spec(model: str | None = None, **settings) -> TrainSpec:
    """A TrainSpec for a seconds-long CPU fit (1 epoch, batch 2, 64 px, no workers, seed 0); with `model`,
    that detector's smallest variant; `settings` win."""
    base = dict(epochs=1, batch_size=2, imgsz=64, device="cpu", workers=0, seed=0, batch_predict=4)
    if model is not None:
        base["variant"] = SMALL_VARIANTS[model]
    return TrainSpec(**{**base, **settings})


def coco_gt(boxes_by_image: dict[int, list[tuple[int, list[float]]]], sizes: int | dict[int, tuple[int, int]] = 200
            ) -> dict:
    """COCO ground truth from {image_id: [(category, [x, y, w, h]), ...]}; `sizes`: one square side for
    every image, or {image_id: (width, height)}."""
    images, anns = [], []
    for image_id, boxes in boxes_by_image.items():
        width, height = sizes[image_id] if isinstance(sizes, dict) else (sizes, sizes)
        images.append({"id": image_id, "file_name": f"images/{image_id}.png", "width": width, "height": height,
                       "image_key": f"img{image_id}"})
        for cat, bbox in boxes:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": list(bbox),
                         "area": bbox[2] * bbox[3], "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": coco_categories()}


def random_case(seed: int, n_images: int = 12):
    """Random GT and detections (distinct scores), some near-misses, all 14 classes possible."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 256, "height": 256})
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 180, 2)
            w, h = rng.uniform(8, 70, 2)
            cat = int(rng.integers(0, 5))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            for _ in range(rng.integers(0, 3)):  # noisy copies: some match, some do not
                jitter = rng.normal(0, 0.25, 4) * [w, h, w, h]
                dets.append({"image_id": image_id, "category_id": cat if rng.random() < 0.85 else int(rng.integers(0, 14)),
                             "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]})
        for _ in range(rng.integers(0, 4)):  # pure false positives
            x, y = rng.uniform(0, 200, 2)
            dets.append({"image_id": image_id, "category_id": int(rng.integers(0, 14)),
                         "bbox": [x, y, float(rng.uniform(5, 50)), float(rng.uniform(5, 50))]})
    scores = rng.permutation(len(dets)) / len(dets) * 0.98 + 0.01  # distinct
    for det, score in zip(dets, scores):
        det["score"] = float(score)
    gt = {"images": images, "annotations": anns, "categories": coco_categories()}
    return gt, Predictions("random", None, [img["id"] for img in images], dets)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> dict:
    """An easy 2-class dataset (24 images, 128 px, 2 folds) in the prepared-dataset layout."""
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), n_images=24, size=128, seed=0, k=2)


def reference_required(setting: str | None = None) -> bool:
    """A test-only reference (tidecv, MLflow, chromium) must be there - its test fails instead of skipping -
    when its path or binary is configured (`setting`, an environment variable) or CI is set (any value but
    "", "0" or "false"; .ci/run exports CI=true)."""
    configured = bool(setting and os.environ.get(setting))
    return configured or os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def missing_reference(what: str, setting: str | None, remedy: str) -> None:
    """Fail (required: see reference_required) or skip, naming what is missing and how to get it."""
    if reference_required(setting):
        where = f"{setting}={os.environ.get(setting)!r}" if setting and os.environ.get(setting) else "CI is set"
        pytest.fail(f"{what} is missing but required ({where}): {remedy}")
    pytest.skip(f"{what} is not available ({remedy})")


@pytest.fixture
def forbid_network():
    """Any socket connection (or DNS lookup) inside the test raises NetworkAttempt."""
    with no_network() as attempts:
        yield attempts


@pytest.fixture(scope="module")
def split0(toy_dataset, tmp_path_factory):
    """The toy dataset's fold-0 split (val = fold 0), written once per test module."""
    return make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path_factory.mktemp("split0"))
