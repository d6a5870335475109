"""train.csv parsing/validation: every bad row is named by its CSV line; policies error / drop-and-report."""
from __future__ import annotations

import pytest

from harness.data.labels import LabelError, parse_train_csv

HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
GOOD = [
    "img1,Cardiomegaly,3,R8,10,60,90,90",  # line 2
    "img1,Nodule/Mass,8,R9,20,20,30,30",  # line 3
    "img2,No finding,14,R1,,,,",  # line 4
]
BAD = {
    "img1,Cardiomegaly,3,R10,10,60,90": "expected 8 columns",
    "img1,Heart thing,3,R10,10,60,90,90": "unknown class_name",
    "img1,Cardiomegaly,4,R10,10,60,90,90": "does not match class_id 4",
    "img1,Cardiomegaly,99,R10,10,60,90,90": "unknown class_id 99",
    "img1,Cardiomegaly,three,R10,10,60,90,90": "not an integer",
    "img1,Cardiomegaly,3,R10,10,abc,90,90": "non-numeric",
    "img1,Cardiomegaly,3,R10,,,,": "without (finite) coordinates",
    "img1,Cardiomegaly,3,R10,90,60,10,90": "reversed or empty box",
    "img1,Cardiomegaly,3,R10,10,60,150,90": "outside the image",
    "img9,Cardiomegaly,3,R10,10,60,20,90": "no DICOM in the manifest",
    "img2,Nodule/Mass,8,R1,20,20,30,30": "both findings and 'No finding'",
}
SIZES = {"img1": (100, 120), "img2": (100, 100)}


def _write(tmp_path, lines):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    return path


def test_valid_rows_parse(tmp_path):
    table = parse_train_csv(_write(tmp_path, GOOD), SIZES)
    assert len(table.rows) == 3 and len(table.findings) == 2 and not table.problems
    assert table.rows.loc[0, ["x_min", "y_min", "x_max", "y_max"]].tolist() == [10, 60, 90, 90]
    assert table.image_ids() == ["img1", "img2"]


def test_every_bad_row_is_named_by_line(tmp_path):
    path = _write(tmp_path, GOOD + list(BAD))
    with pytest.raises(LabelError) as err:
        parse_train_csv(path, SIZES)
    text = str(err.value)
    lines = dict(err.value.problems)
    assert len(err.value.problems) == len(BAD) + 1  # + the "No finding" row of the mixed reader (line 4)
    for offset, (row, why) in enumerate(BAD.items()):
        line = 2 + len(GOOD) + offset
        assert why in lines[line], (row, lines[line])
        assert f"line {line}:" in text
    assert "both findings" in lines[4]


def test_drop_and_report_keeps_good_rows(tmp_path, caplog):
    path = _write(tmp_path, GOOD + list(BAD))
    report = tmp_path / "problems.csv"
    table = parse_train_csv(path, SIZES, policy="drop-and-report", report_path=report)
    assert sorted(table.rows["line"]) == [2, 3]  # img2's normal row went with the contradicting finding
    assert len(table.problems) == len(BAD) + 1
    text = report.read_text()
    assert text.count("\n") == len(BAD) + 3 and "reversed or empty box" in text
    assert "dropped" in caplog.text


def test_without_sizes_bounds_are_not_checked(tmp_path):
    table = parse_train_csv(_write(tmp_path, ["img1,Cardiomegaly,3,R8,10,60,150,90"]))
    assert len(table.rows) == 1


def test_bad_header_and_policy(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(LabelError, match="line 1"):
        parse_train_csv(path)
    with pytest.raises(ValueError, match="policy"):
        parse_train_csv(path, policy="ignore")
