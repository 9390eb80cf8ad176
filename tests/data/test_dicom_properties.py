"""Property tests: real DICOM files with damaged bytes fail only with DicomReadError.

Hypothesis overwrites bytes of pydicom's real test files (in the header, in the
pixel data, anywhere) and cuts them short, then reads them with
:func:`medvl.data.dicom.read_image` and :func:`medvl.data.series.read_series`.
Whatever the damage, the read returns a finite image or raises
:class:`DicomReadError` naming the file, within a per-example deadline. Runs are
derandomized (the same examples every time) and keep no example database, so CI
is reproducible; the hand-made cases live in ``test_malformed_dicom.py``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medvl.data.dicom import DicomReadError, read_image
from medvl.data.series import read_series

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on damaged headers

FILES = (
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_RLE.dcm",  # RLE, 16 bit
    "SC_rgb_rle.dcm",  # RLE, RGB
    "emri_small_RLE.dcm",  # RLE, 10 frames
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "JPEG2000.dcm",  # JPEG 2000
    "image_dfl.dcm",  # Deflated explicit VR little endian
)
SLICES = ("CT_small.dcm", "MR_small.dcm")  # files with plane geometry, for read_series

SETTINGS = settings(
    deadline=2000,  # ms per example: a hang or a huge allocation fails the test
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@functools.cache
def _original(name: str) -> bytes | None:
    try:
        path = get_testdata_file(name)
    except Exception:  # noqa: BLE001 - pydicom-data download failure etc.
        return None
    return Path(path).read_bytes() if path else None


AVAILABLE = tuple(name for name in FILES if _original(name) is not None)
AVAILABLE_SLICES = tuple(name for name in SLICES if _original(name) is not None)
if not AVAILABLE:
    pytest.skip("no pydicom test files available", allow_module_level=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("damaged")


@st.composite
def damaged(draw: st.DrawFn, names: tuple[str, ...] = AVAILABLE) -> tuple[str, bytes]:
    """A real file with 1-12 bytes overwritten in one region, sometimes also cut short."""
    name = draw(st.sampled_from(names))
    data = bytearray(_original(name) or b"")
    pixels_at = data.rfind(b"\xe0\x7f\x10\x00")  # the PixelData tag
    region = draw(st.sampled_from(["header", "pixels", "anywhere"]))
    lo, hi = {
        "header": (0, max(pixels_at, 133)),
        "pixels": (max(pixels_at, 0), len(data)),
        "anywhere": (0, len(data)),
    }[region]
    writes = draw(
        st.lists(
            st.tuples(st.integers(lo, hi - 1), st.integers(0, 255)), min_size=1, max_size=12
        )
    )
    for position, value in writes:
        data[position] = value
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return name, bytes(data)


def _check(path: Path, **kwargs: object) -> None:
    """An image that is finite (and in [0, 1]), or a DicomReadError naming ``path``."""
    try:
        image = read_image(path, **kwargs)
    except DicomReadError as err:
        assert err.path == str(path) and str(path) in str(err)
        return
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise AssertionError(f"{type(err).__module__}.{type(err).__name__} escaped") from err
    assert image.pixels.dtype == np.float32 and np.isfinite(image.pixels).all()
    if kwargs.get("output", "display") == "display":
        assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0


@settings(SETTINGS, max_examples=600)
@given(case=damaged(), all_frames=st.booleans(), output=st.sampled_from(["display", "modality"]))
def test_overwritten_bytes_fail_only_with_dicom_read_error(
    workdir: Path, case: tuple[str, bytes], all_frames: bool, output: str
) -> None:
    name, data = case
    path = workdir / name
    path.write_bytes(data)
    _check(path, all_frames=all_frames, output=output)


@settings(SETTINGS, max_examples=150)
@given(name=st.sampled_from(AVAILABLE), fraction=st.floats(0.0, 1.0))
def test_truncated_files_fail_only_with_dicom_read_error(
    workdir: Path, name: str, fraction: float
) -> None:
    data = _original(name) or b""
    path = workdir / f"cut_{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    _check(path)
    _check(path, all_frames=True)


@pytest.mark.skipif(not AVAILABLE_SLICES, reason="no pydicom slice files available")
@settings(SETTINGS, max_examples=150)
@given(case=damaged(AVAILABLE_SLICES or AVAILABLE))
def test_damaged_slice_fails_only_with_dicom_read_error(
    workdir: Path, case: tuple[str, bytes]
) -> None:
    name, data = case
    folder = workdir / "series"
    folder.mkdir(exist_ok=True)
    (folder / "slice.dcm").write_bytes(data)
    try:
        volume = read_series(folder, on_irregular="warn")
    except DicomReadError as err:
        assert str(folder) in str(err) or "slice.dcm" in str(err)
        return
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        raise AssertionError(f"{type(err).__module__}.{type(err).__name__} escaped") from err
    assert volume.volume.ndim == 3 and np.isfinite(volume.volume).all()
