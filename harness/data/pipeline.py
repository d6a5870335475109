"""`prepare_dataset`: raw VinBigData layout → prepared dataset (PNGs, manifest, labels, folds, stats).

One plain function (the Hydra CLI wraps it). A rerun skips finished work: PNGs with a matching
sidecar are not decoded again, and labels / folds / stats are rewritten only when their inputs
(train.csv, manifest, settings) changed — recorded as a fingerprint inside each output.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import atomic
from harness.classes import class_names
from harness.data import coco as coco_mod
from harness.data import folds as folds_mod
from harness.data import fusion as fusion_mod
from harness.data import labels as labels_mod
from harness.data import manifest as manifest_mod
from harness.data import stats as stats_mod
from harness.data.prepare import ConvertSettings, convert_folders
from harness.digest import file_sha256

log = logging.getLogger(__name__)


@dataclass
class PrepareSummary:
    """Where everything went and what happened."""

    out_dir: Path
    manifest: Path
    image_dir: Path
    labels: Path
    folds: Path
    stats_dir: Path
    converted: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    dropped_rows: int = 0
    unlabeled: int = 0  # converted train DICOMs without any (kept) train.csv row: not in the labels
    problems_report: Path | None = None
    train_images: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # steps skipped because up to date

    @property
    def ok(self) -> bool:
        return self.failed == 0


def labels_name(fusion: str, iou: float, keep=None, drop=None) -> str:
    """labels/<name>.json: the fusion method, plus any non-default setting ("wbf", "nms-iou0.5", "wbf-keep-R8+R9")."""
    name = fusion
    if fusion != "none" and abs(iou - 0.4) > 1e-12:
        name += f"-iou{iou:g}"
    if keep:
        name += "-keep-" + "+".join(sorted(keep))
    if drop:
        name += "-drop-" + "+".join(sorted(drop))
    return name


def new_summary(out_dir: Path, conv, name: str, folds: int, seed: int) -> PrepareSummary:
    """The summary of a prepare run whose labels are `labels/<name>.json`, after the conversion `conv`."""
    return PrepareSummary(out_dir, conv.manifest, conv.image_dir, out_dir / "labels" / f"{name}.json",
                          out_dir / "folds" / folds_mod.folds_name(name, folds, seed), out_dir / "stats" / name,
                          conv.converted, conv.skipped, conv.failed, conv.failures)


def ensure_folds_and_stats(summary: PrepareSummary, folds: int, seed: int, write_stats, group_by: str | None = None) -> None:
    """(Re)write the fold file and the stats unless they were made from the current labels file;
    `write_stats()` writes the stats into summary.stats_dir."""
    labels_sha = file_sha256(summary.labels)
    if stored(summary.folds, lambda d: d["labels_sha256"]) == labels_sha:
        summary.reused.append("folds")
    else:
        written = folds_mod.make_folds(summary.labels, folds, seed, group_by=group_by)
        doc = json.loads(written.read_text())
        doc["labels_sha256"] = labels_sha  # extra key: lets a rerun see the folds are current
        atomic.write_json(written, doc)
    stamp = summary.stats_dir / ".labels_sha256"
    if stamp.is_file() and stamp.read_text().strip() == labels_sha and (summary.stats_dir / "class_stats.csv").is_file():
        summary.reused.append("stats")
    else:
        write_stats()
        atomic.write_text(stamp, labels_sha + "\n")


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stored(path: Path, getter) -> str | None:
    try:
        return getter(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def prepare_dataset(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, size: int | str = 1024, square: bool = False,
                    bits: int = 8, fusion: str = "wbf", fusion_iou: float = 0.4, readers_keep=None, readers_drop=None,
                    bad_rows: str = "error", folds: int = 5, seed: int = 0, workers: int | None = None,
                    progress: bool = True, exact: bool = False,
                    png_compression: int = ConvertSettings.png_compression,
                    png_strategy: str = ConvertSettings.png_strategy) -> PrepareSummary:
    """Convert DICOMs, validate + fuse labels, write COCO labels, folds and stats. See docs/architecture.md.

    Raises `labels.LabelError` (policy "error") if train.csv has bad rows; DICOMs that fail are
    reported in the summary/manifest and do not stop the run (check `summary.failed`). `exact`: the
    float pixel pipeline instead of the fast look-up table one (see harness.data.render).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    csv_path = raw_dir / "train.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found (expected the VinBigData layout: train.csv, train/, test/)")
    if fusion not in fusion_mod.METHODS:
        raise ValueError(f"fusion must be one of {fusion_mod.METHODS}, got {fusion!r}")
    settings = ConvertSettings(size=size, square=square, bits=bits, exact=exact,
                               png_compression=png_compression, png_strategy=png_strategy)
    conv = convert_folders(raw_dir, out_dir, settings, workers=workers, progress=progress)

    manifest = manifest_mod.read_manifest(conv.manifest)
    train = manifest[manifest["split"] == "train"]
    sizes = {r.image_id: None if pd.isna(r.orig_height) else (int(r.orig_height), int(r.orig_width))
             for r in train.itertuples()}
    name = labels_name(fusion, fusion_iou, readers_keep, readers_drop)
    summary = new_summary(out_dir, conv, name, folds, seed)
    labels_path = summary.labels

    ok_train = train[train["status"] == "ok"]
    labels_fp = fingerprint(file_sha256(csv_path), ok_train.astype(str).to_dict("records"), name, fusion,
                             fusion_iou, sorted(readers_keep or []), sorted(readers_drop or []), bad_rows)
    report = out_dir / "labels" / f"{name}.problems.csv"
    if stored(labels_path, lambda d: d["info"]["fingerprint"]) == labels_fp:
        summary.reused.append("labels")
        coco = json.loads(labels_path.read_text())
        table = None
        summary.dropped_rows = coco["info"].get("dropped_rows", 0)
    else:
        table = labels_mod.parse_train_csv(csv_path, sizes, bad_rows, report_path=report)
        fused = fusion_mod.fuse_readers(table.rows, fusion, fusion_iou, sizes={k: v for k, v in sizes.items() if v},
                                        readers_keep=readers_keep, readers_drop=readers_drop, progress=progress)
        labeled = set(fusion_mod.filter_readers(table.rows, readers_keep, readers_drop)["image_id"])
        unlabeled = sorted(set(ok_train["image_id"]) - labeled)
        if unlabeled:
            log.warning("prepare: %d converted train DICOMs have no (kept) train.csv rows and are left out of "
                        "the labels, e.g. %s", len(unlabeled), unlabeled[:3])
        info = {"description": f"VinBigData-format labels from {csv_path}", "source_csv": str(csv_path),
                "fusion": fusion, "iou_thr": fusion_iou, "skip_box_thr": 0.0,
                "readers_keep": list(readers_keep or []), "readers_drop": list(readers_drop or []),
                "bad_rows": bad_rows, "dropped_rows": len(table.problems), "unlabeled_images": unlabeled,
                "fingerprint": labels_fp}
        coco = coco_mod.build_coco(fused, manifest, info, labeled)
        atomic.write_json(labels_path, coco, indent=None)
        summary.dropped_rows = len(table.problems)
    if summary.dropped_rows and report.exists():
        summary.problems_report = report
    summary.train_images = len(coco["images"])
    summary.unlabeled = len(coco["info"].get("unlabeled_images", []))
    counts = fusion_mod.counts_per_class(pd.DataFrame({"class_id": [a["category_id"] for a in coco["annotations"]]}))
    classes = class_names(coco)
    summary.boxes_per_class = {classes[i]: int(n) for i, n in counts.items()}

    def write_stats() -> None:
        rows = (table or labels_mod.parse_train_csv(csv_path, sizes, "drop-and-report")).rows
        stats_mod.write_stats(coco, summary.stats_dir, fusion_mod.filter_readers(rows, readers_keep, readers_drop),
                              name=f"{out_dir.name} / {name}")

    ensure_folds_and_stats(summary, folds, seed, write_stats)
    log.info("prepare: %d converted, %d reused, %d failed; %d train images; labels %s",
             summary.converted, summary.skipped, summary.failed, summary.train_images, labels_path)
    return summary

