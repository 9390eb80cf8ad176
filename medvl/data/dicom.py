"""Read a radiograph from DICOM (or PNG/JPEG) into a float32 array in [0, 1].

The greyscale pipeline follows the DICOM grayscale transformation chain (PS3.3
C.11, PS3.4 N.2.1.1): stored values -> modality LUT (rescale slope/intercept or
*Modality LUT Sequence*) -> VOI LUT (window center/width with LINEAR,
LINEAR_EXACT or SIGMOID, or a *VOI LUT Sequence*) -> scale the VOI output range
to [0, 1] -> invert MONOCHROME1 so that 1 is always bright. Colour images
(RGB, YBR_*, PALETTE COLOR) become H x W x 3 RGB scaled by their bit depth.

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
    "PIL_SUFFIXES",
    "DicomImage",
    "DicomReadError",
    "read_dicom",
    "read_image",
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

# Greyscale photometric interpretations and the colour ones that decode to RGB.
_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
_RGB_LIKE = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}
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
        pixels: float32 in [0, 1]; ``(H, W)`` greyscale, ``(F, H, W)`` greyscale
            with all frames, ``(H, W, 3)`` / ``(F, H, W, 3)`` RGB.
        meta: Exactly the keys in :data:`META_KEYS`, values plain Python types or None.
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


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
    window: tuple[float, float] | None = None,
    all_frames: bool = False,
    max_pixels: int | None = 100_000_000,
) -> DicomImage:
    """Decode a DICOM file into float32 pixels in [0, 1].

    Greyscale: modality LUT, then the first VOI of the file (VOI LUT Sequence
    preferred over window center/width) scaled by that stage's output range;
    without VOI information, min-max over the frames decoded (a constant image
    becomes zeros); MONOCHROME1 is inverted last. Colour: RGB scaled by bit depth.

    Args:
        path: The DICOM file (Part 10, with preamble and file meta).
        window: ``(center, width)`` in modality units (e.g. Hounsfield units)
            that replaces the file's own VOI; a plain linear window.
        all_frames: Return every frame of a multi-frame image instead of the first.
        max_pixels: Refuse images with more decoded values than this
            (rows x columns x frames x samples); None disables the check.

    Returns:
        The pixels and the whitelisted meta (:data:`META_KEYS`).

    Raises:
        DicomReadError: Missing file, not DICOM, truncated or corrupt data, no
            pixel data, no decoder for the transfer syntax, pixel data length
            not matching the header, too many pixels, or non-finite output.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not Path(path).is_file():
        raise DicomReadError(path, "file not found")
    if window is not None and not float(window[1]) > 0:
        raise ValueError(f"window width must be > 0, got {window[1]!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on harmless header quirks
            ds = pydicom.dcmread(path, force=False)
    except InvalidDicomError as err:
        raise DicomReadError(path, f"not a DICOM file ({err})") from err
    except Exception as err:  # noqa: BLE001 - any parse failure means corrupt input
        reason = f"truncated or corrupt DICOM ({type(err).__name__}: {err})"
        raise DicomReadError(path, reason) from err

    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        reason = "no PixelData element" + (f" ({other[0]} is not supported)" if other else "")
        raise DicomReadError(path, reason)

    tsyntax = _check_decodable(path, ds)
    frames = _check_geometry(path, ds, all_frames=all_frames, max_pixels=max_pixels)

    try:
        from pydicom.pixels import pixel_array

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # raw=False: pydicom converts YBR_FULL / YBR_FULL_422 to RGB
            # (pydicom.pixels.convert_color_space) unless the codec already did.
            arr = pixel_array(ds, index=None if all_frames else 0, raw=False)
    except Exception as err:  # noqa: BLE001 - decoder errors have many types
        raise DicomReadError(
            path, f"pixel data could not be decoded ({type(err).__name__}: {err})"
        ) from err

    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    try:
        if photometric in _GREY:
            pixels, used_window = _greyscale(arr, ds, window)
        elif photometric in _RGB_LIKE or photometric == "PALETTE COLOR":
            pixels, used_window = _colour(arr, ds, photometric), None
        else:
            raise DicomReadError(
                path, f"unsupported photometric interpretation {photometric or '(missing)'!r}"
            )
    except DicomReadError:
        raise
    except Exception as err:  # noqa: BLE001 - bad LUTs / windows in the header
        raise DicomReadError(
            path, f"invalid LUT or window in header ({type(err).__name__}: {err})"
        ) from err

    if not np.isfinite(pixels).all():
        raise DicomReadError(path, "decoded pixels contain NaN or infinity")
    meta = _meta(ds, tsyntax, frames=frames, window=used_window)
    return DicomImage(pixels=pixels, meta=meta)


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
    """Check size limits and native pixel data length; return the number of frames."""
    from pydicom.pixels.utils import get_expected_length, get_nr_frames

    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = get_nr_frames(ds, warn=False)
        int(ds.BitsAllocated)
    except Exception as err:  # noqa: BLE001
        raise DicomReadError(path, f"incomplete image pixel module ({err})") from err
    if rows <= 0 or cols <= 0:
        raise DicomReadError(path, f"invalid image size {rows}x{cols}")
    decoded = rows * cols * samples * (frames if all_frames else 1)
    if max_pixels is not None and decoded > max_pixels:
        raise DicomReadError(
            path,
            f"image has {decoded} values (rows x columns x frames x samples), "
            f"over max_pixels={max_pixels}",
        )
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        expected = get_expected_length(ds, unit="bytes")
        actual = len(ds.PixelData)
        # Native pixel data is padded to an even length; anything else is a mismatch.
        if not expected <= actual <= expected + (expected % 2):
            raise DicomReadError(
                path,
                f"pixel data is {actual} bytes but rows x columns x frames x samples x "
                f"bits allocated needs {expected} (truncated or inconsistent header)",
            )
    return frames


def _greyscale(
    arr: np.ndarray, ds: Any, window: tuple[float, float] | None
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Modality LUT -> VOI -> [0, 1] -> MONOCHROME1 inversion; return pixels and window."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds)
    used: tuple[float, float] | None = None
    if window is not None:
        center, width = float(window[0]), float(window[1])
        low = center - width / 2
        out = np.clip((values.astype(np.float64) - low) / width, 0.0, 1.0)
        used = (center, width)
    elif _has_voi_lut(ds):
        if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)  # LUT lookup needs integer indices
        lut = ds.VOILUTSequence[0]
        depth = int(lut.LUTDescriptor[2])
        out = apply_voi_lut(values, ds, index=0, prefer_lut=True) / float(2**depth - 1)
    elif _has_window(ds):
        lo, hi = _voi_output_range(ds)
        out = (apply_voi_lut(values, ds, index=0, prefer_lut=False) - lo) / (hi - lo)
        used = (_first(ds["WindowCenter"]), _first(ds["WindowWidth"]))
    else:
        out = _min_max(values)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are bright
    return out, used


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
