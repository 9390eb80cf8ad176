"""Assemble a CT/MR series into a 3D volume in modality units (Hounsfield units for CT).

A series is every image with one *SeriesInstanceUID*: a folder of single-frame
slices, or an enhanced multi-frame file whose frames carry their own plane
position (PS3.3 C.7.6.16). Slices are sorted by their position along the slice
normal, ``n = row_cosine x column_cosine`` from *ImageOrientationPatient* and
``s = n . ImagePositionPatient`` (PS3.3 C.7.6.2.1.1; nibabel's "DICOM
orientation" notes), and stacked after the modality LUT only: no window, no
scaling to [0, 1]. Pixels go through :mod:`medvl.data.pixels`, the pipeline of
:func:`medvl.data.dicom.read_dicom`, so decoding, errors and functional groups
behave exactly as for single images.

Geometry policy. Always an error (:class:`~medvl.data.dicom.DicomReadError`):
a slice without *ImagePositionPatient*, *ImageOrientationPatient* or
*PixelSpacing*; slices with different orientations, sizes or pixel spacings;
two slices at the same position; a classic multi-frame file (its frames have no
positions). "Irregular" stacks, where the gaps between sorted positions differ
from their median by more than ``spacing_tolerance`` (relative; e.g. a missing
slice) or the slice origins do not lie on one line along the normal (gantry
tilt), raise by default (``on_irregular="error"``); with
``on_irregular="warn"`` they emit a :class:`UserWarning` and are stacked as they
are, with the mean gap as z spacing, so the geometry is approximate.

Series UIDs identify a study, so they never appear in a message, a repr or
:attr:`DicomVolume.meta`: :func:`list_series` names series by an opaque
:func:`series_key` (a truncated SHA-256 of the UID).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.pixels import (
    GREY,
    DicomReadError,
    apply_modality,
    as_read_error,
    check_pixel_data,
    decode_pixels,
    frame_views,
    header_text,
    open_dataset,
    photometric_interpretation,
)

__all__ = [
    "IRREGULAR_POLICIES",
    "DicomVolume",
    "SeriesInfo",
    "list_series",
    "read_series",
    "series_key",
]

IRREGULAR_POLICIES: tuple[str, ...] = ("error", "warn")
"""What :func:`read_series` does with irregular slice spacing or sheared stacks."""

_ORIENTATION_ATOL = 1e-3  # direction cosines are written with ~6 decimals
_SPACING_RTOL = 1e-3  # pixel spacing agreement between slices
_DUPLICATE_ATOL_MM = 1e-3  # two slices closer than this along the normal are duplicates
_POSITION_ATOL_MM = 1e-2  # jitter allowed on top of the relative tolerances


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder, named without its UID.

    Attributes:
        key: Opaque :func:`series_key` of the SeriesInstanceUID; pass it to
            :func:`read_series` as ``series_uid``.
        modality: The Modality attribute (``"CT"``, ``"MR"``, ...), or None.
        num_files: Files in the series.
        num_slices: Frames over all its files (one per classic slice).
        rows: Rows of the first file.
        columns: Columns of the first file.
        files: The files, sorted by path.
    """

    key: str
    modality: str | None
    num_files: int
    num_slices: int
    rows: int
    columns: int
    files: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class DicomVolume:
    """A sorted, stacked series in patient coordinates (DICOM LPS, millimetres).

    Array axis 0 runs along the slice normal (increasing position), axis 1 down
    the rows, axis 2 along the columns. The centre of voxel ``(k, j, i)`` is at
    ``origin + k * spacing[0] * direction[0] + j * spacing[1] * direction[1]
    + i * spacing[2] * direction[2]`` (see :attr:`affine`).

    Attributes:
        volume: float32 ``(D, H, W)`` in modality units (Hounsfield units for CT).
        spacing: ``(z, y, x)`` in mm: the gap between sorted slice positions
            (one slice: SpacingBetweenSlices, else SliceThickness, else 1),
            then *PixelSpacing* (row spacing, column spacing).
        origin: LPS position ``(x, y, z)`` of voxel ``(0, 0, 0)``: the
            *ImagePositionPatient* of the first sorted slice.
        direction: ``(3, 3)``; row ``a`` is the LPS unit vector of array axis
            ``a``: the slice normal, the column cosine, the row cosine.
        meta: Non-identifying values: modality, units, series_key, num_slices,
            rows, columns, slice_thickness, body_part, sop_class_uid, irregular.
    """

    volume: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` map from array index ``(k, j, i, 1)`` to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction.T * np.asarray(self.spacing)  # column a = axis a
        affine[:3, 3] = self.origin
        return affine


@dataclass
class _Slice:
    """One frame of one file, with the geometry it is placed by."""

    path: str
    frame: int
    position: np.ndarray  # (3,) ImagePositionPatient
    orientation: np.ndarray  # (6,) ImageOrientationPatient
    pixel_spacing: np.ndarray  # (2,) row spacing, column spacing
    shape: tuple[int, int]
    thickness: float | None  # SliceThickness (mm)
    nominal_gap: float | None  # SpacingBetweenSlices, else SliceThickness (mm)
    values: np.ndarray  # (H, W) modality units


def series_key(uid: str) -> str:
    """Opaque, stable name of a SeriesInstanceUID (12 hex digits of its SHA-256)."""
    return hashlib.sha256(str(uid).strip().encode("ascii", "replace")).hexdigest()[:12]


def list_series(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[SeriesInfo]:
    """Find the image series in a folder.

    Files that are not DICOM Part 10 (notes, thumbnails) and DICOM objects
    without an image (no *Rows*: ``DICOMDIR``, structured reports, RT
    structure sets) are skipped; a DICOM file with a corrupt header raises.

    Args:
        folder: The folder (or a single DICOM file).
        recursive: Also look in sub-folders.

    Returns:
        One :class:`SeriesInfo` per SeriesInstanceUID, ordered by first file path.

    Raises:
        DicomReadError: The folder does not exist, or a DICOM header is corrupt.
    """
    groups = _scan(folder, recursive=recursive)
    return [info for info, _ in groups.values()]


def read_series(
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    recursive: bool = False,
    on_irregular: str = "error",
    spacing_tolerance: float = 0.01,
    max_voxels: int | None = 500_000_000,
) -> DicomVolume:
    """Read one series into a volume sorted along the slice normal.

    Args:
        folder: A folder of slices, or one enhanced multi-frame file.
        series_uid: Which series, when the folder holds several: its
            SeriesInstanceUID or its :attr:`SeriesInfo.key`.
        recursive: Also look in sub-folders.
        on_irregular: ``"error"`` or ``"warn"`` for irregular slice gaps and
            sheared stacks (see the module docstring).
        spacing_tolerance: Largest relative deviation of a slice gap from the
            median gap that still counts as uniform.
        max_voxels: Refuse series with more voxels than this; None disables it.

    Returns:
        The volume, its geometry and non-identifying meta.

    Raises:
        DicomReadError: No series, several series and none chosen, no series
            matching ``series_uid``, any slice that cannot be read, or
            inconsistent geometry (see the module docstring).
        ValueError: Bad ``on_irregular`` or ``spacing_tolerance``.
    """
    if on_irregular not in IRREGULAR_POLICIES:
        raise ValueError(f"on_irregular must be one of {IRREGULAR_POLICIES}, got {on_irregular!r}")
    if not spacing_tolerance >= 0:
        raise ValueError(f"spacing_tolerance must be >= 0, got {spacing_tolerance!r}")
    groups = _scan(folder, recursive=recursive)
    info, meta_ds = _choose(folder, groups, series_uid)
    voxels = info.num_slices * info.rows * info.columns
    if max_voxels is not None and voxels > max_voxels:
        raise DicomReadError(folder, f"series has {voxels} voxels, over max_voxels={max_voxels}")

    slices = [s for path in info.files for s in _read_slices(path)]
    order, spacing_z, irregular = _check_stack(folder, slices, on_irregular, spacing_tolerance)
    slices = [slices[i] for i in order]
    first = slices[0]
    if len(slices) == 1:  # no gap to measure
        spacing_z = first.nominal_gap if first.nominal_gap is not None else 1.0
    row_cos, col_cos, normal = _axes(first.orientation)
    volume = np.stack([s.values for s in slices])  # (D, H, W) float32
    if not np.isfinite(volume).all():
        raise DicomReadError(folder, "series values contain NaN or infinity")
    with as_read_error(info.files[0], "corrupt DICOM header", meta_ds):
        modality = header_text(meta_ds.get("Modality"))
        meta = {
            "modality": modality,
            "units": "HU" if modality == "CT" else header_text(meta_ds.get("RescaleType")),
            "series_key": info.key,
            "num_slices": len(slices),
            "rows": first.shape[0],
            "columns": first.shape[1],
            "slice_thickness": first.thickness,
            "body_part": header_text(meta_ds.get("BodyPartExamined")),
            "sop_class_uid": header_text(meta_ds.get("SOPClassUID")),
            "irregular": irregular,
        }
    return DicomVolume(
        volume=volume,
        spacing=(float(spacing_z), float(first.pixel_spacing[0]), float(first.pixel_spacing[1])),
        origin=tuple(float(v) for v in first.position),
        direction=np.stack([normal, col_cos, row_cos]),
        meta=meta,
    )


def _candidates(folder: Path, recursive: bool) -> Iterable[Path]:
    if folder.is_file():
        return [folder]
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file())


def _scan(folder: str | os.PathLike[str], *, recursive: bool) -> dict[str, tuple[SeriesInfo, Any]]:
    """Group image files by series: ``{uid: (info, first header)}`` ordered by first path."""
    from pydicom.pixels.utils import get_nr_frames

    root = Path(folder)
    if not root.exists():
        raise DicomReadError(folder, "folder not found")
    found: dict[str, list[tuple[str, Any, int, tuple[str | None, int, int]]]] = {}
    for path in _candidates(root, recursive):
        try:
            ds = open_dataset(path, stop_before_pixels=True)
        except DicomReadError as err:
            if err.reason.startswith("not a DICOM file"):
                continue  # notes, DICOMDIR-less exports, empty files, thumbnails ...
            raise
        if "Rows" not in ds or "Columns" not in ds:
            continue  # not an image (DICOMDIR, SR, RTSTRUCT, ...)
        # Lazily converted, possibly corrupt elements (a bad VR fails here).
        with as_read_error(path, "corrupt DICOM header", ds):
            try:
                frames = int(get_nr_frames(ds, warn=False))
            except (TypeError, ValueError) as err:
                raise DicomReadError(path, "invalid NumberOfFrames (not an integer)") from err
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            header = (header_text(ds.get("Modality")), int(ds.Rows), int(ds.Columns))
        found.setdefault(uid, []).append((str(path), ds, frames, header))
    groups = {}
    for uid, members in found.items():
        _, first, _, (modality, rows, columns) = members[0]
        info = SeriesInfo(
            key=series_key(uid),
            modality=modality,
            num_files=len(members),
            num_slices=sum(frames for _, _, frames, _ in members),
            rows=rows,
            columns=columns,
            files=tuple(path for path, _, _, _ in members),
        )
        groups[uid] = (info, first)
    return dict(sorted(groups.items(), key=lambda item: item[1][0].files[0]))


def _choose(
    folder: str | os.PathLike[str],
    groups: dict[str, tuple[SeriesInfo, Any]],
    series_uid: str | None,
) -> tuple[SeriesInfo, Any]:
    if not groups:
        raise DicomReadError(folder, "no DICOM image files found")
    if series_uid is not None:
        wanted = str(series_uid).strip()
        for uid, (info, ds) in groups.items():
            if wanted in (uid, info.key):
                return info, ds
        # The given UID is not echoed: it identifies a study.
        keys = ", ".join(info.key for info, _ in groups.values())
        raise DicomReadError(
            folder, f"no series matches the given series_uid (series keys: {keys})"
        )
    if len(groups) > 1:
        listing = ", ".join(
            f"{info.key} ({info.modality or '?'}, {info.num_slices} slices)"
            for info, _ in groups.values()
        )
        raise DicomReadError(
            folder,
            f"folder holds {len(groups)} series; choose one with series_uid=<key> "
            f"(series keys: {listing})",
        )
    return next(iter(groups.values()))


def _read_slices(path: str) -> list[_Slice]:
    """Decode every frame of one file to modality units, with each frame's geometry."""
    ds = open_dataset(path)
    # pydicom converts elements lazily: a corrupt value or VR fails late, here.
    with as_read_error(path, "corrupt DICOM header", ds):
        slices = _slices_of(path, ds)
    return slices


def _slices_of(path: str, ds: Any) -> list[_Slice]:
    _, frames = check_pixel_data(path, ds, all_frames=True, max_pixels=None)
    photometric = photometric_interpretation(ds)
    if photometric not in GREY:
        raise DicomReadError(
            path, f"a volume needs greyscale slices, not {photometric or '(missing)'}"
        )
    views = frame_views(path, ds, frames)
    if frames > 1 and len(views) == 1:
        raise DicomReadError(
            path, "classic multi-frame image: its frames have no plane positions to sort by"
        )
    values = apply_modality(decode_pixels(path, ds, all_frames=True), views).astype(np.float32)
    values = values.reshape(frames, int(ds.Rows), int(ds.Columns))  # (F, H, W)
    slices = []
    for index, view in enumerate(views):
        try:
            position = np.asarray([float(v) for v in view.ImagePositionPatient])
            orientation = np.asarray([float(v) for v in view.ImageOrientationPatient])
            spacing = np.asarray([float(v) for v in view.PixelSpacing])
        except (AttributeError, TypeError, ValueError) as err:
            raise DicomReadError(
                path,
                "slice lacks a valid ImagePositionPatient, ImageOrientationPatient or "
                "PixelSpacing; it cannot be placed in 3D",
            ) from err
        if position.shape != (3,) or orientation.shape != (6,) or spacing.shape != (2,):
            raise DicomReadError(
                path, "malformed ImagePositionPatient, ImageOrientationPatient or PixelSpacing"
            )
        if not (spacing > 0).all() or not np.isfinite([*position, *orientation, *spacing]).all():
            raise DicomReadError(path, "non-finite or non-positive plane geometry")
        thickness = _positive(view.get("SliceThickness"))
        gap = _positive(view.get("SpacingBetweenSlices")) or thickness
        slices.append(
            _Slice(
                path,
                index,
                position,
                orientation,
                spacing,
                values[index].shape,
                thickness,
                gap,
                values[index],
            )
        )
    return slices


def _axes(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row cosine, column cosine and slice normal from ImageOrientationPatient."""
    row_cos = orientation[:3] / np.linalg.norm(orientation[:3])
    col_cos = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row_cos, col_cos)
    return row_cos, col_cos, normal / np.linalg.norm(normal)


def _check_stack(
    folder: str | os.PathLike[str],
    slices: list[_Slice],
    on_irregular: str,
    spacing_tolerance: float,
) -> tuple[list[int], float, bool]:
    """Check consistent geometry; return the sort order, z spacing and whether irregular."""
    first = slices[0]
    for s in slices[1:]:
        where = f"{s.path}" + (f" frame {s.frame}" if s.frame else "")
        if s.shape != first.shape:
            raise DicomReadError(
                folder, f"slices have different sizes ({where}: {s.shape} vs {first.shape})"
            )
        if not np.allclose(s.orientation, first.orientation, atol=_ORIENTATION_ATOL, rtol=0):
            raise DicomReadError(folder, f"slices have different orientations ({where})")
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=_SPACING_RTOL, atol=0):
            raise DicomReadError(folder, f"slices have different pixel spacings ({where})")
    row_cos, col_cos, normal = _axes(first.orientation)
    if not abs(float(row_cos @ col_cos)) < 1e-3:
        raise DicomReadError(folder, "ImageOrientationPatient cosines are not orthogonal")
    positions = np.stack([s.position for s in slices])  # (N, 3)
    along = positions @ normal  # (N,) position along the slice normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    if len(slices) == 1:
        return order, 0.0, False
    gaps = np.diff(along[order])
    if (gaps < _DUPLICATE_ATOL_MM).any():
        dup = int(np.argmin(gaps))
        a, b = slices[order[dup]], slices[order[dup + 1]]
        raise DicomReadError(
            folder, f"duplicate slice positions ({a.path} and {b.path} at the same place)"
        )
    median = float(np.median(gaps))
    tolerance = max(spacing_tolerance * median, _POSITION_ATOL_MM)
    problems = []
    if np.abs(gaps - median).max() > tolerance:
        problems.append(
            f"non-uniform slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
            f"(median {median:.4g} mm, tolerance {tolerance:.3g} mm)"
        )
    sorted_pos = positions[order]
    in_plane = (sorted_pos - sorted_pos[0]) - np.outer(along[order] - along[order][0], normal)
    if np.linalg.norm(in_plane, axis=1).max() > tolerance:
        problems.append(
            "slice origins are not on one line along the slice normal (gantry tilt or shear)"
        )
    if problems:
        message = "; ".join(problems)
        if on_irregular == "error":
            raise DicomReadError(folder, f"{message}; pass on_irregular='warn' to stack anyway")
        warnings.warn(f"{folder}: {message}; stacked with the mean gap as z spacing", stacklevel=3)
    spacing = float((along[order][-1] - along[order][0]) / (len(slices) - 1))
    return order, spacing, bool(problems)


def _positive(value: Any) -> float | None:
    """A positive finite float, or None for missing or malformed values."""
    try:
        number = float(value) if value is not None and str(value).strip() else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) and number > 0 else None
