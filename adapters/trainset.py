"""What a training set holds, counted the same way for every framework: the protocol's expectation
(`count_split_training_set`) and the count read back from a framework's own built dataset
(`consumed_counts`), which the protocol card compares."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def consumed_counts(boxes_per_image: Sequence[int]) -> dict[str, int]:
    """{"images", "boxes"} from the per-image box counts of a framework's training dataset."""
    counts = [int(n) for n in boxes_per_image]
    return {"images": len(counts), "boxes": int(sum(counts))}


def count_split_training_set(train_json: Path, negatives: str) -> dict[str, int]:
    """The training images/boxes the protocol asks for: every image of the split's train file, or
    only those with at least one box when negatives == "drop". Adapters check what their
    framework really consumed against this."""
    coco = json.loads(Path(train_json).read_text())
    per_image = {img["id"]: 0 for img in coco["images"]}
    for ann in coco["annotations"]:
        if ann["image_id"] in per_image and not ann.get("iscrowd", 0):
            per_image[ann["image_id"]] += 1
    if negatives == "drop":
        return consumed_counts([n for n in per_image.values() if n > 0])
    return consumed_counts(per_image.values())


def iterations_per_epoch(n_images: int, batch_size: int) -> int:
    """Batches in one epoch over `n_images` (the last one may be short)."""
    return max(1, -(-int(n_images) // max(1, int(batch_size))))
