"""Shared folds: iterative stratification, seeds, rare classes in every fold, file format."""
from __future__ import annotations

import hashlib
import json

import numpy as np

from harness.classes import coco_categories
from harness.data.folds import iterative_stratification, make_folds


def _random_labels(n=300, seed=0):
    rng = np.random.default_rng(seed)
    rates = np.array([0.3, 0.02, 0.05, 0.2, 0.03, 0.04, 0.06, 0.12, 0.1, 0.1, 0.1, 0.2, 0.017, 0.2])
    mat = rng.random((n, 14)) < rates
    mat[rng.random(n) < 0.5] = False  # normal images
    return np.concatenate([mat, ~mat.any(1, keepdims=True)], 1)


def test_every_class_in_every_fold_and_balanced():
    labels = _random_labels()
    folds = iterative_stratification(labels, 5, seed=0)
    sizes = np.bincount(folds, minlength=5)
    assert sizes.sum() == 300 and sizes.max() - sizes.min() <= 4
    for c in range(labels.shape[1]):
        per_fold = np.bincount(folds[labels[:, c]], minlength=5)
        if labels[:, c].sum() >= 5:
            assert (per_fold > 0).all(), (c, per_fold)
        assert per_fold.max() - per_fold.min() <= 2, (c, per_fold)  # stratified, not just present
    # far more even per class than a plain random split of the same images
    def spread(assignment):
        return sum(np.ptp(np.bincount(assignment[labels[:, c]], minlength=5)) for c in range(15))
    random_spreads = [spread(np.random.default_rng(s).permutation(300) % 5) for s in range(5)]
    assert spread(folds) * 2 < min(random_spreads)


def test_seeds():
    labels = _random_labels()
    a = iterative_stratification(labels, 5, seed=0)
    assert np.array_equal(a, iterative_stratification(labels, 5, seed=0))
    assert not np.array_equal(a, iterative_stratification(labels, 5, seed=1))


def test_fold_file(tmp_path):
    labels = _random_labels(60, seed=3)
    images = [{"id": i + 1, "image_key": f"{i:032x}", "file_name": f"images/512/{i:032x}.png", "width": 10,
               "height": 10} for i in range(60)]
    anns = [{"id": n + 1, "image_id": int(i) + 1, "category_id": int(c), "bbox": [0, 0, 1, 1]}
            for n, (i, c) in enumerate(zip(*np.nonzero(labels[:, :14])))]
    path = tmp_path / "ds" / "labels" / "wbf.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    out = make_folds(path, k=3, seed=7)
    assert out == tmp_path / "ds" / "folds" / "mlstrat-k3-s7-wbf.json"  # keyed by the labels it was made from
    doc = json.loads(out.read_text())
    assert (doc["scheme"], doc["k"], doc["seed"], doc["labels"]) == ("mlstrat", 3, 7, "labels/wbf.json")
    assert sorted(k for f in doc["folds"] for k in f) == sorted(img["image_key"] for img in images)
    assert doc["hash"] == hashlib.sha256(json.dumps(doc["folds"]).encode()).hexdigest()
    # another fusion of the same dataset gets its own fold file, next to this one
    nms = path.with_name("nms.json")
    nms.write_text(path.read_text())
    assert make_folds(nms, k=3, seed=7).name == "mlstrat-k3-s7-nms.json" and out.is_file()


def test_split_hash_is_recomputed_from_the_folds_read(tmp_path):
    """An edited fold file with its old stored hash must not pass for the original split."""
    from harness.split import make_split

    labels = _random_labels(30, seed=4)
    images = [{"id": i + 1, "image_key": f"k{i}", "file_name": f"{i}.png", "width": 10, "height": 10} for i in range(30)]
    path = tmp_path / "ds" / "labels" / "wbf.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": coco_categories()}))
    del labels
    folds_path = make_folds(path, k=3, seed=0)
    original = make_split(path, folds_path, 0, tmp_path / "a").split_hash
    doc = json.loads(folds_path.read_text())
    doc["folds"][1].append(doc["folds"][0].pop())  # move one image to another fold, keep the stored hash
    folds_path.write_text(json.dumps(doc))
    edited = make_split(path, folds_path, 0, tmp_path / "b")
    assert edited.split_hash != original
    assert len(json.loads(edited.val_json.read_text())["images"]) == len(doc["folds"][0])


def test_own_stratification_matches_the_iterative_stratification_package_on_real_labels():
    """Kept instead of iterstrat's MultilabelStratifiedKFold only because it balances the real VinBigData
    classes across folds at least as well (largest and mean relative deviation per class and fold)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    from testdata import require_real_csv

    from harness.data.labels import parse_train_csv

    rows = parse_train_csv(require_real_csv()).rows
    ids = sorted(rows["image_id"].unique())
    index = {key: i for i, key in enumerate(ids)}
    mat = np.zeros((len(ids), 15), bool)  # class present from any reader (= after WBF fusion) + "No finding"
    mat[rows["image_id"].map(index).to_numpy(), rows["class_id"].to_numpy()] = True
    mat[:, 14] = ~mat[:, :14].any(1)

    def deviation(assignment):
        counts = np.array([mat[assignment == f].sum(0) for f in range(5)])
        rel = np.abs(counts - mat.sum(0) / 5) / (mat.sum(0) / 5)
        return rel.max(), rel.mean()

    for seed in (0, 1, 2):
        ours = deviation(iterative_stratification(mat, 5, seed))
        theirs_assignment = np.zeros(len(ids), int)
        splitter = MultilabelStratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
        for f, (_, val) in enumerate(splitter.split(np.zeros(len(ids)), mat.astype(int))):
            theirs_assignment[val] = f
        theirs = deviation(theirs_assignment)
        assert ours[0] <= theirs[0] + 1e-12, (seed, ours, theirs)
        assert ours[1] <= theirs[1] + 2e-4, (seed, ours, theirs)
        assert ours[0] < 0.06  # every class within 6% of its share in every fold
