"""The DICOM pixel pipeline: parse, check, decode, modality LUT, VOI LUT/window, colour.

The stages of the DICOM grayscale transformation chain (PS3.3 C.11, PS3.4 N.2.1.1), used
by :func:`medvl.data.dicom.read_dicom` for single images, by
:func:`medvl.data.series.read_series` for volumes and by
:class:`medvl.data.monai_reader.MedvlDicomReader` for plane geometry:

* :func:`open_dataset` parses a Part 10 file; :func:`check_pixel_data` checks that there
  are pixels an installed decoder can read and that their length matches the header;
  :func:`decode_pixels` decodes the first or all frames (YBR converted to RGB).
* :func:`frame_views` gives, per frame, the attributes that frame is read with: enhanced
  multi-frame images carry rescale, window and plane geometry per frame in functional
  groups (PS3.3 C.7.6.16).
* :func:`apply_modality` applies the modality LUT (rescale slope/intercept or *Modality
  LUT Sequence*); :func:`greyscale_display` the VOI LUT (window center/width with LINEAR,
  LINEAR_EXACT or SIGMOID, or a *VOI LUT Sequence*) or an explicit window, scales the VOI
  output range to [0, 1] and inverts MONOCHROME1 so that 1 is always bright;
  :func:`colour_display` scales RGB, YBR_* and PALETTE COLOR images by their bit depth.

The stages are pydicom's own (``pydicom.pixels.apply_modality_lut``, ``apply_voi_lut``,
``apply_color_lut``); ``tests/data/test_dicom_corpus.py`` holds the output to them on
every file of pydicom's and pydicom-data's test corpus. Every failure raises
:class:`DicomReadError` naming the file and the reason; library messages quoted in it
pass through :func:`scrubbed_error`, which removes the values of
:data:`medvl.data.deid.IDENTIFYING_KEYWORDS`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.deid import IDENTIFYING_KEYWORDS

__all__ = [
    "GREY",
    "RGB_LIKE",
    "DicomReadError",
    "apply_modality",
    "check_pixel_data",
    "colour_display",
    "decode_pixels",
    "frame_views",
    "greyscale_display",
    "header_text",
    "min_max_scale",
    "open_dataset",
    "photometric_interpretation",
    "scrubbed_error",
]

GREY: frozenset[str] = frozenset({"MONOCHROME1", "MONOCHROME2"})
"""Greyscale photometric interpretations (read through the modality and VOI LUTs)."""

RGB_LIKE: frozenset[str] = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}
)
"""Colour photometric interpretations that decode to RGB (PALETTE COLOR goes through its LUT)."""

# Functional group macros (PS3.3 C.7.6.16) whose attributes replace the classic
# top-level ones for each frame of an enhanced multi-frame image.
_FRAME_MACROS = (
    "PixelValueTransformationSequence",  # RescaleSlope / RescaleIntercept / RescaleType
    "FrameVOILUTSequence",  # WindowCenter / WindowWidth / VOILUTFunction
    "PixelMeasuresSequence",  # PixelSpacing / SliceThickness / SpacingBetweenSlices
    "PlanePositionSequence",  # ImagePositionPatient
    "PlaneOrientationSequence",  # ImageOrientationPatient
)
# Top-level geometry a frame view keeps besides group 0028 (image pixel, LUT modules).
_GEOMETRY_KEYWORDS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
)


class DicomReadError(ValueError):
    """An image file that cannot be turned into trustworthy pixels.

    Raised for DICOM and PNG/JPEG input alike. The message is ``"<path>: <reason>"``.

    Attributes:
        path: The file that failed.
        reason: Why, in words (no header values that could identify a patient).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the two-argument constructor picklable (DataLoader workers re-raise).
        return (type(self), (self.path, self.reason))


def open_dataset(path: str | os.PathLike[str], *, stop_before_pixels: bool = False) -> Any:
    """Parse a Part 10 file with pydicom; every failure becomes a DicomReadError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not Path(path).is_file():
        raise DicomReadError(path, "file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on harmless header quirks
            return pydicom.dcmread(path, force=False, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as err:
        raise DicomReadError(path, f"not a DICOM file ({err})") from err
    except Exception as err:  # noqa: BLE001 - any parse failure means corrupt input
        raise scrubbed_error(path, "truncated or corrupt DICOM", err) from err


def scrubbed_error(
    path: str | os.PathLike[str], what: str, err: BaseException, ds: Any = None
) -> DicomReadError:
    """A DicomReadError for ``what``, quoting ``err`` with identifying header values removed.

    Library messages rarely quote header values, but when they do, any value of an
    :data:`~medvl.data.deid.IDENTIFYING_KEYWORDS` element found in ``ds`` (and each ``^``
    component of a person name) is replaced by ``<redacted>``; the message is
    joined onto one line and cut at 400 characters.
    """
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if ds is not None:
        for keyword in IDENTIFYING_KEYWORDS:
            elem = ds.data_element(keyword) if keyword in ds else None
            if elem is None or elem.VR == "SQ" or elem.value is None:
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            for value in values:
                parts = {p.strip() for p in (str(value), *str(value).split("^"))}
                for part in sorted(parts, key=len, reverse=True):  # whole name first
                    if len(part) >= 3 and part in text:
                        text = text.replace(part, "<redacted>")
    text = text if len(text) <= 400 else text[:400] + "..."
    return DicomReadError(path, f"{what} ({type(err).__name__}{': ' + text if text else ''})")


def photometric_interpretation(ds: Any) -> str:
    """The dataset's PhotometricInterpretation, upper case ("" when missing)."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper()


def check_pixel_data(
    path: str | os.PathLike[str], ds: Any, *, all_frames: bool, max_pixels: int | None
) -> tuple[Any, int]:
    """Check there are pixels we can decode; return the transfer syntax and frame count."""
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        if other:
            reason = f"no PixelData element ({other[0]} is not supported)"
        elif len(ds) == 0:
            reason = "no PixelData element: nothing after the file meta (truncated file?)"
        elif "Rows" in ds and "Columns" in ds:
            # pydicom stops quietly at the end of a file cut inside the header.
            reason = (
                "no PixelData element although Rows/Columns describe an image (truncated file?)"
            )
        else:
            reason = "no PixelData element"
        raise DicomReadError(path, reason)
    tsyntax = _check_decodable(path, ds)
    frames = _check_geometry(path, ds, all_frames=all_frames, max_pixels=max_pixels)
    return tsyntax, frames


def decode_pixels(path: str | os.PathLike[str], ds: Any, *, all_frames: bool) -> np.ndarray:
    """Stored values of the first or of all frames (YBR converted to RGB)."""
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # raw=False: pydicom converts YBR_FULL / YBR_FULL_422 to RGB
            # (pydicom.pixels.convert_color_space) unless the codec already did.
            return pixel_array(ds, index=None if all_frames else 0, raw=False)
    except Exception as err:  # noqa: BLE001 - decoder errors have many types
        raise scrubbed_error(path, "pixel data could not be decoded", err, ds) from err


def _check_decodable(path: str | os.PathLike[str], ds: Any) -> Any:
    """Return the transfer syntax UID after checking a decoder is installed for it."""
    from pydicom.pixels import get_decoder

    tsyntax = ds.file_meta.get("TransferSyntaxUID")
    if tsyntax is None:
        raise DicomReadError(path, "file meta has no TransferSyntaxUID")
    label = f"{tsyntax} ({tsyntax.name})" if tsyntax.name != str(tsyntax) else str(tsyntax)
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as err:
        raise DicomReadError(path, f"no decoder for transfer syntax {label}") from err
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise DicomReadError(
            path, f"no installed decoder for transfer syntax {label} (missing: {missing})"
        )
    return tsyntax


def _check_geometry(
    path: str | os.PathLike[str], ds: Any, *, all_frames: bool, max_pixels: int | None
) -> int:
    """Check size limits and native pixel data length; return the number of frames.

    Native pixel data shorter than rows x columns x frames x samples x bits
    allocated is an error. Longer data is accepted only when every excess byte
    is zero (trailing padding, which pydicom also ignores); excess bytes with
    content mean the header understates the image, which is an error too.
    """
    from pydicom.pixels.utils import get_expected_length, get_nr_frames

    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        int(ds.BitsAllocated)
    except Exception as err:  # noqa: BLE001
        raise DicomReadError(path, f"incomplete image pixel module ({err})") from err
    try:
        frames = int(get_nr_frames(ds, warn=False))
    except (TypeError, ValueError) as err:
        raise DicomReadError(path, "invalid NumberOfFrames (not an integer)") from err
    if rows <= 0 or cols <= 0:
        raise DicomReadError(path, f"invalid image size {rows}x{cols}")
    if frames <= 0:
        raise DicomReadError(path, f"invalid NumberOfFrames {frames}")
    decoded = rows * cols * samples * (frames if all_frames else 1)
    if max_pixels is not None and decoded > max_pixels:
        raise DicomReadError(
            path,
            f"image has {decoded} values (rows x columns x frames x samples), "
            f"over max_pixels={max_pixels}",
        )
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        expected = get_expected_length(ds, unit="bytes")
        data = ds.PixelData
        actual = len(data)
        # Native pixel data is padded to an even length; zero bytes beyond that are padding.
        short = actual < expected
        excess = actual > expected + (expected % 2) and any(data[expected:])
        if short or excess:
            raise DicomReadError(
                path,
                f"pixel data is {actual} bytes but rows x columns x frames x samples x "
                f"bits allocated needs {expected} (truncated or inconsistent header)",
            )
    return frames


def frame_views(path: str | os.PathLike[str], ds: Any, count: int) -> list[Any]:
    """Per-frame datasets holding the attributes that frame's pixels are read with.

    A classic image gives ``[ds]`` (one view for every frame). An enhanced
    multi-frame image gives one view per frame: group 0028 and the plane
    geometry of the top level, overridden by the shared and then the frame's own
    functional groups (:data:`_FRAME_MACROS`), so that pydicom's LUT functions
    see the rescale and window of that frame (PS3.3 C.7.6.16).
    """
    from pydicom.dataset import Dataset

    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if not shared and not per_frame:
        return [ds]
    if per_frame and len(per_frame) < count:
        raise DicomReadError(
            path,
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {count} frames",
        )
    base = Dataset()
    base.file_meta = ds.file_meta  # LUT data of VR OW needs the byte order
    for elem in ds:
        if elem.tag.group == 0x0028 or elem.keyword in _GEOMETRY_KEYWORDS:
            base.add(elem)
    _overlay(base, shared[0] if shared else None)
    views = []
    for index in range(count):
        view = Dataset()
        view.file_meta = ds.file_meta
        for elem in base:
            view.add(elem)
        _overlay(view, per_frame[index] if per_frame else None)
        views.append(view)
    return views


def _overlay(view: Any, group: Any) -> None:
    """Copy the attributes of a functional group item's macros onto ``view``."""
    if group is None:
        return
    for macro in _FRAME_MACROS:
        seq = group.get(macro)
        if seq:
            for elem in seq[0]:
                view.add(elem)


def apply_modality(arr: np.ndarray, views: list[Any]) -> np.ndarray:
    """Modality LUT per frame (one call when every frame shares one view)."""
    from pydicom.pixels import apply_modality_lut

    if len(views) == 1:
        return apply_modality_lut(arr, views[0])
    frames = zip(arr, views, strict=True)
    return np.stack([apply_modality_lut(frame, view) for frame, view in frames])


def greyscale_display(
    values: np.ndarray,
    views: list[Any],
    window: tuple[float, float] | None,
    photometric: str,
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """VOI -> [0, 1] -> MONOCHROME1 inversion on modality values; return pixels and window."""
    used: tuple[float, float] | None = None
    if window is not None:
        center, width = window
        out = (values.astype(np.float64) - (center - width / 2)) / width
        used = window
    else:
        first = views[0]
        if not _has_voi_lut(first) and _has_window(first):
            used = (_first(first["WindowCenter"]), _first(first["WindowWidth"]))
        if len(views) == 1:
            out = _voi(values, first)
            out = min_max_scale(values) if out is None else out
        else:
            frames = [_voi(frame, view) for frame, view in zip(values, views, strict=True)]
            missing = [i for i, f in enumerate(frames) if f is None]
            if missing:  # frames without VOI share one min-max over themselves
                scaled = min_max_scale(values[missing])
                for i, frame in zip(missing, scaled, strict=True):
                    frames[i] = frame
            out = np.stack(frames)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are bright
    return out, used


def _voi(values: np.ndarray, view: Any) -> np.ndarray | None:
    """The view's first VOI (LUT preferred, as pydicom) scaled to [0, 1]; None without VOI."""
    from pydicom.pixels import apply_voi_lut

    if _has_voi_lut(view):
        if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)  # LUT lookup needs integer indices
        depth = int(view.VOILUTSequence[0].LUTDescriptor[2])
        return apply_voi_lut(values, view, index=0, prefer_lut=True) / float(2**depth - 1)
    if _has_window(view):
        lo, hi = _voi_output_range(view)
        return (apply_voi_lut(values, view, index=0, prefer_lut=False) - lo) / (hi - lo)
    return None


def _has_voi_lut(ds: Any) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def _has_window(ds: Any) -> bool:
    """True when the file has a usable first window (positive width)."""
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return False
    try:
        width = _first(ds["WindowWidth"])
        _first(ds["WindowCenter"])
    except (TypeError, ValueError, IndexError):
        return False
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return width >= 1 if func == "LINEAR" else width > 0


def _first(elem: Any) -> float:
    """First value of a possibly multi-valued DS element, as float."""
    value = elem.value
    return float(value[0] if elem.VM > 1 else value)


def _voi_output_range(ds: Any) -> tuple[float, float]:
    """Output range of pydicom's ``apply_windowing`` (mirrors its own computation)."""
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return lo, hi


def min_max_scale(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own range; a constant image becomes zeros."""
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 0:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def colour_display(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """RGB (or palette-mapped) values scaled by their bit depth to float32 [0, 1]."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)[..., :3]  # drop alpha if present
        depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if depth not in (8, 16) or rgb.max(initial=0) > 2**depth - 1:
            depth = 8 * rgb.dtype.itemsize
    else:
        rgb = arr
        depth = int(ds.BitsStored)
    return np.clip(rgb.astype(np.float32) / float(2**depth - 1), 0.0, 1.0)


def header_text(value: Any) -> str | None:
    """A header value as a stripped string, None when empty or missing."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
