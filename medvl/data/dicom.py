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
depth. The stages live in :mod:`medvl.data.pixels` and are pydicom's own
(``pydicom.pixels.apply_modality_lut``, ``apply_voi_lut``, ``apply_color_lut``);
tests hold the output to them on every file of pydicom's and pydicom-data's
test corpus. This module chooses the stages for one image and reads PNG/JPEG.

Only non-identifying header values reach :attr:`DicomImage.meta`; the keywords
the project treats as identifying (PS3.15 Annex E basic profile) are listed in
:data:`medvl.data.deid.IDENTIFYING_KEYWORDS` (re-exported here). Any failure
raises :class:`DicomReadError` naming the file and the reason; nothing is
returned half-decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.deid import IDENTIFYING_KEYWORDS
from medvl.data.pixels import (
    GREY,
    RGB_LIKE,
    DicomReadError,
    apply_modality,
    as_read_error,
    check_pixel_data,
    colour_display,
    decode_pixels,
    frame_views,
    greyscale_display,
    header_text,
    min_max_scale,
    open_dataset,
    photometric_interpretation,
)

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
        DicomReadError: Missing, empty or non-DICOM file, truncated or corrupt
            data (including a decoder that panics), no pixel data, no decoder for
            the transfer syntax, pixel data length or codestream size not matching
            the header, too many pixels, a declared size over
            :data:`medvl.data.pixels.MAX_DECODED_BYTES`, or non-finite output.
            Nothing else escapes for bad input.
        ValueError: Bad arguments (unknown preset, width <= 0, unknown output).
    """
    window = resolve_window(window)
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if output == "modality" and window is not None:
        raise ValueError("window applies to output='display' only")
    ds = open_dataset(path)
    # pydicom converts elements lazily: a corrupt value or VR fails late, here.
    with as_read_error(path, "corrupt DICOM header", ds):
        image = _read_dataset(
            path, ds, window=window, all_frames=all_frames, max_pixels=max_pixels, output=output
        )
    return image


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
    tsyntax, frames = check_pixel_data(path, ds, all_frames=all_frames, max_pixels=max_pixels)
    arr = decode_pixels(path, ds, all_frames=all_frames)

    photometric = photometric_interpretation(ds)
    with as_read_error(path, "invalid LUT or window in header", ds):  # bad LUTs / windows
        if photometric in GREY:
            views = frame_views(path, ds, frames if all_frames else 1)
            values = apply_modality(arr, views)
            if output == "modality":
                pixels, used_window = values.astype(np.float32), None
            else:
                pixels, used_window = greyscale_display(values, views, window, photometric)
        elif output == "modality":
            raise DicomReadError(
                path, f"output='modality' needs a greyscale image, not {photometric}"
            )
        elif photometric in RGB_LIKE or photometric == "PALETTE COLOR":
            pixels, used_window = colour_display(arr, ds, photometric), None
        else:
            raise DicomReadError(
                path, f"unsupported photometric interpretation {photometric or '(missing)'!r}"
            )

    if not np.isfinite(pixels).all():
        raise DicomReadError(path, "decoded pixels contain NaN or infinity")
    meta = _meta(ds, tsyntax, frames=frames, window=used_window)
    return DicomImage(pixels=pixels, meta=meta)


def _meta(
    ds: Any, tsyntax: Any, *, frames: int, window: tuple[float, float] | None
) -> dict[str, Any]:
    """Whitelisted, non-identifying header values as plain Python types."""
    spacing = _spacing(ds.get("PixelSpacing")) or _spacing(ds.get("ImagerPixelSpacing"))
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    return {
        "modality": header_text(ds.get("Modality")),
        "photometric_interpretation": header_text(ds.get("PhotometricInterpretation")),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "number_of_frames": int(frames),
        "bits_stored": int(ds.BitsStored) if ds.get("BitsStored") is not None else None,
        "pixel_spacing": spacing,
        "view_position": header_text(ds.get("ViewPosition")),
        "body_part": header_text(ds.get("BodyPartExamined")),
        "sop_class_uid": header_text(sop_class),
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
                arr, bits = min_max_scale(np.asarray(img, dtype=np.float64)), 32
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
