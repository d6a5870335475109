"""Label sets: each dataset's lesion classes in its official order.

The default is the VinBigData / VinDr-CXR set: 14 abnormality classes plus "No finding". Other
datasets bring their own list (`LABEL_SETS`, chosen by `data.label_set`); nothing in the harness
assumes 14 classes: a prepared dataset's COCO `categories` carry its class list, and whether a class
list is VinBigData's is decided by its names (`is_vinbigdata`), never by its length, and every consumer
(metrics, tables, charts, overlays, adapters) reads the names from there or from the job's
`TrainSpec.classes`. COCO category ids ARE the class's index in its label set (0..N-1), so a
category id read anywhere (labels, predictions, submissions) means the same class without a mapping
table. Only VinBigData has a "No finding" class (id 14): the code paths built on it (Kaggle
submission, the "No finding" classifier stage) say so when given another label set.
"""
from __future__ import annotations

from dataclasses import dataclass

CLASSES: tuple[str, ...] = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
)
NUM_CLASSES = len(CLASSES)
NO_FINDING_ID = 14
NO_FINDING_NAME = "No finding"
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}

# NIH ChestX-ray14's box set (BBox_List_2017.csv), alphabetical as in the release's documentation.
# The box file spells "Infiltrate"; the image-level labels (Data_Entry_2017.csv) say "Infiltration".
NIH_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)


@dataclass(frozen=True)
class LabelSet:
    """A dataset's classes (index = COCO category id) and whether it has VinBigData's "No finding"."""

    name: str
    classes: tuple[str, ...]
    has_no_finding: bool = False

    def categories(self) -> list[dict]:
        return categories_of(self.classes)


VINBIGDATA = LabelSet("vinbigdata", CLASSES, has_no_finding=True)
NIH_CXR14 = LabelSet("nih_cxr14", NIH_CLASSES)
LABEL_SETS = {s.name: s for s in (VINBIGDATA, NIH_CXR14)}


class NotVinBigData(ValueError):
    """A VinBigData-only code path (Kaggle submission, "No finding") was given another label set."""


def label_set(name: str | None) -> LabelSet:
    """The label set called `name` (None: VinBigData, the default of every VinBigData-layout dataset)."""
    if name is None:
        return VINBIGDATA
    try:
        return LABEL_SETS[str(name)]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}") from None


def categories_of(classes) -> list[dict]:
    return [{"id": i, "name": name, "supercategory": "lesion"} for i, name in enumerate(classes)]


def coco_categories() -> list[dict]:
    """COCO `categories` entries: id = VinBigData class id, name = official name."""
    return categories_of(CLASSES)


def class_names(coco: dict) -> tuple[str, ...]:
    """A COCO dict's class names by category id; ids must be 0..N-1. No categories (every cxr-bench
    labels file before label sets) means VinBigData's; categories that are VinBigData's (is_vinbigdata)
    are named by its official names."""
    cats = coco.get("categories")
    if not cats:
        return CLASSES
    ids = sorted(int(c["id"]) for c in cats)
    if ids != list(range(len(ids))):
        raise ValueError(f"COCO category ids must be 0..{len(ids) - 1}, found {ids}")
    by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    names = tuple(by_id[i] for i in range(len(ids)))
    return CLASSES if is_vinbigdata(names) else names


def is_vinbigdata(classes) -> bool:
    """Whether a class list is VinBigData's, by identity: its 14 official names in order, or 14 classes
    that carry no names (their ids 0-13, or the ids as names: hand-made files). Not by count alone: another
    label set of 14 named classes is not VinBigData."""
    names = tuple(str(c) for c in classes)
    return names == CLASSES or names == tuple(str(i) for i in range(NUM_CLASSES))


def require_vinbigdata(classes, what: str) -> None:
    """Raise NotVinBigData unless `classes` are the VinBigData classes (`what` names the feature)."""
    if not is_vinbigdata(classes):
        raise NotVinBigData(
            f"{what} is VinBigData-only (its 14 classes and the 'No finding' class 14); this dataset's "
            f"classes are {list(classes)}")
