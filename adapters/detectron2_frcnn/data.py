"""The split's COCO files registered with detectron2's catalogs for the duration of one job."""
from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

from harness.split import Split


@contextlib.contextmanager
def registered_split(split: Split) -> Iterator[tuple[str, str]]:
    """Register the split's train/val COCO files with detectron2 under job-unique names; remove
    them again afterwards (also on error)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    job = uuid.uuid4().hex[:12]
    classes = split.classes  # ids 0..n-1 (harness.split.check_categories): load_coco_json's mapping is the identity
    names = (f"cxr_{job}_train", f"cxr_{job}_val")
    try:
        for name, json_file in zip(names, (split.train_json, split.val_json)):
            DatasetCatalog.register(
                name, lambda j=str(json_file), n=name: load_coco_json(j, str(split.image_root), n)
            )
            MetadataCatalog.get(name).set(
                thing_classes=list(classes),
                thing_dataset_id_to_contiguous_id={i: i for i in range(len(classes))},
                json_file=str(json_file),
                image_root=str(split.image_root),
                evaluator_type="coco",
            )
        yield names
    finally:
        for name in names:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            if name in MetadataCatalog.list():
                MetadataCatalog.remove(name)
