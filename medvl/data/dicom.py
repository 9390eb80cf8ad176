"""Read a radiograph from DICOM (or PNG/JPEG) into a float32 array in [0, 1].

The greyscale pipeline follows the DICOM grayscale transformation chain (PS3.3
C.11, PS3.4 N.2.1.1): stored values -> modality LUT (rescale slope/intercept or
*Modality LUT Sequence*) -> VOI LUT (window center/width with LINEAR,
LINEAR_EXACT or SIGMOID, or a *VOI LUT Sequence*) -> scale the VOI output range
to [0, 1] -> invert MONOCHROME1 so that 1 is always bright. Enhanced
multi-frame images carry rescale and window per frame in functional groups
(PS3.3 C.7.6.16); they are applied frame by frame. An explicit window, or a
named CT preset from :data:`WINDOW_PRESETS`, replaces the file's VOI. Colour
images (RGB, YBR_*, PALETTE COLOR) become H x W x 3 RGB scaled by their bit
depth. The stages are pydicom's own (``pydicom.pixels.apply_modality_lut``,
``apply_voi_lut``, ``apply_color_lut``); tests hold the output to them on every
file of pydicom's and pydicom-data's test corpus.

Only non-identifying header values reach :attr:`DicomImage.meta`; the keywords
the project treats as identifying (PS3.15 Annex E basic profile) are listed in
:data:`IDENTIFYING_KEYWORDS`. Any failure raises :class:`DicomReadError`
naming the file and the reason; nothing is returned half-decoded.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "META_KEYS",
    "OUTPUTS",
    "PIL_SUFFIXES",
    "WINDOW_PRESETS",
    "DicomImage",
    "DicomReadError",
    "read_dicom",
    "read_image",
    "resolve_window",
]

PIL_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
"""Suffixes :func:`read_image` hands to Pillow; everything else is read as DICOM."""

META_KEYS: tuple[str, ...] = (
    "modality",
    "photometric_interpretation",
    "rows",
    "columns",
    "number_of_frames",
    "bits_stored",
    "pixel_spacing",
    "view_position",
    "body_part",
    "sop_class_uid",
    "transfer_syntax_uid",
    "window",
)
"""The only keys :attr:`DicomImage.meta` ever holds (all non-identifying)."""

IDENTIFYING_KEYWORDS: frozenset[str] = frozenset(
    {
        # Patient
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientMotherBirthName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "PatientInsurancePlanCodeSequence",
        "MedicalRecordLocator",
        "MilitaryRank",
        "BranchOfService",
        "EthnicGroup",
        "Occupation",
        "PatientReligiousPreference",
        "CountryOfResidence",
        "RegionOfResidence",
        "PatientComments",
        "AdditionalPatientHistory",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "PersonName",
        # Study / visit
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "StudyComments",
        "AdmissionID",
        "AdmittingDiagnosesDescription",
        "RequestingPhysician",
        "RequestAttributesSequence",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepDescription",
        # People and places
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PhysiciansOfRecord",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "StationName",
        "DeviceSerialNumber",
        "PlateID",
        "DetectorID",
        # Dates and times
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "InstanceCreationDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "InstanceCreationTime",
        "AcquisitionDateTime",
        # Instance identifiers
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "MediaStorageSOPInstanceUID",
        "ReferencedSOPInstanceUID",
        "FrameOfReferenceUID",
        "SynchronizationFrameOfReferenceUID",
        "IrradiationEventUID",
        "InstanceCreatorUID",
        "StorageMediaFileSetUID",
        "UID",
        # Free text that often carries names
        "ImageComments",
        "DerivationDescription",
        "SeriesDescription",
        "ProtocolName",
    }
)
"""DICOM keywords treated as identifying (after the PS3.15 Annex E basic profile).

The reader never copies any of these into :attr:`DicomImage.meta`; the
de-identification tools remove or replace them.
"""


WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (50.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
"""Named CT windows as ``(center, width)`` in Hounsfield units.

Conventional values (Radiopaedia, "Windowing (CT)"); they only make sense for
images whose modality LUT yields Hounsfield units, i.e. CT.
"""

OUTPUTS: tuple[str, ...] = ("display", "modality")
"""Values :func:`read_dicom` can return: windowed [0, 1] or modality units."""

# Greyscale photometric interpretations and the colour ones that decode to RGB.
_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
_RGB_LIKE = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"})

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


@dataclass(frozen=True)
class DicomImage:
    """Decoded pixels plus a whitelist of non-identifying header values.

    Attributes:
        pixels: float32; in [0, 1] for ``output="display"`` (the default), in
            modality units (e.g. Hounsfield units) for ``output="modality"``.
            ``(H, W)`` greyscale, ``(F, H, W)`` greyscale with all frames,
            ``(H, W, 3)`` / ``(F, H, W, 3)`` RGB.
        meta: Exactly the keys in :data:`META_KEYS`, values plain Python types or None.
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_window(window: tuple[float, float] | str | None) -> tuple[float, float] | None:
    """Turn a preset name or a ``(center, width)`` pair into a checked window.

    Args:
        window: A key of :data:`WINDOW_PRESETS`, a ``(center, width)`` pair, or None.

    Returns:
        ``(center, width)`` as floats, or None when ``window`` is None.

    Raises:
        ValueError: Unknown preset name, not a pair, or a width that is not > 0.
    """
    if window is None:
        return None
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in WINDOW_PRESETS:
            known = ", ".join(sorted(WINDOW_PRESETS))
            raise ValueError(f"unknown window preset {window!r}; known presets: {known}")
        return WINDOW_PRESETS[key]
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError) as err:
        message = f"window must be a preset name or (center, width), got {window!r}"
        raise ValueError(message) from err
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ValueError(f"window width must be > 0 and values finite, got {window!r}")
    return center, width


def read_image(path: str | os.PathLike[str], **kwargs: Any) -> DicomImage:
    """Read a DICOM, PNG or JPEG file, choosing the reader by suffix.

    ``.png``, ``.jpg`` and ``.jpeg`` go to Pillow (greyscale only); any other
    suffix, or none, is read as DICOM (DICOM files are often named by UID or
    carry vendor suffixes such as ``.IMA``).

    Args:
        path: The file.
        **kwargs: Passed to :func:`read_dicom`; for Pillow files only
            ``max_pixels`` is used (``window`` and ``all_frames`` do not apply).

    Returns:
        The decoded image.

    Raises:
        DicomReadError: The file cannot be read; the message names it and why.
    """
    if Path(path).suffix.lower() in PIL_SUFFIXES:
        return _read_pil(path, max_pixels=kwargs.get("max_pixels", 100_000_000))
    return read_dicom(path, **kwargs)


def read_dicom(
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] | str | None = None,
    all_frames: bool = False,
    max_pixels: int | None = 100_000_000,
    output: str = "display",
) -> DicomImage:
    """Decode a DICOM file into float32 pixels.

    Greyscale (``output="display"``): modality LUT (rescale or *Modality LUT
    Sequence*), then the first VOI of the file (*VOI LUT Sequence* preferred
    over window center/width with LINEAR, LINEAR_EXACT or SIGMOID, as pydicom's
    ``apply_voi_lut``) scaled to [0, 1] by that stage's output range; without
    VOI information, min-max over the frames decoded (a constant image becomes
    zeros); MONOCHROME1 is inverted last. Enhanced multi-frame images take
    rescale and window per frame from their functional groups. Colour (RGB,
    YBR_*, PALETTE COLOR): RGB scaled by bit depth.

    ``output="modality"`` stops after the modality LUT: Hounsfield units for
    CT, unscaled and unclipped (greyscale only).

    Args:
        path: The DICOM file (Part 10, with preamble and file meta).
        window: ``(center, width)`` in modality units, or a name from
            :data:`WINDOW_PRESETS` such as ``"lung"``; replaces the file's own
            VOI with a plain linear window ``clip((x - (c - w/2)) / w, 0, 1)``.
        all_frames: Return every frame of a multi-frame image instead of the first.
        max_pixels: Refuse images with more decoded values than this
            (rows x columns x frames x samples); None disables the check.
        output: ``"display"`` ([0, 1], windowed) or ``"modality"`` (modality units).

    Returns:
        The pixels and the whitelisted meta (:data:`META_KEYS`).

    Raises:
        DicomReadError: Missing file, not DICOM, truncated or corrupt data, no
            pixel data, no decoder for the transfer syntax, pixel data length
            not matching the header, too many pixels, or non-finite output.
        ValueError: Bad arguments (unknown preset, width <= 0, unknown output).
    """
    window = resolve_window(window)
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "modality" and window is not None:
        raise ValueError("window applies to output='display' only")
    ds = _open_dataset(path)
    try:
        return _read_dataset(
            path, ds, window=window, all_frames=all_frames, max_pixels=max_pixels, output=output
        )
    except DicomReadError:
        raise
    except Exception as err:  # noqa: BLE001 - pydicom converts elements lazily: late parse errors
        raise _error(path, "corrupt DICOM header", err, ds) from err


def _read_dataset(
    path: str | os.PathLike[str],
    ds: Any,
    *,
    window: tuple[float, float] | None,
    all_frames: bool,
    max_pixels: int | None,
    output: str,
) -> DicomImage:
    """:func:`read_dicom` after parsing: checks, decoding, grey levels or colour, meta."""
    tsyntax, frames = _check_pixel_data(path, ds, all_frames=all_frames, max_pixels=max_pixels)
    arr = _decode(path, ds, all_frames=all_frames)

    photometric = _photometric(ds)
    try:
        if photometric in _GREY:
            views = _frame_views(path, ds, frames if all_frames else 1)
            values = _modality(arr, views)
            if output == "modality":
                pixels, used_window = values.astype(np.float32), None
            else:
                pixels, used_window = _greyscale(values, views, window, photometric)
        elif output == "modality":
            raise DicomReadError(
                path, f"output='modality' needs a greyscale image, not {photometric}"
            )
        elif photometric in _RGB_LIKE or photometric == "PALETTE COLOR":
            pixels, used_window = _colour(arr, ds, photometric), None
        else:
            raise DicomReadError(
                path, f"unsupported photometric interpretation {photometric or '(missing)'!r}"
            )
    except DicomReadError:
        raise
    except Exception as err:  # noqa: BLE001 - bad LUTs / windows in the header
        raise _error(path, "invalid LUT or window in header", err, ds) from err

    if not np.isfinite(pixels).all():
        raise DicomReadError(path, "decoded pixels contain NaN or infinity")
    meta = _meta(ds, tsyntax, frames=frames, window=used_window)
    return DicomImage(pixels=pixels, meta=meta)


def _open_dataset(path: str | os.PathLike[str], *, stop_before_pixels: bool = False) -> Any:
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
        raise _error(path, "truncated or corrupt DICOM", err) from err


def _error(
    path: str | os.PathLike[str], what: str, err: BaseException, ds: Any = None
) -> DicomReadError:
    """A DicomReadError for ``what``, quoting ``err`` with identifying header values removed.

    Library messages rarely quote header values, but when they do, any value of
    an :data:`IDENTIFYING_KEYWORDS` element found in ``ds`` (and each ``^``
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


def _photometric(ds: Any) -> str:
    return str(ds.get("PhotometricInterpretation", "")).strip().upper()


def _check_pixel_data(
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


def _decode(path: str | os.PathLike[str], ds: Any, *, all_frames: bool) -> np.ndarray:
    """Stored values of the first or of all frames (YBR converted to RGB)."""
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # raw=False: pydicom converts YBR_FULL / YBR_FULL_422 to RGB
            # (pydicom.pixels.convert_color_space) unless the codec already did.
            return pixel_array(ds, index=None if all_frames else 0, raw=False)
    except Exception as err:  # noqa: BLE001 - decoder errors have many types
        raise _error(path, "pixel data could not be decoded", err, ds) from err


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


def _frame_views(path: str | os.PathLike[str], ds: Any, count: int) -> list[Any]:
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


def _modality(arr: np.ndarray, views: list[Any]) -> np.ndarray:
    """Modality LUT per frame (one call when every frame shares one view)."""
    from pydicom.pixels import apply_modality_lut

    if len(views) == 1:
        return apply_modality_lut(arr, views[0])
    frames = zip(arr, views, strict=True)
    return np.stack([apply_modality_lut(frame, view) for frame, view in frames])


def _greyscale(
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
            out = _min_max(values) if out is None else out
        else:
            frames = [_voi(frame, view) for frame, view in zip(values, views, strict=True)]
            missing = [i for i, f in enumerate(frames) if f is None]
            if missing:  # frames without VOI share one min-max over themselves
                scaled = _min_max(values[missing])
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


def _min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own range; a constant image becomes zeros."""
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 0:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _colour(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
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


def _meta(
    ds: Any, tsyntax: Any, *, frames: int, window: tuple[float, float] | None
) -> dict[str, Any]:
    """Whitelisted, non-identifying header values as plain Python types."""
    spacing = _spacing(ds.get("PixelSpacing")) or _spacing(ds.get("ImagerPixelSpacing"))
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    return {
        "modality": _text(ds.get("Modality")),
        "photometric_interpretation": _text(ds.get("PhotometricInterpretation")),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "number_of_frames": int(frames),
        "bits_stored": int(ds.BitsStored) if ds.get("BitsStored") is not None else None,
        "pixel_spacing": spacing,
        "view_position": _text(ds.get("ViewPosition")),
        "body_part": _text(ds.get("BodyPartExamined")),
        "sop_class_uid": _text(sop_class),
        "transfer_syntax_uid": str(tsyntax),
        "window": window,
    }


def _spacing(value: Any) -> tuple[float, ...] | None:
    """A (row, column) spacing in mm, or None when missing, malformed or not positive."""
    try:
        spacing = tuple(float(v) for v in value) if value else None
    except (TypeError, ValueError):
        return None
    if not spacing or len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        return None
    return spacing


def _text(value: Any) -> str | None:
    """A header value as a stripped string, None when empty or missing."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _read_pil(path: str | os.PathLike[str], *, max_pixels: int | None) -> DicomImage:
    """Read a PNG/JPEG as greyscale float32 [0, 1] ('L' / 'I;16' scaled by bit depth)."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise DicomReadError(path, "file not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                reason = f"image has {width * height} pixels, over max_pixels={max_pixels}"
                raise DicomReadError(path, reason)
            mode = img.mode
            if mode.startswith("I;16"):
                arr, bits = np.asarray(img).astype(np.float32) / 65535.0, 16
            elif mode == "I":  # 32-bit int container, used for 16-bit PNGs by old Pillow
                arr, bits = np.clip(np.asarray(img, dtype=np.float64) / 65535.0, 0, 1), 16
            elif mode == "F":
                arr, bits = _min_max(np.asarray(img, dtype=np.float64)), 32
            else:
                grey = img if mode == "L" else img.convert("L")
                arr, bits = np.asarray(grey).astype(np.float32) / 255.0, 8
    except DicomReadError:
        raise
    except UnidentifiedImageError as err:
        raise DicomReadError(path, "not a readable PNG/JPEG image") from err
    except Exception as err:  # noqa: BLE001 - truncated files raise OSError and others
        reason = f"truncated or corrupt image ({type(err).__name__}: {err})"
        raise DicomReadError(path, reason) from err
    pixels = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise DicomReadError(path, "decoded pixels contain NaN or infinity")
    meta = dict.fromkeys(META_KEYS)
    meta.update(
        photometric_interpretation="MONOCHROME2",
        rows=int(height),
        columns=int(width),
        number_of_frames=1,
        bits_stored=bits,
    )
    return DicomImage(pixels=pixels, meta=meta)
