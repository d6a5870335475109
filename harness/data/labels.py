"""Parse and validate a VinBigData train.csv; every problem names its CSV line.

The CSV is read line by line (not with pandas' parser) so a malformed row is reported with its line
number instead of shifting columns or failing the whole file. Policy "error" raises one
`LabelError` listing every bad row; "drop-and-report" skips them, logs them and writes them to a
report file — never silently.
"""
from __future__ import annotations

import csv
import gzip
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness import atomic
from harness.classes import CLASS_ID, CLASSES, NO_FINDING_ID, NO_FINDING_NAME

log = logging.getLogger(__name__)
COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
POLICIES = ("error", "drop-and-report")
MAX_LISTED = 40


class LabelError(ValueError):
    """train.csv has bad rows (the message lists them, by CSV line number)."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]):
        lines = [f"  line {line}: {why}" for line, why in problems[:MAX_LISTED]]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{path}: {len(problems)} bad row(s); fix them, or leave them out (listed in the "
                         "dataset's stats) with data.bad_rows=drop-and-report:\n" + "\n".join(lines) + more)
        self.problems = problems


@dataclass
class LabelTable:
    """Valid rows of train.csv. `rows`: image_id, class_id, rad_id, x_min..y_max (DICOM px; NaN for
    "No finding"), line. `problems`: (line, reason) of dropped rows."""

    rows: pd.DataFrame
    problems: list[tuple[int, str]] = field(default_factory=list)
    report: Path | None = None

    @property
    def findings(self) -> pd.DataFrame:
        return self.rows[self.rows["class_id"] != NO_FINDING_ID]

    def image_ids(self) -> list[str]:
        return sorted(self.rows["image_id"].unique())


def _number(text: str) -> float:
    text = text.strip()
    return math.nan if text == "" or text.lower() == "nan" else float(text)


def _check_row(cells: list[str], sizes: dict | None) -> tuple[dict | None, str | None]:
    """One data row → (record, None) or (None, reason)."""
    if len(cells) != len(COLUMNS):
        return None, f"expected {len(COLUMNS)} columns, found {len(cells)}"
    image_id, name, cid_text, rad_id = (c.strip() for c in cells[:4])
    if not image_id:
        return None, "empty image_id"
    if not rad_id:
        return None, "empty rad_id"
    try:
        cid = int(float(cid_text))
        if str(cid) != cid_text.strip() and float(cid_text) != cid:
            raise ValueError
    except ValueError:
        return None, f"class_id {cid_text!r} is not an integer"
    if not 0 <= cid <= NO_FINDING_ID:
        return None, f"unknown class_id {cid} (valid: 0-{NO_FINDING_ID})"
    expected = NO_FINDING_NAME if cid == NO_FINDING_ID else CLASSES[cid]
    if name not in CLASS_ID and name != NO_FINDING_NAME:
        return None, f"unknown class_name {name!r}"
    if name != expected:
        return None, f"class_name {name!r} does not match class_id {cid} ({expected!r})"
    try:
        x1, y1, x2, y2 = (_number(c) for c in cells[4:])
    except ValueError:
        return None, f"non-numeric coordinate in {cells[4:]}"
    record = {"image_id": image_id, "class_id": cid, "rad_id": rad_id,
              "x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2}
    if cid == NO_FINDING_ID:  # coordinates are empty (or the 0,0,1,1 dummy): ignored
        record.update(x_min=math.nan, y_min=math.nan, x_max=math.nan, y_max=math.nan)
        return record, None
    if any(math.isnan(v) or math.isinf(v) for v in (x1, y1, x2, y2)):
        return None, f"finding {name!r} without (finite) coordinates"
    if x2 <= x1 or y2 <= y1:
        return None, f"reversed or empty box ({x1}, {y1}, {x2}, {y2})"
    if min(x1, y1) < 0:
        return None, f"negative coordinate in box ({x1}, {y1}, {x2}, {y2})"
    if sizes is not None:
        if image_id not in sizes:
            return None, f"image {image_id} has no DICOM in the manifest"
        h, w = sizes[image_id] or (math.inf, math.inf)  # None: size unknown (DICOM failed to read)
        if x2 > w or y2 > h:
            return None, f"box ({x1}, {y1}, {x2}, {y2}) outside the image ({w}x{h})"
    return record, None


def parse_train_csv(path: str | os.PathLike, sizes: dict[str, tuple[int, int] | None] | None = None,
                    policy: str = "error", report_path: str | os.PathLike | None = None) -> LabelTable:
    """Read and validate `path`.

    `sizes`: {image_id: (orig_h, orig_w) or None if unknown} from the manifest; when given, boxes
    must lie inside the image and every image must be in it. `policy`: "error" or "drop-and-report" (bad rows are logged and,
    when `report_path` is given, written there).
    """
    if policy not in POLICIES:
        raise ValueError(f"bad_rows policy must be one of {POLICIES}, got {policy!r}")
    path = Path(path)
    records, problems = [], []
    opener = gzip.open if path.suffix == ".gz" else open  # the real csv ships gzipped in some packages
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(COLUMNS):
            raise LabelError(path, [(1, f"header {header} is not {list(COLUMNS)}")])
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            record, why = _check_row(cells, sizes)
            if why:
                problems.append((line, why))
            else:
                record["line"] = line
                records.append(record)
    rows = pd.DataFrame(records, columns=[*("image_id", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"), "line"])
    rows["class_id"] = rows["class_id"].astype(int)
    rows["line"] = rows["line"].astype(int)
    # a reader who wrote both findings and "No finding" on one image contradicts themself
    normal = (rows["class_id"] == NO_FINDING_ID).astype(int)
    by_reader = normal.groupby([rows["image_id"], rows["rad_id"]])
    mixed = (by_reader.transform("max") == 1) & (by_reader.transform("min") == 0)
    for rec in rows[mixed].itertuples():
        problems.append((rec.line, f"reader {rec.rad_id} wrote both findings and 'No finding' on image {rec.image_id}"))
    rows = rows[~mixed].reset_index(drop=True)
    problems.sort()
    if problems and policy == "error":
        raise LabelError(path, problems)
    table = LabelTable(rows, problems)
    if problems:
        log.warning("%s: dropped %d bad row(s), e.g. line %d: %s", path, len(problems), *problems[0])
        if report_path is not None:
            table.report = write_problem_report(problems, report_path, path)
    return table


def write_problem_report(problems: list[tuple[int, str]], report_path: str | os.PathLike, source: Path) -> Path:
    """CSV of dropped rows: line, reason (with the source file in the header comment)."""
    lines = [f"# bad rows dropped from {source}", "line,reason"]
    lines += [f"{line},\"{why.replace(chr(34), chr(39))}\"" for line, why in problems]
    atomic.write_text(report_path, "\n".join(lines) + "\n")
    return Path(report_path)
