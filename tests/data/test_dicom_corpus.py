"""Every test file shipped with pydicom and pydicom-data, read through medvl's reader.

The corpus is ``pydicom.data.get_testdata_files()``, which covers pydicom's own
``test_files`` and the installed pydicom-data package. Downloading is switched
off (tests run offline): files that pydicom would fetch from GitHub count only
when already in pydicom's local cache. Each file lands in exactly one test:

* ``test_image_matches_pydicom``: parses and has pixel data; medvl's pixels
  equal pydicom's own pipeline (modality LUT, VOI LUT or window, scaling to
  [0, 1], MONOCHROME1 inversion; RGB / palette over bit depth).
* ``test_broken_file_fails_with_reason``: listed in :data:`EXPECTED_FAILURES`
  with the reason; pydicom cannot decode it either.
* ``test_file_without_pixels_is_refused``: parses but has no pixel data.
* ``test_non_part10_file_is_refused``: pydicom's ``dcmread`` (without
  ``force``) rejects it: no preamble/file meta, or not DICOM at all.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom.data.data_manager as data_manager
import pytest
from pydicom import dcmread
from pydicom.data.download import get_data_dir
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from medvl.data.dicom import DicomReadError, read_dicom

DEFAULT_MAX_PIXELS = 100_000_000  # read_dicom's default

EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    # id: (regex the DicomReadError reason must match, why the file is broken)
    "pydicom/badVR.dcm": (
        r"invalid NumberOfFrames",
        "NumberOfFrames (VR IS) holds '1A', deliberately not an integer",
    ),
    "pydicom/meta_missing_tsyntax.dcm": (
        r"file meta has no TransferSyntaxUID",
        "file meta lacks (0002,0010), so the pixel encoding is unknown",
    ),
    "pydicom/nested_priv_SQ.dcm": (
        r"incomplete image pixel module",
        "a PixelData element with no Rows/Columns/BitsAllocated (private-sequence test file)",
    ),
    "pydicom/MR_truncated.dcm": (
        r"pixel data is 8130 bytes .* needs 8192",
        "native pixel data cut short: 8130 of 8192 bytes",
    ),
    "pydicom/JPEG-lossy.dcm": (
        r"pixel data could not be decoded .*misplaced marker segment",
        "12-bit JPEG Extended stream with a misplaced marker segment: libjpeg rejects "
        "it and Pillow has no 12-bit JPEG",
    ),
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": (
        r"pixel data could not be decoded .*J2K",
        "a sequence delimiter inside the fragment corrupts the J2K codestream header",
    ),
}
"""Files that are broken on purpose, each with the error it must raise and why."""

# Transfer syntaxes the issue asks the corpus to cover with at least one readable file.
REQUIRED_SYNTAXES = {
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
}


def _cached_only(filename: str, *args: object, **kwargs: object) -> Path:
    """Stand-in for pydicom's downloader: a cached copy or nothing (no network)."""
    path = get_data_dir() / filename
    if path.is_file():
        return path
    raise FileNotFoundError(filename)


def _corpus_paths() -> list[str]:
    with mock.patch.object(data_manager, "data_path_with_download", _cached_only):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "download failures occurred"
            paths = data_manager.get_testdata_files("**/*")
    return sorted({p for p in paths if os.path.isfile(p)})


def _file_id(path: str) -> str:
    """Stable id: source package plus the path inside its data folder."""
    parts = Path(path).parts
    for marker, source in (
        (("data", "test_files"), "pydicom"),
        (("data_store", "data"), "pydicom-data"),
    ):
        for i in range(len(parts) - 1):
            if parts[i : i + 2] == marker:
                return f"{source}/{'/'.join(parts[i + 2 :])}"
    return f"cache/{Path(path).name}"


def _classify() -> dict[str, list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = {
        "image": [],
        "broken": [],
        "no_pixels": [],
        "not_part10": [],
    }
    for path in _corpus_paths():
        file_id = _file_id(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(path, defer_size="1 KB")
        except Exception:  # noqa: BLE001 - anything pydicom cannot parse
            groups["not_part10"].append((file_id, path))
            continue
        if file_id in EXPECTED_FAILURES:
            groups["broken"].append((file_id, path))
        elif "PixelData" in ds:
            groups["image"].append((file_id, path))
        else:
            groups["no_pixels"].append((file_id, path))
    return groups


CORPUS = _classify()


def _params(group: str) -> list[object]:
    return [pytest.param(path, id=file_id) for file_id, path in CORPUS[group]]


# --- The reference: pydicom's own functions, applied frame by frame ------------------


def _frame_dataset(ds: object, index: int) -> object:
    """A shallow copy with every functional-group attribute of frame ``index`` flattened in."""
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if not shared and not per_frame:
        return ds
    flat = copy.copy(ds)
    for group in [*shared[:1], *per_frame[index : index + 1]]:
        for macro in group:
            if macro.VR == "SQ" and macro.value:
                for elem in macro.value[0]:
                    if elem.VR != "SQ":
                        flat[elem.tag] = elem
    return flat


def _has_valid_voi_lut(ds: object) -> bool:  # pydicom's own test in apply_voi_lut
    seq = ds.get("VOILUTSequence")
    return bool(seq) and None not in (seq[0].get("LUTDescriptor"), seq[0].get("LUTData"))


def _reference_grey(frames: np.ndarray, ds: object) -> np.ndarray:
    """modality LUT -> apply_voi_lut -> [0, 1] by the VOI output range -> MONOCHROME1."""
    outs, no_voi = [], []
    for i, frame in enumerate(frames):
        fds = _frame_dataset(ds, i)
        values = apply_modality_lut(frame, fds)
        if _has_valid_voi_lut(fds):
            depth = fds.VOILUTSequence[0].LUTDescriptor[2]
            outs.append(apply_voi_lut(values, fds) / (2**depth - 1))
        elif "WindowCenter" in fds and "WindowWidth" in fds:
            with np.errstate(over="ignore"):  # SIGMOID of +-1e12
                lo, hi = apply_voi_lut(np.array([-1e12, 1e12]), fds, prefer_lut=False)
            outs.append((apply_voi_lut(values, fds) - lo) / (hi - lo))
        else:
            outs.append(values.astype(np.float64))
            no_voi.append(i)
    if no_voi:  # no VOI: min-max over those frames together
        stack = np.stack([outs[i] for i in no_voi])
        span = stack.max() - stack.min()
        for i in no_voi:
            outs[i] = (outs[i] - stack.min()) / span if span > 0 else np.zeros_like(outs[i])
    out = np.clip(np.stack(outs), 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1.0 - out
    return out


def _reference(ds: object, first_frame_only: bool) -> np.ndarray:
    multi = int(ds.get("NumberOfFrames", 1) or 1) > 1 and not first_frame_only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pydicom's decode, YBR converted to RGB (what ds.pixel_array gives)
        arr = pixel_array(ds, index=None if multi else 0)
    photometric = ds.PhotometricInterpretation
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        out = _reference_grey(arr if multi else arr[None], ds)
        return out if multi else out[0]
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)[..., :3]
        return rgb / float(np.iinfo(rgb.dtype).max)
    return arr / float(2**ds.BitsStored - 1)


# --- Tests ---------------------------------------------------------------------------


def test_corpus_covers_pydicom_and_pydicom_data() -> None:
    from pydicom.data.data_manager import external_data_sources

    ids = [file_id for group in CORPUS.values() for file_id, _ in group]
    assert len(ids) == len(set(ids)), "file ids must be unique"
    sources = external_data_sources()
    assert "pydicom-data" in sources, "pydicom-data is not installed"
    shipped = [p for p in sources["pydicom-data"].get_paths("*") if os.path.isfile(p)]
    from_data = [i for i in ids if i.startswith("pydicom-data/")]
    assert len(shipped) > 0
    assert sorted(from_data) == sorted(f"pydicom-data/{Path(p).name}" for p in shipped)
    assert sum(i.startswith("pydicom/") for i in ids) > 100
    assert set(EXPECTED_FAILURES) <= {file_id for file_id, _ in CORPUS["broken"]}


def test_corpus_covers_required_transfer_syntaxes() -> None:
    found = set()
    for _, path in CORPUS["image"]:
        found.add(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assert REQUIRED_SYNTAXES <= found, sorted(str(s.name) for s in REQUIRED_SYNTAXES - found)


@pytest.mark.parametrize("path", _params("image"))
def test_image_matches_pydicom(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    too_big = ds.Rows * ds.Columns * samples * frames > DEFAULT_MAX_PIXELS
    if too_big:
        # All frames exceed the default limit: that refusal is tested, then frame 0 is compared.
        with pytest.raises(DicomReadError, match="over max_pixels"):
            read_dicom(path, all_frames=True)
        image = read_dicom(path)
    else:
        image = read_dicom(path, all_frames=True)
    expected = _reference(ds, first_frame_only=too_big)

    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == expected.shape
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    np.testing.assert_allclose(image.pixels, expected, atol=2e-6, rtol=0)
    assert image.meta["rows"] == ds.Rows and image.meta["columns"] == ds.Columns
    assert image.meta["transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID


@pytest.mark.parametrize("path", _params("broken"))
def test_broken_file_fails_with_reason(path: str) -> None:
    pattern, why = EXPECTED_FAILURES[_file_id(path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # noqa: B017 - pydicom itself cannot decode it ...
            _ = dcmread(path).pixel_array
    with pytest.raises(DicomReadError) as info:  # ... and medvl says why, naming the file
        read_dicom(path)
    assert info.value.path == path
    assert re.search(pattern, info.value.reason), f"{why}: got {info.value.reason!r}"


@pytest.mark.parametrize("path", _params("no_pixels"))
def test_file_without_pixels_is_refused(path: str) -> None:
    with pytest.raises(DicomReadError, match=r"no PixelData element") as info:
        read_dicom(path)
    assert info.value.path == path


@pytest.mark.parametrize("path", _params("not_part10"))
def test_non_part10_file_is_refused(path: str) -> None:
    with pytest.raises(DicomReadError, match=r"not a DICOM file|truncated or corrupt") as info:
        read_dicom(path)
    assert info.value.path == path
