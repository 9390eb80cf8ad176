"""A MONAI ``ImageReader`` backed by medvl's DICOM reader and series assembler.

``monai.transforms.LoadImage(reader=MedvlDicomReader())`` (or ``LoadImaged``)
then reads a DICOM file through :func:`medvl.data.dicom.read_dicom` (modality
LUT, VOI/window, MONOCHROME1, colour; [0, 1] by default) and a folder through
:func:`medvl.data.series.read_series` (a volume in modality units, e.g.
Hounsfield units). The reader follows MONAI's ``ImageReader`` contract
(``verify_suffix`` / ``read`` / ``get_data`` returning ``(array, meta)``) and,
like MONAI's own ``PydicomReader``, returns spatial axes in ``(x, y[, z])``
order with a RAS ``affine`` (``numpy_order=True`` keeps medvl's ``(H, W)`` /
``(D, H, W)`` order instead). ``original_channel_dim`` is set so that
``EnsureChannelFirst`` works: no channel for greyscale images and volumes, the
last axis for RGB, the first axis for the frames of ``all_frames=True``.

The affine follows PS3.3 C.7.6.2.1.1 (the DICOM "equation of the image
plane"): voxel centres from *ImagePositionPatient*, *ImageOrientationPatient*
and *PixelSpacing*, in LPS, flipped to RAS by default as MONAI's readers do.
Radiographs without patient geometry get a spacing-only affine (their pixel
spacing, or 1 mm), which is not flipped. Meta holds only the non-identifying
values of :data:`medvl.data.dicom.META_KEYS` or :attr:`DicomVolume.meta`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from medvl.data.dicom import read_dicom
from medvl.data.pixels import GREY, DicomReadError, frame_views
from medvl.data.series import read_series

__all__ = ["DICOM_SUFFIXES", "MedvlDicomReader"]

DICOM_SUFFIXES: frozenset[str] = frozenset({"", ".dcm", ".dicom", ".dic", ".ima"})
"""Suffixes :meth:`MedvlDicomReader.verify_suffix` accepts (and all-digit ones, as in UIDs)."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class _Loaded:
    """One read file or folder, in medvl's numpy axis order."""

    array: np.ndarray
    affine: np.ndarray  # (4, 4) LPS (or spacing-only) map from numpy-order index to mm
    spatial_ndim: int
    channel_dim: int | None  # axis of channels in ``array``, None without channels
    patient_space: bool  # affine is in patient coordinates (not spacing-only)
    meta: dict[str, Any]


class MedvlDicomReader(ImageReader):
    """Load DICOM files and series for MONAI with medvl's faithful pipeline.

    Args:
        window: ``(center, width)`` or a :data:`~medvl.data.dicom.WINDOW_PRESETS`
            name for single files (``output="display"`` only).
        all_frames: Read every frame of a multi-frame file (frames become channels).
        output: ``"display"`` ([0, 1]) or ``"modality"`` (e.g. HU) for single files.
        max_pixels: Passed to :func:`~medvl.data.dicom.read_dicom`.
        series_uid: Which series a folder read picks (UID or :attr:`SeriesInfo.key`).
        on_irregular: Passed to :func:`~medvl.data.series.read_series`.
        as_volume: Read files, not only folders, as series (enhanced multi-frame
            CT/MR files become volumes).
        channel_dim: Override ``original_channel_dim`` (as MONAI's readers).
        affine_lps_to_ras: Convert patient-space affines from DICOM's LPS to RAS.
        numpy_order: Keep ``(H, W)`` / ``(D, H, W)`` instead of MONAI's ``(x, y[, z])``.
    """

    def __init__(
        self,
        *,
        window: tuple[float, float] | str | None = None,
        all_frames: bool = False,
        output: str = "display",
        max_pixels: int | None = 100_000_000,
        series_uid: str | None = None,
        on_irregular: str = "error",
        as_volume: bool = False,
        channel_dim: int | None = None,
        affine_lps_to_ras: bool = True,
        numpy_order: bool = False,
    ) -> None:
        super().__init__()
        self.window = window
        self.all_frames = all_frames
        self.output = output
        self.max_pixels = max_pixels
        self.series_uid = series_uid
        self.on_irregular = on_irregular
        self.as_volume = as_volume
        self.channel_dim = channel_dim
        self.affine_lps_to_ras = affine_lps_to_ras
        self.numpy_order = numpy_order

    def verify_suffix(
        self, filename: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str
    ) -> bool:
        """True when every name is a folder or has a DICOM-like suffix (or none, or digits).

        Args:
            filename: A path or a sequence of paths.
        """
        for name in ensure_tuple(filename):
            path = Path(name)
            suffix = path.suffix.lower()
            if not (path.is_dir() or suffix in DICOM_SUFFIXES or suffix[1:].isdigit()):
                return False
        return True

    def read(
        self, data: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str, **kwargs: Any
    ) -> Any:
        """Decode each file (or series folder); failures raise :class:`DicomReadError`.

        Args:
            data: A path or a sequence of paths (stacked as channels by ``get_data``).
            **kwargs: Unused (MONAI passes none).

        Returns:
            One loaded image, or a list of them for several paths.
        """
        loaded = [self._read_one(Path(p)) for p in ensure_tuple(data)]
        return loaded[0] if len(loaded) == 1 else loaded

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Array and meta (``affine``, ``spatial_shape``, ``original_channel_dim``, ...).

        Args:
            img: What :meth:`read` returned.

        Returns:
            The array (several images stacked or concatenated along the channel
            axis, as MONAI's readers do) and the meta of the first image.
        """
        arrays, metas = [], []
        for item in ensure_tuple(img):
            array, meta = self._to_monai(item)
            arrays.append(array)
            metas.append(meta)
        meta = metas[0]
        for other in metas[1:]:
            if not np.allclose(other[MetaKeys.AFFINE], meta[MetaKeys.AFFINE]) or not np.array_equal(
                other[MetaKeys.SPATIAL_SHAPE], meta[MetaKeys.SPATIAL_SHAPE]
            ):
                raise ValueError(
                    "images stacked as channels need the same affine and spatial shape"
                )
        if len(arrays) == 1:
            return arrays[0], meta
        channel = meta[MetaKeys.ORIGINAL_CHANNEL_DIM]
        if isinstance(channel, float) and np.isnan(
            channel
        ):  # no channel: stack on a new first axis
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return np.stack(arrays, axis=0), meta
        return np.concatenate(arrays, axis=int(channel)), meta

    def _read_one(self, path: Path) -> _Loaded:
        if path.is_dir() or self.as_volume:
            return self._read_volume(path)
        image = read_dicom(
            path,
            window=self.window,
            all_frames=self.all_frames,
            max_pixels=self.max_pixels,
            output=self.output,
        )
        pixels = image.pixels
        colour = image.meta["photometric_interpretation"] not in GREY
        frames = pixels.ndim == (4 if colour else 3)
        if colour and frames:
            raise DicomReadError(
                path, "multi-frame colour images are not supported here; read one frame"
            )
        channel_dim = 0 if frames else (pixels.ndim - 1 if colour else None)
        affine, patient = _plane_affine(path, image.meta)
        return _Loaded(pixels, affine, 2, channel_dim, patient, _plain(image.meta))

    def _read_volume(self, path: Path) -> _Loaded:
        volume = read_series(path, series_uid=self.series_uid, on_irregular=self.on_irregular)
        return _Loaded(volume.volume, volume.affine, 3, None, True, _plain(volume.meta))

    def _to_monai(self, item: _Loaded) -> tuple[np.ndarray, dict[str, Any]]:
        """Move to MONAI's axis order and build the meta MONAI's transforms read."""
        array, affine = item.array, item.affine.copy()
        spatial = [a for a in range(array.ndim) if a != item.channel_dim]
        if (
            not self.numpy_order
        ):  # reverse the spatial axes: (H, W) -> (W, H), (D, H, W) -> (W, H, D)
            perm = list(range(array.ndim))
            for axis, new in zip(spatial, reversed(spatial), strict=True):
                perm[axis] = new
            array = np.transpose(array, perm)
            order = list(reversed(range(item.spatial_ndim)))
            affine[:, : item.spatial_ndim] = affine[:, order]
        if item.patient_space and self.affine_lps_to_ras:
            affine = _LPS_TO_RAS @ affine
        meta = dict(item.meta)
        meta[MetaKeys.AFFINE] = affine
        meta[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray([array.shape[a] for a in spatial])
        meta[MetaKeys.SPACE] = (
            SpaceKeys.RAS if self.affine_lps_to_ras or not item.patient_space else SpaceKeys.LPS
        )
        if self.channel_dim is not None:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
        elif item.channel_dim is None:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")  # MONAI's "no_channel"
        else:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = (
                -1 if item.channel_dim == array.ndim - 1 else item.channel_dim
            )
        return np.ascontiguousarray(array), meta


def _plane_affine(path: Path, meta: dict[str, Any]) -> tuple[np.ndarray, bool]:
    """``(4, 4)`` map from numpy-order ``(row, column)`` index to LPS mm; whether in patient space.

    Uses the first frame's plane (functional groups included); without
    position/orientation, a spacing-only affine from the meta's pixel spacing.
    """
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)  # already read once: parses
    view = frame_views(path, ds, 1)[0]
    try:
        position = np.asarray([float(v) for v in view.ImagePositionPatient])
        orientation = np.asarray([float(v) for v in view.ImageOrientationPatient])
        spacing = np.asarray([float(v) for v in view.PixelSpacing])
        if position.shape != (3,) or orientation.shape != (6,) or spacing.shape != (2,):
            raise ValueError("malformed plane geometry")
    except (AttributeError, TypeError, ValueError):
        dy, dx = meta.get("pixel_spacing") or (1.0, 1.0)
        return np.diag([float(dy), float(dx), 1.0, 1.0]), False
    row_cos = orientation[:3] / np.linalg.norm(orientation[:3])
    col_cos = orientation[3:] / np.linalg.norm(orientation[3:])
    affine = np.eye(4)
    affine[:3, 0] = col_cos * spacing[0]  # down the rows: column cosine x row spacing
    affine[:3, 1] = row_cos * spacing[1]  # along a row: row cosine x column spacing
    affine[:3, 2] = np.cross(row_cos, col_cos)
    affine[:3, 3] = position
    return affine, True


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """Meta safe for MONAI's collation: None becomes ``"none"`` (as MONAI's readers do)."""
    return {key: "none" if value is None else value for key, value in meta.items()}
