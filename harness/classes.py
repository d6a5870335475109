"""The VinBigData / VinDr-CXR label set: 14 abnormality classes in official order, plus "No finding".

COCO category ids in cxr-bench ARE the VinBigData class ids (0-13), so a category id read anywhere
(labels, predictions, submissions) means the same class without a mapping table.
"""

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


def coco_categories() -> list[dict]:
    """COCO `categories` entries: id = VinBigData class id, name = official name."""
    return [{"id": i, "name": name, "supercategory": "lesion"} for i, name in enumerate(CLASSES)]
