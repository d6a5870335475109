"""NIH ChestX-ray14 box set in the release's own layout → the prepared dataset (`data=nih_cxr14`).

The release, as users download it:

    <raw_dir>/BBox_List_2017.csv          Image Index, Finding Label, Bbox [x,y,w,h] (4 numbers, pixels of
                                          the 1024 x 1024 release image) and three empty trailing columns;
                                          the unquoted header splits "Bbox [x,y,w,h]" into four cells
                                          (read as UTF-8 with or without a byte-order mark)
    <raw_dir>/Data_Entry_2017.csv         optional: image-level labels ("No Finding" images: normals;
                                          findings the box list does not box: ignore regions)
    <raw_dir>/images_001/images/*.png … images_012/…   (any folder depth: found recursively)

What differs from VinBigData: PNG not DICOM (`png_input`, no DICOM stage), its own 8 classes
(`harness.classes.NIH_CLASSES`; the box file spells "Infiltrate", the image-level file "Infiltration",
both accepted), one reader per box (no label fusion: `num_readers` 1), patient ids in the file names
(`<patient>_<follow-up>.png`) so the folds are grouped by patient, and boxes only on images with a
finding (`normals=N` adds N "No Finding" images from Data_Entry_2017.csv as negatives).

Boxes are in the release's 1024-px space (`RELEASE_SIZE`); an image found at another size (a
downscaled copy of the release) gets its boxes scaled to its own pixels, and the log and the labels'
``info.box_scale`` say which images were resized and by how much.

The box list is not exhaustive: it was drawn for sampled findings, so other findings of the same
image are unboxed. With Data_Entry_2017.csv present, every (image, class) pair that the image-level
labels give but the box list does not box becomes an ignore region (a COCO ``iscrowd`` box covering
the whole image, class of that finding): scoring neither rewards nor penalises detections there, and
the adapters leave crowd boxes out of training (background, as before; no framework here can train
with ignore regions of that kind). The labels' ``info.exhaustive`` is False without that file (the
external-validation table then says the boxes are not exhaustive) and ``info.unboxed_findings``
counts the ignore regions with it.

Bad rows are reported by CSV line (policy "error" raises one LabelError listing all; "drop-and-report"
drops them and writes a report); images that fail to convert are listed by file, the rest converted.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from harness import atomic
from harness.classes import NIH_CXR14
from harness.data import coco as coco_mod
from harness.data import labels as labels_mod
from harness.data import manifest as manifest_mod
from harness.data import stats as stats_mod
from harness.data.pipeline import PrepareSummary, ensure_folds_and_stats, fingerprint, new_summary, stored
from harness.data.png_input import PNG_SUFFIXES
from harness.data.prepare import ConvertSettings, convert_files
from harness.digest import file_sha256

log = logging.getLogger(__name__)
BOX_FILE = "BBox_List_2017.csv"
ENTRY_FILE = "Data_Entry_2017.csv"
READER = "NIH"
ALIASES = {"Infiltration": "Infiltrate"}  # the image-level file's spelling of the box file's label
NO_FINDING_LABEL = "No Finding"
ROW_COLUMNS = ("image_id", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max", "line")
#: The release's image size: its boxes are in these pixels.
RELEASE_SIZE = 1024
#: The CSVs' encoding: UTF-8, with or without a byte-order mark (spreadsheet exports add one).
ENCODING = "utf-8-sig"


def find_file(raw_dir: Path, name: str) -> Path | None:
    """`raw_dir/name`, else the first `name` below it (sorted), else None."""
    direct = Path(raw_dir) / name
    if direct.is_file():
        return direct
    found = sorted(Path(raw_dir).rglob(name))
    return found[0] if found else None


def find_pngs(raw_dir: Path) -> dict[str, Path]:
    """{image file name: path} for every PNG anywhere under `raw_dir`; a name found twice is an error."""
    found: dict[str, Path] = {}
    twice = []
    for root, dirs, files in os.walk(raw_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if Path(name).suffix.lower() in PNG_SUFFIXES:
                if name in found:
                    twice.append(f"{found[name]} and {Path(root) / name}")
                found[name] = Path(root) / name
    if twice:
        raise ValueError(f"{raw_dir}: {len(twice)} image name(s) found twice, e.g. {twice[:3]}")
    return found


def _check_header(path: Path, header: list[str] | None) -> None:
    cells = [c.strip() for c in header or []]
    if cells[:2] != ["Image Index", "Finding Label"] or len(cells) < 3 or not cells[2].startswith("Bbox"):
        raise labels_mod.LabelError(path, [(1, f"header {header} is not 'Image Index, Finding Label, Bbox [x,y,w,h]'")])


def box_scale(size: tuple[int, int] | None) -> tuple[float, float]:
    """(x, y) factors from the release's 1024-px box space to an image of `size` (h, w); 1 when unknown."""
    if size is None:
        return 1.0, 1.0
    return size[1] / RELEASE_SIZE, size[0] / RELEASE_SIZE


def _check_box_row(cells: list[str], sizes: dict | None) -> tuple[dict | None, str | None]:
    """One data row → (record in the found image's pixels, None) or (None, reason)."""
    if len(cells) < 6:
        return None, f"expected at least 6 columns (image, label, x, y, w, h), found {len(cells)}"
    extra = [c for c in cells[6:] if c.strip()]
    if extra:
        return None, f"unexpected values in the trailing columns: {extra}"
    name, label = cells[0].strip(), cells[1].strip()
    if not name:
        return None, "empty Image Index"
    label = ALIASES.get(label, label)
    if label not in NIH_CXR14.classes:
        return None, f"unknown Finding Label {cells[1].strip()!r} (known: {', '.join(NIH_CXR14.classes)})"
    try:
        x, y, w, h = (float(c) for c in cells[2:6])
    except ValueError:
        return None, f"non-numeric box {cells[2:6]}"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None, f"non-finite box {cells[2:6]}"
    if w <= 0 or h <= 0:
        return None, f"empty box (w={w}, h={h})"
    if x < 0 or y < 0:
        return None, f"negative coordinate in box ({x}, {y}, {w}, {h})"
    image_id = Path(name).stem
    if sizes is not None:
        if image_id not in sizes:
            return None, f"image {name} was not found under data.raw_dir"
        size = sizes[image_id]
        if x + w > RELEASE_SIZE + 0.5 or y + h > RELEASE_SIZE + 0.5:
            return None, f"box ({x}, {y}, {w}, {h}) outside the release's {RELEASE_SIZE}x{RELEASE_SIZE} image"
        fx, fy = box_scale(size)
        x, y, w, h = x * fx, y * fy, w * fx, h * fy
    return {"image_id": image_id, "class_id": NIH_CXR14.classes.index(label), "rad_id": READER,
            "x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h}, None


def parse_bbox_csv(path: str | os.PathLike, sizes: dict[str, tuple[int, int] | None] | None = None,
                   policy: str = "error", report_path: str | os.PathLike | None = None) -> labels_mod.LabelTable:
    """Read and validate BBox_List_2017.csv: rows with image_id (file stem), class_id (NIH label set),
    rad_id "NIH", x_min..y_max, line. Without `sizes` the boxes stay in the release's 1024-px space;
    `sizes` {image_id: (h, w) of the found image, or None}: every image must be in it, boxes inside the
    release's 1024 x 1024 image, and each box is scaled to its found image's pixels (box_scale).
    Policies as labels.parse_train_csv."""
    if policy not in labels_mod.POLICIES:
        raise ValueError(f"bad_rows policy must be one of {labels_mod.POLICIES}, got {policy!r}")
    path = Path(path)
    records, problems = [], []
    with open(path, newline="", encoding=ENCODING) as handle:
        reader = csv.reader(handle)
        _check_header(path, next(reader, None))
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            record, why = _check_box_row(cells, sizes)
            if why:
                problems.append((reader.line_num, why))
            else:
                records.append({**record, "line": reader.line_num})
    rows = pd.DataFrame(records, columns=list(ROW_COLUMNS)).astype({"class_id": int, "line": int})
    if problems and policy == "error":
        raise labels_mod.LabelError(path, problems)
    table = labels_mod.LabelTable(rows, problems)
    if problems:
        log.warning("%s: dropped %d bad row(s), e.g. line %d: %s", path, len(problems), *problems[0])
        if report_path is not None:
            table.report = labels_mod.write_problem_report(problems, report_path, path)
    return table


def resized_images(sizes: dict[str, tuple[int, int] | None]) -> dict[str, list[float]]:
    """{image_id: [x, y] box scale} of the found images that are not the release's 1024 x 1024."""
    return {key: list(box_scale(size)) for key, size in sorted(sizes.items())
            if size is not None and tuple(size) != (RELEASE_SIZE, RELEASE_SIZE)}


def box_image_names(path: Path) -> list[str]:
    """The image file names the box file mentions (first column), in order, without validating rows."""
    with open(path, newline="", encoding=ENCODING) as handle:
        reader = csv.reader(handle)
        _check_header(path, next(reader, None))
        return list(dict.fromkeys(c[0].strip() for c in reader if c and c[0].strip()))


def normal_images(entry_csv: Path | None, available: dict[str, Path], exclude: set[str], n: int,
                  seed: int = 0) -> list[str]:
    """Up to `n` image names labelled exactly "No Finding" in Data_Entry_2017.csv, present under raw_dir
    and not in `exclude` (the box file's images); a seeded random pick, sorted."""
    if n <= 0:
        return []
    if entry_csv is None:
        raise FileNotFoundError(f"data.normals={n} needs {ENTRY_FILE} (the release's image-level labels) "
                                "under data.raw_dir")
    names = sorted(name for name, labels in image_labels(entry_csv).items() if labels == {NO_FINDING_LABEL})
    names = [name for name in names if name in available and name not in exclude]
    if len(names) < n:
        log.warning("nih: data.normals=%d but only %d 'No Finding' images are under data.raw_dir: using all of them",
                    n, len(names))
        return names
    pick = np.random.default_rng(seed).choice(len(names), size=n, replace=False)
    return sorted(names[i] for i in pick)


def image_labels(entry_csv: Path) -> dict[str, set[str]]:
    """{image file name: its labels} from Data_Entry_2017.csv ("A|B" split; the box file's spellings)."""
    with open(entry_csv, newline="", encoding=ENCODING) as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in reader.fieldnames or []]
        if "Image Index" not in fields or "Finding Labels" not in fields:
            raise ValueError(f"{entry_csv}: header {reader.fieldnames} lacks 'Image Index' / 'Finding Labels'")
        reader.fieldnames = fields
        return {row["Image Index"].strip(): {ALIASES.get(v.strip(), v.strip())
                                            for v in (row.get("Finding Labels") or "").split("|") if v.strip()}
                for row in reader}


def unboxed_findings(entry_csv: Path | None, images: dict[str, int], boxed: set[tuple[str, int]]) -> list[tuple[str, int]]:
    """(image_id, class_id) pairs the image-level labels give for `images` {image_id: ...} but the
    box list does not box (`boxed`): the ignore regions; [] without the file."""
    if entry_csv is None:
        return []
    pairs = []
    for name, labels in image_labels(entry_csv).items():
        key = Path(name).stem
        if key not in images:
            continue
        pairs += [(key, NIH_CXR14.classes.index(label)) for label in sorted(labels)
                  if label in NIH_CXR14.classes and (key, NIH_CXR14.classes.index(label)) not in boxed]
    return sorted(pairs)


def add_ignore_regions(coco: dict, pairs: list[tuple[str, int]]) -> int:
    """Append one whole-image iscrowd box per (image_id, class_id) pair; return how many."""
    by_key = {img["image_key"]: img for img in coco["images"]}
    next_id = max([a["id"] for a in coco["annotations"]] + [0]) + 1
    added = 0
    for key, cat in pairs:
        img = by_key.get(key)
        if img is None:
            continue
        w, h = float(img["width"]), float(img["height"])
        coco["annotations"].append({"id": next_id, "image_id": img["id"], "category_id": int(cat),
                                    "bbox": [0.0, 0.0, w, h], "area": w * h, "iscrowd": 1, "num_readers": 0})
        next_id += 1
        added += 1
    return added


def labels_name(normals: int) -> str:
    """labels/<name>.json: "none" (one reader, no fusion), "none-normals<N>" with normals."""
    return "none" if normals <= 0 else f"none-normals{normals}"


def prepare_nih(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, size: int | str = 1024, square: bool = False,
                bits: int = 8, bad_rows: str = "error", folds: int = 5, seed: int = 0, normals: int = 0,
                workers: int | None = None, progress: bool = True,
                png_compression: int = ConvertSettings.png_compression,
                png_strategy: str = ConvertSettings.png_strategy) -> PrepareSummary:
    """PNGs → prepared PNGs + manifest; the box file → COCO labels (NIH classes, PNG pixels); folds
    grouped by patient; stats. Same outputs and rerun behaviour as pipeline.prepare_dataset."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    box_csv = find_file(raw_dir, BOX_FILE)
    if box_csv is None:
        raise FileNotFoundError(f"no {BOX_FILE} under {raw_dir} (expected the NIH ChestX-ray14 release's layout)")
    available = find_pngs(raw_dir)
    wanted = box_image_names(box_csv)
    entry_csv = find_file(raw_dir, ENTRY_FILE)
    normal_names = normal_images(entry_csv if normals > 0 else None, available, set(wanted), int(normals), seed)
    files = [(available[name], "train") for name in [*wanted, *normal_names] if name in available]
    missing = [name for name in wanted if name not in available]
    if missing:
        log.warning("nih: %d image(s) named in %s are not under %s, e.g. %s", len(missing), box_csv.name, raw_dir,
                    missing[:3])
    if not files:
        raise FileNotFoundError(f"none of the images named in {box_csv} is under {raw_dir}")
    settings = ConvertSettings(size=size, square=square, bits=bits, png_compression=png_compression,
                               png_strategy=png_strategy)
    conv = convert_files(files, out_dir, settings, workers=workers, progress=progress, where=raw_dir)

    manifest = manifest_mod.read_manifest(conv.manifest)
    sizes = {r.image_id: None if pd.isna(r.orig_height) else (int(r.orig_height), int(r.orig_width))
             for r in manifest.itertuples()}
    for name in missing:  # reported per row by the parser (policy error: raise; else dropped and listed)
        sizes.pop(Path(name).stem, None)
    name = labels_name(int(normals))
    summary = new_summary(out_dir, conv, name, folds, seed)
    labels_path = summary.labels
    ok = manifest[manifest["status"] == "ok"]
    labels_fp = fingerprint(file_sha256(box_csv), ok.astype(str).to_dict("records"), name, bad_rows,
                            normal_names, NIH_CXR14.classes, RELEASE_SIZE,
                            file_sha256(entry_csv) if entry_csv is not None else None)
    report = out_dir / "labels" / f"{name}.problems.csv"
    resized = resized_images({k: v for k, v in sizes.items() if k in set(ok["image_id"])})
    if resized:
        example, factor = next(iter(resized.items()))
        log.info("nih: %d image(s) are not the release's %dx%d (e.g. %s, boxes scaled by %.3g x %.3g): their boxes "
                 "are scaled from the release's %d-px space to the image found", len(resized), RELEASE_SIZE,
                 RELEASE_SIZE, example, factor[0], factor[1], RELEASE_SIZE)
    table = parse_bbox_csv(box_csv, sizes, bad_rows, report_path=report)
    if stored(labels_path, lambda d: d["info"]["fingerprint"]) == labels_fp:
        summary.reused.append("labels")
        coco = json.loads(labels_path.read_text())
    else:
        boxes = table.rows.assign(num_readers=1)
        labeled = set(boxes["image_id"]) | {Path(n).stem for n in normal_names}
        info = {"description": f"NIH ChestX-ray14 boxes from {box_csv}", "source_csv": str(box_csv),
                "label_set": NIH_CXR14.name, "fusion": "none", "bad_rows": bad_rows,
                "dropped_rows": len(table.problems), "normal_images": [Path(n).stem for n in normal_names],
                "box_scale": resized, "exhaustive": False, "group_by": "patient", "fingerprint": labels_fp}
        coco = coco_mod.build_coco(boxes, manifest, info, labeled, categories=NIH_CXR14.categories())
        if entry_csv is not None:  # the image-level labels' unboxed findings: ignore regions
            boxed = set(zip(boxes["image_id"], boxes["class_id"].astype(int)))
            pairs = unboxed_findings(entry_csv, {img["image_key"]: img for img in coco["images"]}, boxed)
            coco["info"]["unboxed_findings"] = add_ignore_regions(coco, pairs)
            coco["info"]["exhaustive"] = None  # boxed findings + ignore regions: as exhaustive as the image labels
            coco["info"]["entry_csv"] = str(entry_csv)
        atomic.write_json(labels_path, coco, indent=None)
    summary.dropped_rows = len(table.problems)
    if table.problems and report.exists():
        summary.problems_report = report
    summary.train_images = len(coco["images"])
    counts = pd.Series([a["category_id"] for a in coco["annotations"] if not a.get("iscrowd")],
                       dtype=int).value_counts().sort_index()
    summary.boxes_per_class = {NIH_CXR14.classes[i]: int(n) for i, n in counts.items()}

    ensure_folds_and_stats(summary, folds, seed, group_by="patient", write_stats=lambda: stats_mod.write_stats(
        {**coco, "annotations": [a for a in coco["annotations"] if not a.get("iscrowd")]}, summary.stats_dir, table.rows, name=f"{out_dir.name} / {name}"))
    log.info("prepare (NIH): %d converted, %d reused, %d failed; %d images; labels %s", summary.converted,
             summary.skipped, summary.failed, summary.train_images, labels_path)
    return summary
