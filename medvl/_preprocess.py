"""Inference preprocessing of an exported encoder: file, array or tensor -> normalised batch.

The eval branch of medvl's training pipeline (:func:`medvl.data.transforms.build_image_transforms`
with ``train=False``) rebuilt with torch and numpy only, so an exported encoder needs
neither MONAI nor Lightning: read the image (DICOM modality LUT, VOI LUT/window,
MONOCHROME1 inversion, scaled to [0, 1], via :func:`medvl.data.dicom.read_image`,
imported on first use), fold colour into BT.601 luma for one-channel encoders, resize
the longest side to ``img_size`` with antialiased bilinear interpolation, zero-pad to a
centred square, then subtract ``mean`` and divide by ``std``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageInput", "Preprocessor", "resize_longest_pad"]

# ITU-R BT.601 luma weights, as medvl.data.transforms.LoadMedicalImage folds RGB.
_LUMA = (0.299, 0.587, 0.114)

ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, Sequence[Any]]


def resize_longest_pad(x: torch.Tensor, size: int, pad_value: float = 0.0) -> torch.Tensor:
    """Resizes so the longest side is ``size`` (aspect kept), then centre-pads to a square.

    The same arithmetic as :class:`medvl.data.transforms.ResizeLongestPad` (bilinear,
    antialiased, rounding of the short side, padding split with the extra pixel at the
    bottom/right), batched.

    Args:
        x: ``(B, C, H, W)`` float images.
        size: Side of the square output.
        pad_value: Value of the padding.

    Returns:
        ``(B, C, size, size)`` float32.
    """
    x = x.to(torch.float32)
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    new_h = min(size, max(1, round(h * scale)))
    new_w = min(size, max(1, round(w * scale)))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return F.pad(x, (left, size - new_w - left, top, size - new_h - top), value=pad_value)  # (B, C, size, size)


class Preprocessor:
    """Turns images into the normalised ``(B, C, S, S)`` batch an exported encoder expects.

    Args:
        img_size: Side ``S`` of the square input.
        in_chans: Channels ``C`` of the encoder.
        mean: Subtracted after scaling to [0, 1]; a number or one per channel.
        std: Divides the centred values; a number or one per channel.
        window: DICOM ``(center, width)`` or preset name overriding the files' own VOI;
            None keeps each file's window.
        pad_value: Value of the square padding, before normalisation.
    """

    def __init__(
        self,
        img_size: int,
        in_chans: int,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        window: tuple[float, float] | str | None = None,
        pad_value: float = 0.0,
    ) -> None:
        self.img_size, self.in_chans = int(img_size), int(in_chans)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)  # (1 or C, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        for name, t in (("mean", self.mean), ("std", self.std)):
            if t.shape[0] not in (1, self.in_chans):
                raise ValueError(f"{name} has {t.shape[0]} values for a {self.in_chans}-channel encoder")
        if (self.std <= 0).any():
            raise ValueError(f"std must be > 0, got {std}")
        self.window = tuple(window) if isinstance(window, (list, tuple)) else window
        self.pad_value = float(pad_value)

    @classmethod
    def from_config(cls, pre: dict[str, Any]) -> Preprocessor:
        """From the ``preprocessing`` entry of an export's ``config.json``."""
        return cls(pre["img_size"], pre["in_chans"], pre.get("mean", 0.0), pre.get("std", 1.0),
                   window=pre.get("window"), pad_value=pre.get("pad_value", 0.0))

    def __repr__(self) -> str:
        return (f"Preprocessor(img_size={self.img_size}, in_chans={self.in_chans}, "
                f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, window={self.window})")

    # ---------------------------------------------------------------- reading
    def read(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Reads a DICOM, PNG or JPEG file into ``(C, H, W)`` float32 in [0, 1].

        Raises:
            medvl.data.DicomReadError: The file cannot be read; the message names it and why.
        """
        from medvl.data.dicom import read_image  # pydicom only when a file is given

        kwargs = {} if self.window is None else {"window": self.window}
        image = read_image(path, **kwargs)
        pixels = image.pixels
        if image.meta.get("photometric_interpretation") not in ("MONOCHROME1", "MONOCHROME2"):  # colour
            if pixels.ndim == 4:  # (F, H, W, 3): first frame, as the training reader
                pixels = pixels[0]
            pixels = np.moveaxis(pixels, -1, 0)  # (3, H, W); folded to luma below if needed
        if pixels.ndim == 2:
            pixels = pixels[None]  # (1, H, W)
        return np.ascontiguousarray(pixels, dtype=np.float32)

    def _one(self, item: Any) -> torch.Tensor:
        """One image (path, ``(H, W)`` or ``(C, H, W)`` array/tensor) -> ``(1, C, S, S)`` in [0, 1]."""
        if isinstance(item, (str, os.PathLike)):
            x = torch.from_numpy(self.read(Path(item)))
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            x = torch.as_tensor(item)
        else:
            raise TypeError(f"expected a file path, numpy array or tensor, got {type(item).__name__}")
        if x.ndim == 2:
            x = x[None]  # (1, H, W)
        if x.ndim != 3:
            raise ValueError(f"expected an (H, W) or (C, H, W) image, got shape {tuple(x.shape)}")
        return resize_longest_pad(self._channels(x[None]), self.img_size, self.pad_value)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c, H, W)`` -> ``(B, in_chans, H, W)``: luma fold, grey replication, or error."""
        x = x.to(torch.float32)
        c = x.shape[1]
        if c == self.in_chans:
            return x
        if c == 3 and self.in_chans == 1:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (x * luma).sum(dim=1, keepdim=True)
        if c == 1:
            return x.expand(-1, self.in_chans, -1, -1)
        raise ValueError(f"cannot feed a {c}-channel image to a {self.in_chans}-channel encoder")

    # ---------------------------------------------------------------- batches
    def __call__(self, inputs: ImageInput) -> torch.Tensor:
        """Preprocesses images into a normalised batch.

        Args:
            inputs: A file path (DICOM, PNG, JPEG); a numpy array ``(H, W)`` or ``(C, H, W)``
                in [0, 1]; a tensor ``(B, C, H, W)`` (or ``(C, H, W)``/``(H, W)``) in
                [0, 1]; or a list of paths/arrays/tensors (any sizes).

        Returns:
            ``(B, in_chans, img_size, img_size)`` float32, ``(x - mean) / std``.
        """
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            x = resize_longest_pad(self._channels(inputs), self.img_size, self.pad_value)  # (B, C, S, S)
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("empty list of images")
            x = torch.cat([self._one(item) for item in inputs], dim=0)
        else:
            x = self._one(inputs)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)
