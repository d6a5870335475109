"""Atomic writes follow the umask: a result file gets the mode any new file gets (0644 under umask 022),
not the 0600 of a temporary file, and a failed write leaves the old file."""
from __future__ import annotations

import os
import stat

import pytest
from test_ensemble_tuning import make_sweep

from harness import atomic
from harness.report.tables import collect, summary, write_tables


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_mode_of_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert atomic.current_umask() == mask
    atomic.write_json(tmp_path / "a" / "metrics.json", {"map40": 0.5})
    atomic.write_text(tmp_path / "results.md", "# Results\n")
    atomic.write_bytes(tmp_path / "x.bin", b"\x00")
    with atomic.atomic_path(tmp_path / "t.csv") as tmp:
        tmp.write_text("a,b\n")
    for name in ("a/metrics.json", "results.md", "x.bin", "t.csv"):
        assert mode(tmp_path / name) == expected, name
    assert mode(tmp_path / "a") == 0o777 & ~mask  # the folder it made
    # an overwrite keeps the umask's mode too, and a failed one leaves the old content
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(tmp_path / "results.md") as handle:
            handle.write("half")
            raise RuntimeError("crash")
    assert (tmp_path / "results.md").read_text() == "# Results\n" and mode(tmp_path / "results.md") == expected
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_report_tables_of_a_sweep_are_readable_by_others_under_umask_022(tmp_path, umask):
    umask(0o022)
    sweep = tmp_path / "runs" / "s"
    make_sweep(sweep)  # metrics.json, predictions.json and split files written through harness.atomic
    found = collect(sweep)
    paths = write_tables(found, summary(found.runs), sweep / "report")
    files = [paths["results_md"], paths["results_csv"], *sweep.glob("*/fold*/metrics.json"),
             *sweep.glob("*/fold*/predictions.json")]
    assert len(files) > 4 and {mode(p) for p in files} == {0o644}
