"""Test data packages are test dependencies (requirements/base.txt, "test-only"): a test that needs
one fails with a message naming it, never skips silently."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pydicom
import pytest

from harness.synth.readers import real_csv_path

PYDICOM_DATA = Path(pydicom.__file__).parent.parent / "data_store" / "data"


def require_real_csv() -> Path:
    """torchxrayvision's copy of the real VinBigData train.csv."""
    path = real_csv_path()
    if path is None:
        pytest.fail("test dependency missing: the real VinBigData train.csv ships in torchxrayvision==1.5.7 "
                    "(data/vinbigdata-train.csv.gz); install it with "
                    "`pip install --no-deps torchxrayvision==1.5.7`", pytrace=False)
    return path


def require_pydicom_data(name: str = "RG1_UNCR.dcm") -> Path:
    """A DICOM file from the pydicom-data package."""
    path = PYDICOM_DATA / name
    if not path.exists():
        pytest.fail(f"test dependency missing: {name} from pydicom-data==1.0.0 (looked in {PYDICOM_DATA}); "
                    "install it with `pip install pydicom-data==1.0.0`", pytrace=False)
    return path


def require_module(name: str, pin: str) -> ModuleType:
    """Import a package the tests need; a missing or broken install fails with a message naming it
    (pytest.importorskip would skip the suite and leave CI green)."""
    try:
        return importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - a broken install raises more than ImportError
        pytest.fail(f"test dependency missing or broken: {name} ({type(err).__name__}: {err}); install "
                    f"`{pin}` (requirements/base.txt)", pytrace=False)
