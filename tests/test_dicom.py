"""DICOM → PNG on real files (pydicom-data's NEMA WG04 chest CR, MONOCHROME1, 15 bits) and broken ones."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from harness.data import dicom, manifest, render
from harness.data.prepare import ConvertSettings, convert_folders
from testdata import require_pydicom_data

DATA = Path(pydicom.__file__).parent.parent / "data_store" / "data"
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped with pydicom itself


@pytest.fixture(autouse=True, scope="module")
def _pydicom_data():
    """pydicom-data is a test dependency: fail naming it, never skip."""
    require_pydicom_data("RG1_UNCR.dcm")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """RG1 (chest CR, MONOCHROME1) uncompressed + JPEG 2000 lossless/lossy, plus broken files."""
    raw = tmp_path_factory.mktemp("raw")
    (raw / "train").mkdir()
    for name in ("RG1_UNCR", "RG1_J2KR", "RG1_J2KI", "emri_small_RLE", "emri_small_jpeg_ls_lossless",
                 "JPGLosslessP14SV1_1s_1f_8b"):
        shutil.copy(DATA / f"{name}.dcm", raw / "train" / f"{name}.dicom")
    # 12-bit JPEG Extended that no installed plugin decodes (libjpeg rejects its scan header)
    shutil.copy(TEST_FILES / "JPEG-lossy.dcm", raw / "train" / "undecodable.dicom")
    good = (DATA / "RG1_UNCR.dcm").read_bytes()
    (raw / "train" / "truncated.dicom").write_bytes(good[: len(good) // 2])
    (raw / "train" / "notdicom.dicom").write_bytes(b"this is a text file, not a DICOM\n" * 20)
    ds = pydicom.dcmread(DATA / "RG1_UNCR.dcm")
    del ds.PixelData
    ds.save_as(raw / "train" / "nopixels.dicom")
    out = tmp_path_factory.mktemp("out")
    summary = convert_folders(raw, out, ConvertSettings(size=512), workers=2, progress=False)
    return raw, out, summary


def test_monochrome1_is_inverted():
    ds = pydicom.dcmread(DATA / "RG1_UNCR.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15
    raw = ds.pixel_array.astype(np.float32)
    img = dicom.read_dicom(DATA / "RG1_UNCR.dcm").pixels
    assert img.shape == raw.shape
    bright_raw = raw > np.percentile(raw, 95)
    dark_raw = raw < np.percentile(raw, 5)
    # raw high values are dark on a MONOCHROME1 display: they must be dark in the output
    assert img[bright_raw].mean() < 0.3 < 0.7 < img[dark_raw].mean()
    assert np.corrcoef(raw.ravel()[::97], img.ravel()[::97])[0, 1] < -0.5


def test_lossless_jpeg2000_equals_uncompressed(converted):
    _, out, _ = converted
    a = cv2.imread(str(out / "images/512/RG1_UNCR.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(out / "images/512/RG1_J2KR.png"), cv2.IMREAD_UNCHANGED)
    c = cv2.imread(str(out / "images/512/RG1_J2KI.png"), cv2.IMREAD_UNCHANGED)
    assert a.dtype == np.uint8 and a.shape == (512, round(1841 * 512 / 1955))
    # 512 px is under half size: the fast path decodes the J2K one wavelet level down (close, not equal) ...
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.6
    # ... while decoded in full, lossless JPEG 2000 gives exactly the uncompressed pixels
    exact = [render.render(DATA / f"{n}.dcm", 512, exact=True).pixels for n in ("RG1_UNCR", "RG1_J2KR")]
    assert np.array_equal(*exact)
    assert not np.array_equal(a, c)  # lossy differs ...
    assert np.abs(a.astype(int) - c.astype(int)).mean() < 3  # ... but only slightly


def test_manifest_rows_and_failures(converted):
    _, out, summary = converted
    assert summary.converted == 6 and summary.failed == 4
    m = manifest.read_manifest(summary.manifest).set_index("image_id")
    row = m.loc["RG1_J2KR"]
    assert row.status == "ok" and (row.orig_height, row.orig_width) == (1955, 1841)
    assert (row.height, row.width) == (512, 482)
    assert row.scale_x == pytest.approx(482 / 1841) and row.scale_y == pytest.approx(512 / 1955)
    assert row.photometric == "MONOCHROME1" and row.bits_stored == 15
    assert "JPEG 2000" in row.transfer_syntax and row.png == "images/512/RG1_J2KR.png"
    for name, syntax in (("emri_small_RLE", "RLE Lossless"), ("emri_small_jpeg_ls_lossless", "JPEG-LS Lossless"),
                         ("JPGLosslessP14SV1_1s_1f_8b", "JPEG Lossless")):
        assert m.loc[name].status == "ok" and m.loc[name].transfer_syntax.startswith(syntax), name
    assert m.loc["truncated"].status == "failed" and "trunc" in m.loc["truncated"].reason
    assert m.loc["notdicom"].status == "failed" and m.loc["notdicom"].reason.startswith("not DICOM")
    assert m.loc["nopixels"].status == "failed" and m.loc["nopixels"].reason.startswith("no pixel data")
    assert m.loc["undecodable"].status == "failed"
    assert m.loc["undecodable"].reason.startswith("cannot decode JPEG Extended")
    assert m.loc["undecodable"].orig_height == 1024  # header facts still recorded
    assert {name for name, _ in summary.failures} == {"truncated", "notdicom", "nopixels", "undecodable"}
    # no partial outputs: exactly the good PNGs, no temp files
    files = sorted(p.name for p in (out / "images/512").iterdir() if p.is_file())
    assert files == sorted(f"{n}.png" for n in ("RG1_UNCR", "RG1_J2KR", "RG1_J2KI", "emri_small_RLE",
                                                 "emri_small_jpeg_ls_lossless", "JPGLosslessP14SV1_1s_1f_8b"))


def test_rerun_skips_converted(converted):
    raw, out, _ = converted
    png = out / "images/512/RG1_UNCR.png"
    mtime = png.stat().st_mtime_ns
    again = convert_folders(raw, out, ConvertSettings(size=512), workers=0, progress=False)
    assert (again.converted, again.skipped, again.failed) == (0, 6, 4)
    assert png.stat().st_mtime_ns == mtime
    first = manifest.read_manifest(out / "manifest.csv")
    assert len(first) == 10 and (first.status == "ok").sum() == 6


def test_square_16bit_and_orig_sizes(tmp_path):
    raw = tmp_path / "raw"
    (raw / "test").mkdir(parents=True)
    shutil.copy(DATA / "emri_small_jpeg_2k_lossless.dcm", raw / "test" / "a.dicom")
    s = convert_folders(raw, tmp_path / "o", ConvertSettings(size=100, square=True, bits=16), workers=0, progress=False)
    img = cv2.imread(str(s.image_dir / "a.png"), cv2.IMREAD_UNCHANGED)
    assert s.image_dir.name == "100-sq-16bit" and img.dtype == np.uint16 and img.shape == (100, 100)
    assert img.max() > 60000 and img.min() < 5000  # full 16-bit range used
    assert dicom.output_shape(1955, 1841, "orig", False) == (1955, 1841)
    assert dicom.output_shape(300, 600, 1024, False) == (512, 1024)


def test_png_write_failing_half_way_leaves_no_png_temp_or_sidecar(tmp_path, monkeypatch):
    """Atomic PNG output: a writer that dies after writing half the file must leave nothing behind."""
    from harness.data import prepare

    real_imwrite = cv2.imwrite

    def half_then_crash(path, pixels, *args):
        assert real_imwrite(path, pixels, *args)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])  # half a PNG on disk, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(prepare.cv2, "imwrite", half_then_crash)
    out = tmp_path / "out"
    dst = out / "images" / "x.png"
    dst.parent.mkdir(parents=True)
    row = prepare.convert_dicom(DATA / "RG1_UNCR.dcm", dst, "train", ConvertSettings(size=128), out)
    assert row["status"] != "ok" and "disk full" in row["reason"]
    assert sorted(p.name for p in dst.parent.iterdir()) == [], "a PNG, temp file or sidecar survived"
    assert not manifest.sidecar_path(dst).exists()
    # the same call without the failure writes the PNG and its sidecar
    monkeypatch.setattr(prepare.cv2, "imwrite", real_imwrite)
    assert prepare.convert_dicom(DATA / "RG1_UNCR.dcm", dst, "train", ConvertSettings(size=128), out)["status"] == "ok"
    assert dst.is_file() and manifest.sidecar_path(dst).is_file()
