"""Shared fixtures. Tests run offline: ultralytics' switches are set before anything imports it."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
# ultralytics writes settings at import: keep them out of the user's home during tests
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="cxr-bench-yolo-"))

sys.path.insert(0, str(Path(__file__).parent))  # for `from toy import make_toy_dataset`

from harness.netguard import no_network  # noqa: E402
from toy import make_toy_dataset  # noqa: E402


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> dict:
    """An easy 2-class dataset (24 images, 128 px, 2 folds) in the prepared-dataset layout."""
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), n_images=24, size=128, seed=0, k=2)


@pytest.fixture
def forbid_network():
    """Any socket connection (or DNS lookup) inside the test raises NetworkAttempt."""
    with no_network() as attempts:
        yield attempts


@pytest.fixture(scope="session")
def split0(toy_dataset, tmp_path_factory):
    """Fold 0 of the toy set as every adapter receives it (read-only: tests must not edit its files)."""
    from harness.split import make_split

    return make_split(toy_dataset["labels"], toy_dataset["folds"], 0, tmp_path_factory.mktemp("split0"))
