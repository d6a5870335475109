"""The human-reader reference: one radiologist scored against the fusion of the other two.

VinBigData keeps three independent readers per training image. Leave-one-reader-out: the held-out
reader's boxes become "predictions" (score 1.0), the WBF fusion (IoU 0.4, equal weights) of the other
two readers' boxes the ground truth, and the same metric code as for the models scores them
(pycocotools mAP@0.4 through harness.eval.bootstrap's exact per-image match data, and the Kaggle VOC
metric). Readers are put in slots by their order of first appearance in train.csv for each image; the
held-out slot rotates over the three slots and the report gives mean ± std over the rotations.

Ties: every "detection" scores 1.0, so the ranking is all ties and their order moves AP. The order
used is the one pycocotools applies to equal scores: by image (COCO id = rank of the VinBigData image
id in sorted order), then by the held-out reader's row order in train.csv. The tie-free number is
precision × recall at the single operating point (``pr_single``), also reported, and so is the
spread over ``tie_orders`` random tie orders (``map40_tie_orders``): each draw ranks every class's
detections in a random order (seeded), keeping pycocotools' matching within each image, and the
report gives the mean over rotations per draw as mean ± sd and range over draws.

Ground truth: the reference's is the fusion of the *other two* readers, the models' the fusion of all
three; the two rows do not share ground truth, and the note says so.

Images where every reader found nothing add nothing to AP (no ground truth, no detection): they are
counted in ``n_images`` but not passed to the evaluators.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from harness.classes import CLASSES, NO_FINDING_ID, coco_categories
from harness.data.fusion import fuse_readers
from harness.eval.bootstrap import ClassMatches, ImageMatches
from harness.eval.voc_map import voc_map
from harness.predictions import Predictions

NAME = "one radiologist vs two"
TIE_RULE = ("all reader boxes score 1.0; ties are ranked by image (sorted image id), then by the reader's "
            "row order in train.csv, as pycocotools orders equal scores")


def reader_slots(rows: pd.DataFrame) -> pd.Series:
    """Slot (0, 1, 2, ...) of each row's reader on its image: order of first appearance in the CSV."""
    rows = rows.sort_values("line", kind="stable") if "line" in rows else rows
    first = rows.drop_duplicates(["image_id", "rad_id"])[["image_id", "rad_id"]]
    first = first.assign(slot=first.groupby("image_id").cumcount())
    merged = rows[["image_id", "rad_id"]].merge(first, on=["image_id", "rad_id"], how="left")
    return pd.Series(merged["slot"].to_numpy(), index=rows.index).reindex(rows.index)


def rotation(rows: pd.DataFrame, slot: int, iou_thr: float = 0.4, image_ids: Iterable[str] | None = None
             ) -> tuple[dict, Predictions, int]:
    """(ground-truth COCO, held-out reader's predictions, images scored) for one held-out slot.
    Images with fewer than slot+1 or fewer than two readers are left out."""
    rows = rows.copy()
    if "line" not in rows:
        rows["line"] = np.arange(len(rows))
    if image_ids is not None:
        rows = rows[rows["image_id"].isin(set(image_ids))]
    rows["slot"] = reader_slots(rows)
    n_readers = rows.groupby("image_id")["rad_id"].transform("nunique")
    rows = rows[(n_readers >= 2) & (n_readers > slot)]
    all_ids = sorted(rows["image_id"].unique())
    held = rows[(rows["slot"] == slot) & (rows["class_id"] != NO_FINDING_ID)].sort_values("line", kind="stable")
    others = rows[rows["slot"] != slot]
    fused = fuse_readers(others, "wbf", iou_thr)
    with_boxes = sorted(set(held["image_id"]) | set(fused["image_id"]))
    coco_id = {key: i + 1 for i, key in enumerate(all_ids)}
    images = [{"id": coco_id[k], "image_key": k, "file_name": f"{k}.png", "width": 1, "height": 1}
              for k in with_boxes]
    xyxy = fused[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)
    anns = [{"id": i + 1, "image_id": coco_id[k], "category_id": int(c),
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": float((b[2] - b[0]) * (b[3] - b[1])),
             "iscrowd": 0}
            for i, (k, c, b) in enumerate(zip(fused["image_id"], fused["class_id"], xyxy))]
    gt = {"images": images, "annotations": anns, "categories": coco_categories()}
    held = held.assign(coco=held["image_id"].map(coco_id)).sort_values(["coco", "line"], kind="stable")
    hb = held[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)
    dets = [{"image_id": int(i), "category_id": int(c), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": 1.0}
            for i, c, b in zip(held["coco"], held["class_id"], hb)]
    preds = Predictions(f"reader-slot{slot}", None, [coco_id[k] for k in with_boxes], dets)
    return gt, preds, len(all_ids)


def score_rotation(gt: dict, preds: Predictions) -> dict:
    """pycocotools mAP@0.4 (exact, via the per-image match data), VOC mAP@0.4, P×R, per class."""
    matches = ImageMatches.from_coco(gt, preds)
    ones = np.ones((1, len(matches.image_ids)))
    per_class = {CLASSES[cat]: (None if np.isnan(v[0]) else float(v[0]))
                 for cat, v in matches.per_class_ap(ones).items() if 0 <= cat < len(CLASSES)}
    pr = []
    for m in matches.classes.values():
        n_gt, tp, n_det = m.n_gt.sum(), m.tp.sum(), m.tp.sum() + m.fp.sum()
        if n_gt:
            pr.append((tp / n_det if n_det else 0.0) * tp / n_gt)
    voc = voc_map(gt, preds, 0.4)
    return {"map40": float(matches.map(ones)[0]), "per_class": per_class, "voc_map40": voc["map"],
            "pr_single": float(np.mean(pr)) if pr else 0.0, "matches": matches}


def tie_order_maps(matches: ImageMatches, orders: int, seed: int = 0) -> np.ndarray:
    """mAP@0.4 of one rotation under `orders` random tie orders: every class's detections (all at
    score 1.0) ranked in a random order, the matches within each image as pycocotools made them."""
    rng = np.random.default_rng(seed)
    ones = np.ones((1, len(matches.image_ids)))
    out = np.zeros(orders)
    for k in range(orders):
        shuffled = {}
        for cat, m in matches.classes.items():
            order = rng.permutation(len(m.image))
            shuffled[cat] = ClassMatches(m.image[order], m.tp[order], m.fp[order], m.n_gt)
        out[k] = ImageMatches(matches.image_ids, shuffled).map(ones)[0]
    return out


def reader_reference(rows: pd.DataFrame, iou_thr: float = 0.4, image_ids: Iterable[str] | None = None,
                     slots: Iterable[int] = (0, 1, 2), tie_orders: int = 20, seed: int = 0) -> dict:
    """Leave-one-reader-out over `slots` on the finding/"No finding" rows of a parsed train.csv
    (LabelTable.rows). Returns mean ± std (sample, over rotations) of map40, voc_map40, pr_single,
    per-class AP (mean), the spread of map40 over `tie_orders` random tie orders, the rotations and a
    note for the report."""
    rotations, by_order = [], []
    for slot in slots:
        gt, preds, n = rotation(rows, slot, iou_thr, image_ids)
        if not preds.image_ids:
            continue
        scores = score_rotation(gt, preds)
        matches = scores.pop("matches")
        if tie_orders:
            by_order.append(tie_order_maps(matches, tie_orders, seed + int(slot)))
        rotations.append({"slot": int(slot), "n_images": n, **scores})
    if not rotations:
        return {}

    def stat(key):
        values = np.array([r[key] for r in rotations], float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    per_class = {}
    for cls in CLASSES:
        values = [r["per_class"].get(cls) for r in rotations if r["per_class"].get(cls) is not None]
        per_class[cls] = float(np.mean(values)) if values else None
    (m, s), (vm, vs), (pm, ps) = stat("map40"), stat("voc_map40"), stat("pr_single")
    n_images = max(r["n_images"] for r in rotations)
    ties = None
    if by_order:
        per_draw = np.mean(by_order, axis=0)  # the reference's mAP (mean over rotations) under each tie order
        ties = {"orders": int(tie_orders), "seed": int(seed), "mean": float(per_draw.mean()),
                "std": float(per_draw.std(ddof=1)) if len(per_draw) > 1 else 0.0,
                "min": float(per_draw.min()), "max": float(per_draw.max()), "maps": [float(v) for v in per_draw]}
    tie_text = "" if ties is None else (
        f" Over {ties['orders']} random tie orders (seed {ties['seed']}) mAP@0.4 is {ties['mean']:.4f} ± "
        f"{ties['std']:.4f} (range {ties['min']:.4f}–{ties['max']:.4f}).")
    note = (f"each reader's boxes (score 1.0) scored against the WBF (IoU {iou_thr}, equal weights) of the other "
            f"two readers' boxes on {n_images} image(s), the held-out reader rotating over the {len(rotations)} "
            f"slots (readers in order of first appearance in train.csv); mean ± std over rotations. Its ground "
            f"truth (the other two readers fused) is not the models' (all three readers fused): the rows do not "
            f"share ground truth. Ties: {TIE_RULE}.{tie_text} Tie-free precision × recall at that single "
            f"operating point: {pm:.4f} ± {ps:.4f}.")
    return {"name": NAME, "variant": f"WBF {iou_thr}, {len(rotations)} rotations", "map40": m, "map40_std": s,
            "voc_map40": vm, "voc_map40_std": vs, "pr_single": pm, "pr_single_std": ps, "per_class": per_class,
            "n_images": n_images, "rotations": rotations, "note": note, "tie_rule": TIE_RULE,
            "map40_tie_orders": ties}
