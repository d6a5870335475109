"""The fused look-up + area-average shrink (harness.data.area) against OpenCV's INTER_AREA.

Random stored values through a random table: any wrong weight, cell border or edge pixel shows up as
pixels off by more than float rounding (the fast path's tolerance is one grey level).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from harness.data import area

SHAPES = [  # (h, w) → (out_h, out_w): chest X-ray sizes to 1024, exact halves, slight and steep shrinks
    ((2923, 2707), (1024, 948)), ((1955, 1841), (1024, 964)), ((2048, 1024), (1024, 512)),
    ((1025, 1000), (1024, 999)), ((2001, 2001), (1999, 2000)), ((500, 500), (7, 3)), ((300, 301), (299, 150)),
    ((97, 61), (13, 60)),
]


@pytest.mark.parametrize("shape,out", SHAPES)
@pytest.mark.parametrize("bits", [8, 16])
def test_shrink_equals_lookup_then_inter_area(shape, out, bits):
    rng = np.random.default_rng(sum(shape) + bits)
    index = rng.integers(0, 4096, shape).astype(np.uint16)
    table = rng.integers(0, 1 << bits, 65536).astype(np.uint8 if bits == 8 else np.uint16)
    got = area.shrink(index, table, *out)
    assert got.dtype == table.dtype and got.shape == out
    want = np.rint(cv2.resize(table[index].astype(np.float32), out[::-1], interpolation=cv2.INTER_AREA))
    diff = np.abs(got.astype(np.float64) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("n_in", [7, 61, 300, 1025, 2001, 2923])
def test_cells_never_decrease_along_a_row(n_in):
    """The kernel stores a cell when the next one starts, so each pixel's first cell must not
    decrease along the row (also for pixels left out by OpenCV's 1e-3 rule, with zero weight)."""
    for n_out in {1, 2, n_in // 3 or 1, n_in // 2 or 1, n_in - 1, int(n_in / 1.0005), int(n_in / 2.3)}:
        first, w0, w1 = area.cell_weights(n_in, n_out)
        assert (np.diff(first) >= 0).all() and first.min() >= 0 and first.max() < n_out, (n_in, n_out)
        total = np.bincount(first, w0, n_out + 1) + np.bincount(first + 1, w1, n_out + 1)
        assert np.allclose(total[:n_out], 1, atol=2e-3), (n_in, n_out)  # each cell's weights sum to 1


def test_shrink_reads_a_read_only_view():
    index = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 300
    table = (np.arange(65536) % 251).astype(np.uint8)
    view = np.frombuffer(index.tobytes(), np.uint16).reshape(index.shape)  # read-only, like a file buffer
    assert not view.flags.writeable
    assert np.array_equal(area.shrink(view, table, 20, 15), area.shrink(index, table, 20, 15))


def test_not_shrinking_returns_none():
    index, table = np.zeros((10, 10), np.uint16), np.zeros(65536, np.uint8)
    assert area.shrink(index, table, 10, 10) is None and area.shrink(index, table, 20, 5) is None


def test_warm_up_compiles_every_specialisation():
    """prepare's fork server runs warm_up so workers never compile or load a kernel themselves."""
    area.warm_up()
    assert len(area._shrink.signatures) >= 8  # uint8/uint16 index × read-only or not × 8/16-bit table
    assert area._fill_cells.signatures


def test_fork_server_preloads_what_a_worker_needs():
    """What the pool's fork server holds before it forks a worker: pydicom and its decoders (lazy in
    harness.data.dicom), Pillow's plugins, the compiled kernels; then converting files imports nothing."""
    import subprocess
    import sys
    from multiprocessing import forkserver
    from pathlib import Path

    from harness.data import prepare

    prepare._pool_context()
    assert forkserver._forkserver._preload_modules == ["harness.data.prepare_server"]
    data = Path(__import__("pydicom").__file__).parent.parent / "data_store" / "data"
    code = f"""
import sys, tempfile
from pathlib import Path
import harness.data.prepare_server
from harness.data import area, prepare
from PIL import Image
assert Image._initialized == 2 and len(area._shrink.signatures) >= 8
before = set(sys.modules)
out = Path(tempfile.mkdtemp())
for name in ("RG1_UNCR", "RG3_J2KR", "MR2_J2KI"):
    src = Path({str(data)!r}) / f"{{name}}.dcm"
    row, _ = prepare._convert_task((src, out / f"{{name}}.png", "train", prepare.ConvertSettings(size=256), out))
    assert row["status"] == "ok", row
print(sorted(set(sys.modules) - before))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported on a worker's first files: {done.stdout}"

