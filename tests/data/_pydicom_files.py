"""pydicom's (and pydicom-data's) real test files for the reader tests, skipping a test when one is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file


def pydicom_file(name: str) -> Path:
    """Path of the test file ``name``; skips the calling test when it is not installed or cannot be fetched."""
    try:
        path = get_testdata_file(name)
    except Exception as err:  # noqa: BLE001 - pydicom-data download failure etc.
        pytest.skip(f"{name} not available: {err}")
    if path is None:
        pytest.skip(f"{name} not in the installed pydicom test data")
    return Path(path)
