"""Shared K folds over images, multilabel-stratified by class presence (iterative stratification).

Sechidis, Tsoumakas & Vlahavas (2011), "On the stratification of multi-label data": labels are
handled rarest first; each image carrying the current label goes to the fold that still wants the
most of that label (ties: the fold that wants the most images, then a seeded random choice). Rare
classes (Pneumothorax, Atelectasis) thereby reach every validation fold when there are at least K
images of them. "No finding" images get their own label so normals are spread evenly too.
The fold file is shared by every framework: the same file means the same validation images.

Why not iterative-stratification's MultilabelStratifiedKFold (what Kaggle pipelines used): on the
real VinBigData labels this implementation matches its per-fold class balance (same largest relative
deviation of any class in any fold, equal or lower mean deviation; tests/test_folds.py checks it
against the package), and keeping it keeps every existing fold assignment.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from harness import atomic
from harness.classes import NUM_CLASSES

SCHEME = "mlstrat"


def iterative_stratification(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per row of the boolean matrix `labels` (n_samples × n_labels)."""
    labels = np.asarray(labels, dtype=bool)
    n, n_labels = labels.shape
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} images into {k} folds")
    rng = np.random.default_rng(seed)
    ratios = np.full(k, 1.0 / k)
    want_total = n * ratios
    want_label = labels.sum(0)[None, :] * ratios[:, None]  # k × L
    fold = np.full(n, -1)
    remaining = labels.copy()
    unassigned = np.ones(n, dtype=bool)
    order = rng.permutation(n)  # random visiting order within a label, fixed by the seed

    def assign(i: int, choice_scores: np.ndarray) -> None:
        best = np.flatnonzero(choice_scores == choice_scores.max())
        if len(best) > 1:  # ties: the fold that wants the most images, then random
            totals = want_total[best]
            best = best[totals == totals.max()]
        f = best[rng.integers(len(best))] if len(best) > 1 else best[0]
        fold[i] = f
        unassigned[i] = False
        want_total[f] -= 1
        want_label[f] -= labels[i]
        remaining[i] = False

    while True:
        counts = remaining[unassigned].sum(0)
        if not counts.any():
            break
        label = int(np.flatnonzero(counts == counts[counts > 0].min())[0])  # rarest remaining label
        for i in order:
            if unassigned[i] and remaining[i, label]:
                assign(i, want_label[:, label].copy())
    for i in order:  # images without any label
        if unassigned[i]:
            assign(i, want_total.copy())
    return fold


def presence_matrix(coco: dict) -> tuple[list[str], np.ndarray]:
    """(image keys, images × 15 booleans): classes 0-13 present, column 14 = no finding."""
    keys = [img["image_key"] for img in coco["images"]]
    row = {img["id"]: i for i, img in enumerate(coco["images"])}
    mat = np.zeros((len(keys), NUM_CLASSES + 1), dtype=bool)
    for ann in coco["annotations"]:
        mat[row[ann["image_id"]], ann["category_id"]] = True
    mat[~mat[:, :NUM_CLASSES].any(1), NUM_CLASSES] = True
    return keys, mat


def folds_hash(folds: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(folds).encode()).hexdigest()


def folds_name(labels_name: str, k: int, seed: int) -> str:
    """The fold file's name, keyed by the labels it is made from (`labels/<name>.json`): folds made from
    another fusion are another file, never a reuse of this one."""
    return f"{SCHEME}-k{k}-s{seed}-{labels_name}.json"


def make_folds(labels_json: str | os.PathLike, k: int = 5, seed: int = 0, out_dir: str | os.PathLike | None = None) -> Path:
    """Write `<dataset>/folds/mlstrat-k<K>-s<seed>-<labels name>.json` for the COCO labels; return its path.

    `out_dir` defaults to the `folds/` folder beside the labels' `labels/` folder.
    """
    labels_json = Path(labels_json)
    coco = json.loads(labels_json.read_text())
    keys, mat = presence_matrix(coco)
    assignment = iterative_stratification(mat, k, seed)
    folds = [sorted(key for key, f in zip(keys, assignment) if f == i) for i in range(k)]
    root = labels_json.parent.parent
    out_dir = Path(out_dir) if out_dir is not None else root / "folds"
    path = out_dir / folds_name(labels_json.stem, k, seed)
    try:
        rel = labels_json.relative_to(root).as_posix()
    except ValueError:
        rel = str(labels_json)
    atomic.write_json(path, {"scheme": SCHEME, "k": k, "seed": seed, "labels": rel, "folds": folds,
                             "hash": folds_hash(folds)})
    return path
