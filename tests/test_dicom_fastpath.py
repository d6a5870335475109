"""The fast pixel path (look-up table, reduced JPEG 2000 decoding) against the exact float path.

Corpus: pydicom-data's real chest CRs (RG1, RG3) in all their transfer syntaxes, other real files that
cover signed pixel data, RescaleSlope != 1, a modality LUT, a VOI LUT sequence, 8/1-bit data,
multi-frame and 32-bit (fallback) files, plus synthetic variants (MONOCHROME1/2 × uncompressed /
JPEG 2000 / RLE, sigmoid and linear-exact windows). No network; a missing data package fails.
"""
from __future__ import annotations

import gc
import mmap
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from harness.data import dicom, j2k, lut, manifest, pixel_map, render
from harness.data.prepare import ConvertSettings, convert_folders
from harness.synth import anatomy, dicomio

DATA = Path(pydicom.__file__).parent.parent / "data_store" / "data"  # pydicom-data
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped with pydicom itself

CHEST_CR = [f"RG{n}_{s}" for n in (1, 3) for s in ("UNCR", "UNCI", "J2KR", "J2KI")]
REAL = [DATA / f"{name}.dcm" for name in CHEST_CR + [
    "MR2_UNCR", "MR2_J2KR", "MR2_J2KI",  # RescaleSlope 3.77
    "693_UNCR", "693_J2KR",  # signed, intercept -1024
    "mlut_18", "vlut_04",  # modality LUT sequence (signed), VOI LUT sequence
    "JPGLosslessP14SV1_1s_1f_8b", "emri_small_RLE", "emri_small_jpeg_ls_lossless", "liver",  # 8-bit, multi-frame, 1-bit
]] + [TEST_FILES / f"{name}.dcm" for name in (
    "CT_small", "MR_small", "MR_small_bigendian", "MR_small_jp2klossless", "JPEG2000", "J2K_pixelrep_mismatch", "examples_overlay",
    "rtdose_1frame",  # 32-bit stored values: the exact fallback
)]


def test_corpus_is_installed():
    missing = [p.name for p in REAL if not p.is_file()]
    assert not missing, f"pydicom-data / pydicom test files missing: {missing}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> list[Path]:
    """Synthetic files: every photometric × syntax pair, plus sigmoid / linear-exact VOI functions."""
    folder = tmp_path_factory.mktemp("synthetic")
    image = anatomy.finish(anatomy.chest(300, 260, np.random.default_rng(0)).image, np.random.default_rng(1))
    wanted = {(ph, sx) for ph in ("MONOCHROME1", "MONOCHROME2") for sx in ("raw", "j2k", "rle")}
    files, seed = [], 0
    while wanted and seed < 500:
        data, variety = dicomio.encode(image, f"{seed:032x}", np.random.default_rng(seed))
        key = (variety["photometric"], variety["syntax"])
        if key in wanted:
            wanted.discard(key)
            files.append(folder / f"synth_{key[0]}_{key[1]}.dcm")
            files[-1].write_bytes(data)
        seed += 1
    assert not wanted, f"no seed gave {wanted}"
    for function in ("SIGMOID", "LINEAR_EXACT"):
        ds = pydicom.dcmread(DATA / "RG3_UNCR.dcm")
        ds.VOILUTFunction = function
        files.append(folder / f"RG3_{function}.dcm")
        ds.save_as(files[-1])
    files.append(folder / "RG3_zigzag_voi_lut.dcm")  # a non-monotone VOI LUT sequence
    _zigzag_voi_lut(pydicom.dcmread(DATA / "RG3_UNCR.dcm")).save_as(files[-1])
    return files


def _zigzag_voi_lut(ds):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new("LUTDescriptor", "US", [1024, 0, 16])
    item.add_new("LUTData", "US", [(i * 37) % 4096 for i in range(1024)])
    ds.VOILUTSequence = [item]
    del ds.WindowCenter, ds.WindowWidth
    return ds


def _corpus(synthetic):
    return REAL + synthetic


@pytest.mark.parametrize("size,bits", [("orig", 8), (1024, 8), (1024, 16)])
def test_fast_matches_exact(synthetic, size, bits):
    """Pixelwise: identical before resizing ("orig"), ≤ 1 grey level after (8- and 16-bit output)."""
    checked = 0
    for path in _corpus(synthetic):
        exact = render.render(path, size, bits=bits, exact=True)
        fast = render.render(path, size, bits=bits)
        assert fast.method in ("lut", "exact-fallback"), (path.name, fast.method)  # 1024 > half size: no J2K reduce
        assert fast.pixels.dtype == exact.pixels.dtype == (np.uint8 if bits == 8 else np.uint16)
        assert fast.pixels.shape == exact.pixels.shape, path.name
        assert (fast.orig_height, fast.orig_width) == (exact.orig_height, exact.orig_width)
        diff = np.abs(fast.pixels.astype(np.int64) - exact.pixels.astype(np.int64)).max()
        assert diff <= (0 if size == "orig" else 1), (path.name, size, bits, diff)
        checked += 1
    assert checked == len(REAL) + 9


def test_extremes_come_from_values_present_only():
    """A non-monotone table: a spike at a stored value no pixel has must not set the min-max."""
    arr = np.array([[0, 5], [10, 5]], np.uint16)
    stored = np.arange(0, 11).astype(np.uint16)
    values = np.linspace(0, 1, 11, dtype=np.float32)
    values[3] = 9.0  # absent from the image
    assert lut._extremes(values, lut.table_index(arr), stored) == (0.0, 1.0)
    assert lut._extremes(values[:3], lut.table_index(np.array([[0, 2]], np.uint16)), stored[:3]) == (0.0, float(values[2]))


def test_fast_path_is_the_default_and_never_windows_the_image(monkeypatch):
    """exact=False (the default) evaluates modality/VOI only on the table of stored values."""
    import pydicom.pixels

    sizes = []
    for name in ("apply_voi_lut", "apply_modality_lut"):
        real = getattr(pydicom.pixels, name)
        monkeypatch.setattr(pydicom.pixels, name, lambda arr, ds, _f=real, **kw: sizes.append(arr.size) or _f(arr, ds, **kw))
    path = DATA / "MR2_UNCR.dcm"  # rescale slope 3.77 and a window: both functions are needed
    pixels = 1024 * 1024
    assert ConvertSettings().exact is False
    assert render.render(path, 512).method == "lut"
    assert sizes and max(sizes) <= 65536 < pixels
    sizes.clear()
    assert render.render(path, 512, exact=True).method == "exact"
    assert pixels in sizes


def _dirty_high_bits(name: str, tmp_path: Path) -> Path:
    """`name` with garbage in the bits above BitsStored of every 7th pixel (PS3.5 8.1.1 allows it)."""
    ds = pydicom.dcmread(DATA / f"{name}.dcm")
    raw = np.frombuffer(ds.PixelData, np.uint16).copy()
    raw[::7] |= np.uint16((0xFFFF << int(ds.BitsStored)) & 0xFFFF)
    ds.PixelData = raw.tobytes()
    path = tmp_path / f"{name}_dirty.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("name", ["RG1_UNCR", "693_UNCR"])  # unsigned 15 of 16 bits; signed 14 of 16
def test_uncompressed_view_and_unused_bits(name, tmp_path):
    """Uncompressed pixels are read as a view of the file's buffer (no copy) when the bits above
    BitsStored hold nothing; garbage there is cleared as pydicom clears it, so the output is the same."""
    clean = pydicom.dcmread(DATA / f"{name}.dcm")
    view, _ = dicom.decode_view(clean, name)
    assert not view.flags.writeable and np.shares_memory(view, np.frombuffer(clean.PixelData, np.uint8))
    assert np.array_equal(view, clean.pixel_array)
    dirty_path = _dirty_high_bits(name, tmp_path)
    dirty = pydicom.dcmread(dirty_path)
    corrected, _ = dicom.decode_view(dirty, dirty_path)
    assert corrected.flags.writeable and np.array_equal(corrected, clean.pixel_array)
    for size in ("orig", 512):
        fast = render.render(dirty_path, size)
        assert fast.method == "lut"
        assert np.array_equal(fast.pixels, render.render(DATA / f"{name}.dcm", size).pixels)
        exact = render.render(dirty_path, size, exact=True).pixels.astype(np.int64)
        assert np.abs(fast.pixels - exact).max() <= (0 if size == "orig" else 1)


@pytest.mark.parametrize("name", ["RG1_UNCR", "RG1_UNCI", "MR2_UNCR"])  # explicit / implicit VR little endian
def test_large_uncompressed_pixels_are_memory_mapped(name):
    """The fast path reads large uncompressed pixel data as a read-only memory map of the file, not a
    copy: the decoded view lies in the map, and equals what the ordinary read decodes."""
    mapped = dicom.open_dicom(DATA / f"{name}.dcm", mapped=True)
    assert isinstance(mapped.PixelData, memoryview) and isinstance(mapped.PixelData.obj, mmap.mmap)
    view, _ = dicom.decode_view(mapped, name)
    assert not view.flags.writeable and np.shares_memory(view, np.frombuffer(mapped.PixelData, np.uint8))
    ordinary = dicom.open_dicom(DATA / f"{name}.dcm")
    assert isinstance(ordinary.PixelData, bytes)
    assert np.array_equal(view, dicom.decode_view(ordinary, name)[0])
    assert np.array_equal(view, ordinary.pixel_array)


def test_fast_path_renders_from_the_map(monkeypatch):
    """`render` (the fast path) reads through the map, and its output is the same as from a copy."""
    datasets = []

    def recording(path):
        datasets.append(pixel_map_read(path))
        return datasets[-1]

    pixel_map_read = pixel_map.read_mapped
    monkeypatch.setattr(pixel_map, "read_mapped", recording)
    fast = render.render(DATA / "RG3_UNCR.dcm", 512)
    assert len(datasets) == 1 and isinstance(datasets[0].PixelData.obj, mmap.mmap)
    monkeypatch.setattr(pixel_map, "read_mapped", lambda path: None)  # the ordinary read
    assert np.array_equal(fast.pixels, render.render(DATA / "RG3_UNCR.dcm", 512).pixels)


def test_what_is_not_memory_mapped(tmp_path):
    """Small pixel data (below pixel_map.MIN_BYTES), compressed and big-endian files are read the
    ordinary way, and give the same dataset as an ordinary read."""
    for path in (DATA / "693_UNCR.dcm", DATA / "RG1_J2KR.dcm", TEST_FILES / "MR_small_bigendian.dcm"):
        mapped, ordinary = dicom.open_dicom(path, mapped=True), dicom.open_dicom(path)
        assert isinstance(mapped.PixelData, bytes) and mapped.PixelData == ordinary.PixelData, path.name
    assert len(pydicom.dcmread(DATA / "693_UNCR.dcm").PixelData) < pixel_map.MIN_BYTES


def test_truncated_uncompressed_file_reported_as_before(tmp_path):
    """A file shorter than its pixel data element claims is not mapped (a map would fault past the
    end): the ordinary read reports it, with the same reason, and the rest of the batch converts."""
    good = (DATA / "RG1_UNCR.dcm").read_bytes()
    (tmp_path / "train").mkdir()
    cut = tmp_path / "train" / "cut.dicom"
    cut.write_bytes(good[: len(good) * 2 // 3])
    shutil.copy(DATA / "RG3_UNCR.dcm", tmp_path / "train" / "fine.dicom")
    with pytest.raises(dicom.DicomError, match="cut.dicom") as mapped_error:
        dicom.decode_view(dicom.open_dicom(cut, mapped=True), cut)
    with pytest.raises(dicom.DicomError) as ordinary_error:
        dicom.decode_view(dicom.open_dicom(cut), cut)
    assert mapped_error.value.reason == ordinary_error.value.reason == "truncated pixel data"
    s = convert_folders(tmp_path, tmp_path / "out", ConvertSettings(size=256), workers=0, progress=False)
    assert (s.converted, s.failed) == (1, 1) and s.failures[0][0] == "cut"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open file descriptors through /proc")
def test_memory_maps_are_released():
    """Each map holds a file descriptor until the last array viewing it is gone: converting many
    files must not accumulate them (an 18,000-file run would hit the process's limit)."""
    render.render(DATA / "RG1_UNCR.dcm", 256)  # first use: imports and compiled kernels load here
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(40):
        assert render.render(DATA / "RG1_UNCR.dcm", 256).method == "lut"
    assert len(os.listdir("/proc/self/fd")) <= before


def test_fallback_for_32bit_pixels():
    fast = render.render(TEST_FILES / "rtdose_1frame.dcm", "orig")
    assert fast.method == "exact-fallback"
    assert np.array_equal(fast.pixels, render.render(TEST_FILES / "rtdose_1frame.dcm", "orig", exact=True).pixels)


def test_reduced_j2k_policy():
    ds = pydicom.dcmread(DATA / "RG1_J2KR.dcm")  # 1955 × 1841
    assert j2k.reduced_levels(ds, 977, 920) == 1  # ≤ half: one level
    assert j2k.reduced_levels(ds, 256, 241) == 1  # never more than MAX_LEVELS
    assert j2k.reduced_levels(ds, 1024, 964) == 0  # > half: full decode
    assert j2k.reduced_levels(pydicom.dcmread(DATA / "RG1_UNCR.dcm"), 256, 241) == 0  # not JPEG 2000
    assert j2k.reduced_levels(pydicom.dcmread(TEST_FILES / "JPEG2000.dcm"), 128, 32) == 0  # signed samples


def _compare(path: Path, size: int) -> dict:
    exact = render.render(path, size, exact=True).pixels.astype(np.float64)
    fast = render.render(path, size)
    d = np.abs(fast.pixels.astype(np.float64) - exact)
    mse = float((d ** 2).mean())
    return {"method": fast.method, "mean": d.mean(), "p99": np.percentile(d, 99),
            "psnr": 10 * np.log10(255.0 ** 2 / mse) if mse else np.inf}


@pytest.mark.parametrize("name", [n for n in CHEST_CR if "J2K" in n])
@pytest.mark.parametrize("size", [512, 256])
def test_reduced_j2k_close_to_exact_on_chest_cr(name, size):
    """Stated tolerance on real chest CRs: mean |Δ| ≤ 0.6 grey level, 99th pct ≤ 4, PSNR ≥ 45 dB."""
    got = _compare(DATA / f"{name}.dcm", size)
    assert got["method"] == "lut+j2k-r1"
    assert got["mean"] <= 0.6 and got["p99"] <= 4 and got["psnr"] >= 45, got


def test_reduced_j2k_on_sharp_mr_is_close_not_identical():
    """A knee MR with sharp texture at exactly half size: the LL band ≠ a 2×2 box (PSNR ~33 dB);
    stated so that `data.exact=true` is known to be the choice for such images."""
    got = _compare(DATA / "MR2_J2KR.dcm", 512)
    assert got["method"] == "lut+j2k-r1" and 30 <= got["psnr"] < 45, got


def test_sidecar_treats_exact_and_png_settings_as_config(tmp_path):
    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    for name in ("RG3_UNCR", "MR2_J2KR"):
        shutil.copy(DATA / f"{name}.dcm", raw / "train" / f"{name}.dicom")
    out = tmp_path / "out"
    first = convert_folders(raw, out, ConvertSettings(size=256), workers=0, progress=False)
    m = manifest.read_manifest(first.manifest).set_index("image_id")
    assert first.converted == 2 and list(m.pixel_path) == ["lut+j2k-r1", "lut"]
    same = convert_folders(raw, out, ConvertSettings(size=256), workers=0, progress=False)
    assert (same.converted, same.skipped) == (0, 2)
    exact = convert_folders(raw, out, ConvertSettings(size=256, exact=True), workers=0, progress=False)
    assert (exact.converted, exact.skipped) == (2, 0)
    assert set(manifest.read_manifest(exact.manifest).pixel_path) == {"exact"}
    level = convert_folders(raw, out, ConvertSettings(size=256, exact=True, png_compression=6), workers=0,
                            progress=False)
    assert (level.converted, level.skipped) == (2, 0)
    pixels = {name: cv2.imread(str(level.image_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED) for name in ("RG3_UNCR", "MR2_J2KR")}
    for strategy in ("huffman", "default"):
        other = convert_folders(raw, out, ConvertSettings(size=256, exact=True, png_compression=6, png_strategy=strategy),
                                workers=0, progress=False)
        assert (other.converted, other.skipped) == (2, 0)
        for name, want in pixels.items():  # lossless whatever the strategy
            assert np.array_equal(cv2.imread(str(other.image_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED), want)
    with pytest.raises(ValueError):
        ConvertSettings(png_compression=12).png_params()
    with pytest.raises(ValueError, match="png_strategy"):
        ConvertSettings(png_strategy="zopfli").png_params()


def test_broken_file_still_named_on_fast_path(tmp_path):
    good = (DATA / "RG1_J2KR.dcm").read_bytes()
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "cut.dicom").write_bytes(good[: len(good) * 2 // 3])
    shutil.copy(DATA / "RG3_UNCR.dcm", tmp_path / "train" / "fine.dicom")
    s = convert_folders(tmp_path, tmp_path / "out", ConvertSettings(size=256), workers=0, progress=False)
    assert (s.converted, s.failed) == (1, 1)
    assert s.failures[0][0] == "cut" and "cut.dicom" in s.failures[0][1]
    with pytest.raises(dicom.DicomError, match="cut.dicom"):
        render.render(tmp_path / "train" / "cut.dicom", 256)
