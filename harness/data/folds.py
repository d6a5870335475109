"""Shared K folds over images, multilabel-stratified by class presence (iterative stratification).

Sechidis, Tsoumakas & Vlahavas (2011), "On the stratification of multi-label data": labels are
handled rarest first; each image carrying the current label goes to the fold that still wants the
most of that label (ties: the fold that wants the most images, then a seeded random choice). Rare
classes (Pneumothorax, Atelectasis) thereby reach every validation fold when there are at least K
images of them. "No finding" images get their own label so normals are spread evenly too.
The fold file is shared by every framework: the same file means the same validation images.

Grouped folds (`group_by="patient"`, NIH ChestX-ray14): all images of one group (patient) go to one
fold. The stratification then runs over groups, each group carrying the union of its images' labels,
so no patient's follow-up images sit on both sides of a split.

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
from harness.classes import class_names

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
    """(image keys, images × (N + 1) booleans): classes 0..N-1 of the dataset's label set present,
    column N = no finding."""
    keys = [img["image_key"] for img in coco["images"]]
    row = {img["id"]: i for i, img in enumerate(coco["images"])}
    n_classes = len(class_names(coco))
    mat = np.zeros((len(keys), n_classes + 1), dtype=bool)
    for ann in coco["annotations"]:
        mat[row[ann["image_id"]], ann["category_id"]] = True
    mat[~mat[:, :n_classes].any(1), n_classes] = True
    return keys, mat


def patient_id(image_key: str) -> str:
    """NIH ChestX-ray14: the file name's part before `_` (00012345_002 -> 00012345)."""
    return image_key.split("_", 1)[0]


GROUPINGS = {"patient": patient_id}


def grouped_stratification(keys: list[str], labels: np.ndarray, groups: list[str], k: int,
                           seed: int = 0) -> np.ndarray:
    """Fold per image, whole groups at a time: iterative stratification over the groups' label
    unions (a group counts once per label, however many of its images carry it)."""
    names = list(dict.fromkeys(groups))
    index = {g: i for i, g in enumerate(names)}
    group_labels = np.zeros((len(names), labels.shape[1]), dtype=bool)
    for g, row in zip(groups, labels):
        group_labels[index[g]] |= row
    n = labels.shape[1] - 1  # the last column: no finding, only for groups without any finding
    group_labels[group_labels[:, :n].any(1), n] = False
    group_fold = iterative_stratification(group_labels, k, seed)
    return np.array([group_fold[index[g]] for g in groups])


def folds_hash(folds: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(folds).encode()).hexdigest()


def folds_name(labels_name: str, k: int, seed: int) -> str:
    """The fold file's name, keyed by the labels it is made from (`labels/<name>.json`): folds made from
    another fusion are another file, never a reuse of this one."""
    return f"{SCHEME}-k{k}-s{seed}-{labels_name}.json"


def make_folds(labels_json: str | os.PathLike, k: int = 5, seed: int = 0, out_dir: str | os.PathLike | None = None,
               group_by: str | None = None) -> Path:
    """Write `<dataset>/folds/mlstrat-k<K>-s<seed>-<labels name>.json` for the COCO labels; return its path.

    `out_dir` defaults to the `folds/` folder beside the labels' `labels/` folder. `group_by`: None
    (images independent) or a key of GROUPINGS ("patient": one patient's images in one fold).
    """
    labels_json = Path(labels_json)
    coco = json.loads(labels_json.read_text())
    keys, mat = presence_matrix(coco)
    if group_by is None:
        assignment = iterative_stratification(mat, k, seed)
    elif group_by in GROUPINGS:
        assignment = grouped_stratification(keys, mat, [GROUPINGS[group_by](key) for key in keys], k, seed)
    else:
        raise ValueError(f"group_by must be None or one of {sorted(GROUPINGS)}, got {group_by!r}")
    folds = [sorted(key for key, f in zip(keys, assignment) if f == i) for i in range(k)]
    root = labels_json.parent.parent
    out_dir = Path(out_dir) if out_dir is not None else root / "folds"
    path = out_dir / folds_name(labels_json.stem, k, seed)
    try:
        rel = labels_json.relative_to(root).as_posix()
    except ValueError:
        rel = str(labels_json)
    doc = {"scheme": SCHEME, "k": k, "seed": seed, "labels": rel, "folds": folds, "hash": folds_hash(folds)}
    if group_by is not None:
        doc["group_by"] = group_by
    atomic.write_json(path, doc)
    return path
