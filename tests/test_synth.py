"""The synthetic VinBigData-format dataset: layout, determinism, reader realism, DICOM variety, lesions."""
from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter, defaultdict

import numpy as np
import pydicom
import pytest

from harness.classes import NUM_CLASSES
from harness.data.labels import COLUMNS, parse_train_csv
from harness.synth import Preset, anatomy, generate, lesions
from testdata import require_real_csv


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "synth.json":
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, progress=False)


def test_layout_and_csv(tiny):
    train = sorted(p.stem for p in (tiny / "train").glob("*.dicom"))
    test = sorted(p.stem for p in (tiny / "test").glob("*.dicom"))
    assert len(train) == 40 and len(test) == 8
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in train + test)
    with open(tiny / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS
    assert {r[0] for r in rows[1:]} == set(train) and not set(test) & {r[0] for r in rows[1:]}
    sizes = {}
    for i in train:
        ds = pydicom.dcmread(tiny / "train" / f"{i}.dicom", stop_before_pixels=True)
        sizes[i] = (int(ds.Rows), int(ds.Columns))
        assert 256 <= max(sizes[i]) <= 512
    table = parse_train_csv(tiny / "train.csv", sizes)  # every row valid, every box inside its image
    assert not table.problems and table.findings["class_id"].isin([0, 3, 10, 11]).all()


def test_readers(tiny):
    table = parse_train_csv(tiny / "train.csv")
    per_image = table.rows.groupby("image_id")
    assert (per_image["rad_id"].nunique() == 3).all()
    normal = per_image["class_id"].agg(lambda c: set(c == 14))
    assert all(len(v) == 1 for v in normal)  # all three readers agree on normal vs abnormal
    n_abnormal = sum(v == {False} for v in normal)
    assert 0.4 * 40 < n_abnormal < 0.95 * 40
    findings = table.findings
    top3 = [r for r, _ in Counter(findings["rad_id"]).most_common(3)]
    assert set(top3) == {"R8", "R9", "R10"}
    # readers disagree: some (image, class) findings are marked by fewer than 3 readers
    marks = findings.groupby(["image_id", "class_id"])["rad_id"].nunique()
    assert (marks < 3).any() and (marks == 3).any()


def test_dicom_variety(tiny):
    seen = defaultdict(set)
    for p in sorted((tiny / "train").glob("*.dicom")) + sorted((tiny / "test").glob("*.dicom")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        seen["photometric"].add(ds.PhotometricInterpretation)
        seen["bits"].add(int(ds.BitsStored))
        seen["syntax"].add(ds.file_meta.TransferSyntaxUID.name)
        seen["aspect"].add(round(ds.Rows / ds.Columns, 1))
        assert "WindowCenter" in ds and "WindowWidth" in ds
    assert seen["photometric"] == {"MONOCHROME1", "MONOCHROME2"}
    assert seen["bits"] <= {12, 14, 15, 16} and len(seen["bits"]) >= 3
    assert any("JPEG 2000" in s for s in seen["syntax"]) and any("RLE" in s for s in seen["syntax"])
    assert len(seen["aspect"]) >= 3


def test_deterministic_from_seed(tiny, tmp_path):
    again = generate(tmp_path / "again", "tiny", seed=0, progress=False)
    assert _digest(again) == _digest(tiny)
    other = generate(tmp_path / "other", Preset(6, 1, 128, 160, 0.5, None), seed=1, real_templates=False,
                     progress=False)
    assert (other / "train.csv").read_text() != (tiny / "train.csv").read_text()
    stamp_mtime = (again / "synth.json").stat().st_mtime_ns
    generate(again, "tiny", seed=0, progress=False)  # rerun: reused, not rewritten
    assert (again / "synth.json").stat().st_mtime_ns == stamp_mtime


def test_builtin_readers_without_real_csv(tmp_path):
    out = generate(tmp_path, Preset(16, 0, 128, 192, 0.9, None), seed=3, real_templates=False, progress=False)
    table = parse_train_csv(out / "train.csv")
    assert (table.rows.groupby("image_id")["rad_id"].nunique() == 3).all()
    assert table.findings["class_id"].nunique() >= 4


@pytest.mark.parametrize("cid", range(NUM_CLASSES))
def test_lesion_is_drawn_inside_its_box(cid):
    rng = np.random.default_rng(cid)
    h, w = 320, 280
    chest = anatomy.chest(h, w, rng)
    before = chest.image.copy()
    box = lesions.sample_box(cid, h, w, rng)
    lesions.draw(chest, cid, box, rng)
    diff = np.abs(chest.image - before)
    x1, y1, x2, y2 = box
    mx, my = 0.25 * (x2 - x1) + 3, 0.25 * (y2 - y1) + 3
    inside = diff[int(max(0, y1 - my)):int(y2 + my) + 1, int(max(0, x1 - mx)):int(x2 + mx) + 1].sum()
    assert diff.sum() > 0.5 and inside / diff.sum() > 0.85, (cid, inside / max(diff.sum(), 1e-9))


def test_real_templates_used_when_installed(tiny):
    import json
    stamp = json.loads((tiny / "synth.json").read_text())
    require_real_csv()
    assert stamp["templates"].endswith("vinbigdata-train.csv.gz")
