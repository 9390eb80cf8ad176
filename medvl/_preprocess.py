"""The image preprocessing, written once: file -> channels -> square -> normalised tensor.

Every path from an image file to an encoder input goes through these functions:

1. :func:`read_pixels` reads DICOM, PNG or JPEG through :func:`medvl.data.dicom.read_image`
   (modality LUT, VOI LUT or an explicit window, MONOCHROME1 inversion, scaled to [0, 1];
   imported on first use) into a ``(C, H, W)`` float32 array and fixes the channel count
   with :func:`to_channels` (BT.601 luma for one-channel encoders, grey replicated for
   three-channel ones);
2. :func:`resize_longest_pad` resizes the longest side (bilinear, antialiased) and
   zero-pads to a centred square;
3. :func:`normalize` subtracts ``mean`` and divides by ``std``.

Steps 1-2 are the deterministic prefix that :mod:`medvl.data.cache` stores; augmentation
(training only) runs between 2 and 3. The training pipeline
(:class:`medvl.data.pipeline.ImagePipeline`) wraps these functions in MONAI dict
transforms; :class:`Preprocessor` chains them with torch and numpy only, so an exported
encoder (:func:`medvl.load_encoder`) needs neither MONAI nor Lightning, and a test holds
both paths equal on the same file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LUMA",
    "ImageInput",
    "Preprocessor",
    "normalize",
    "preprocessing_config",
    "read_pixels",
    "resize_longest_pad",
    "to_channels",
]

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights for folding RGB into one channel."""

RESIZE = "longest side to img_size (bilinear, antialiased), zero-pad to a centred square"
INTENSITY = ("DICOM modality LUT, VOI LUT/window, MONOCHROME1 inverted; scaled to [0, 1]; "
             "colour folded to BT.601 luma for one-channel encoders")

ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor, Sequence[Any]]


def to_channels(x: np.ndarray | torch.Tensor, in_chans: int | None) -> np.ndarray | torch.Tensor:
    """``(..., c, H, W)`` -> ``(..., in_chans, H, W)``: luma fold, grey replication, or error.

    Args:
        x: Images with channels on axis -3 (numpy or torch, float).
        in_chans: Channels wanted; None keeps ``c``.

    Raises:
        ValueError: ``c`` cannot become ``in_chans`` (e.g. 2 channels for a 3-channel encoder).
    """
    c = x.shape[-3]
    if in_chans is None or c == in_chans:
        return x
    if c == 3 and in_chans == 1:
        if isinstance(x, torch.Tensor):
            w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
            return (x * w).sum(dim=-3, keepdim=True)
        w = np.asarray(LUMA, dtype=np.float32).reshape(3, 1, 1)
        return (x * w).sum(axis=-3, keepdims=True, dtype=np.float32)
    if c == 1:
        reps = [1] * x.ndim
        reps[-3] = in_chans
        return x.repeat(*reps) if isinstance(x, torch.Tensor) else np.tile(x, reps)
    raise ValueError(f"cannot feed a {c}-channel image to a {in_chans}-channel encoder")


def read_pixels(
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] | str | None = None,
    in_chans: int | None = 1,
    reader_kwargs: Mapping[str, Any] | None = None,
    return_meta: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Reads a DICOM, PNG or JPEG file into ``(C, H, W)`` float32 in [0, 1].

    Colour images (RGB, YBR_*, PALETTE COLOR) come as 3 channels (the first frame of a
    multi-frame one); greyscale as 1 channel, or one channel per frame when
    ``reader_kwargs={"all_frames": True}``. Then :func:`to_channels` makes ``in_chans``.

    Args:
        path: The file.
        window: ``(center, width)`` or a preset name overriding the DICOM file's own VOI.
        in_chans: Channels of the output; None keeps the file's.
        reader_kwargs: Extra arguments of :func:`medvl.data.dicom.read_image`
            (``all_frames``, ``max_pixels``).
        return_meta: Also return the reader's non-identifying header values.

    Raises:
        medvl.data.DicomReadError: The file cannot be read; the message names it and why.
    """
    from medvl.data.dicom import read_image  # pydicom only when a file is read

    kwargs = dict(reader_kwargs or {})
    if window is not None:
        kwargs["window"] = window
    image = read_image(path, **kwargs)
    pixels = image.pixels
    if image.meta.get("photometric_interpretation") not in ("MONOCHROME1", "MONOCHROME2"):  # colour
        if pixels.ndim == 4:  # (F, H, W, 3): the first frame
            pixels = pixels[0]
        pixels = np.moveaxis(pixels, -1, 0)  # (3, H, W)
    elif pixels.ndim == 2:
        pixels = pixels[None]  # (1, H, W); (F, H, W) keeps frames as channels
    pixels = to_channels(np.ascontiguousarray(pixels, dtype=np.float32), in_chans)
    return (pixels, image.meta) if return_meta else pixels


def resize_longest_pad(x: np.ndarray | torch.Tensor, size: int, pad_value: float = 0.0) -> np.ndarray | torch.Tensor:
    """Resizes so the longest side is ``size`` (aspect kept), then centre-pads to a square.

    Bilinear with antialiasing (a triangle filter as wide as the scale factor, as in
    Pillow), so downscaling a large radiograph does not alias and values stay inside the
    input range. The short side is rounded; the extra pixel of odd padding goes to the
    bottom/right.

    Args:
        x: ``(C, H, W)`` or ``(B, C, H, W)`` float images, numpy or torch.
        size: Side of the square output.
        pad_value: Value of the padding.

    Returns:
        ``(C, size, size)`` / ``(B, C, size, size)`` float32, of the input's kind.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    is_numpy = isinstance(x, np.ndarray)
    t = torch.as_tensor(x).to(torch.float32)
    if t.ndim not in (3, 4):
        raise ValueError(f"expected a (C, H, W) or (B, C, H, W) image, got shape {tuple(t.shape)}")
    batched = t.ndim == 4
    t = t if batched else t[None]  # (B, C, H, W)
    h, w = t.shape[-2:]
    scale = size / max(h, w)
    new_h = min(size, max(1, round(h * scale)))
    new_w = min(size, max(1, round(w * scale)))
    if (new_h, new_w) != (h, w):
        t = F.interpolate(t, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    t = F.pad(t, (left, size - new_w - left, top, size - new_h - top), value=pad_value)  # (B, C, size, size)
    t = t if batched else t[0]
    return t.numpy() if is_numpy else t


def _per_channel(value: float | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32, device=like.device).reshape(-1, 1, 1)  # (1 or C, 1, 1)


def normalize(x: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` over ``(..., C, H, W)``; ``mean``/``std`` a number or one per channel."""
    x = torch.as_tensor(x, dtype=torch.float32)
    return (x - _per_channel(mean, x)) / _per_channel(std, x)


def check_normalization(mean: Any, std: Any, in_chans: int) -> None:
    """Raises ValueError unless ``mean``/``std`` have 1 or ``in_chans`` values and ``std > 0``."""
    for name, value in (("mean", mean), ("std", std)):
        n = len(value) if isinstance(value, (list, tuple)) else 1
        if n not in (1, in_chans):
            raise ValueError(f"image {name} has {n} values for a {in_chans}-channel encoder")
    if any(s <= 0 for s in (std if isinstance(std, (list, tuple)) else [std])):
        raise ValueError(f"image std must be > 0, got {std}")


def preprocessing_config(
    img_size: int | Sequence[int],
    in_chans: int,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    window: tuple[float, float] | str | None = None,
    pad_value: float = 0.0,
) -> dict[str, Any]:
    """The ``preprocessing`` entry an export's ``config.json`` records (and :class:`Preprocessor` reads)."""
    return {
        "in_chans": in_chans,
        "img_size": img_size,
        "resize": RESIZE,
        "intensity": INTENSITY,
        "window": list(window) if isinstance(window, tuple) else window,
        "pad_value": float(pad_value),
        "mean": list(mean) if isinstance(mean, tuple) else mean,
        "std": list(std) if isinstance(std, tuple) else std,
    }


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
        check_normalization(mean, std, self.in_chans)
        self.mean, self.std = mean, std
        self.window = tuple(window) if isinstance(window, (list, tuple)) else window
        self.pad_value = float(pad_value)

    @classmethod
    def from_config(cls, pre: Mapping[str, Any]) -> Preprocessor:
        """From the ``preprocessing`` entry of an export's ``config.json``."""
        return cls(pre["img_size"], pre["in_chans"], pre.get("mean", 0.0), pre.get("std", 1.0),
                   window=pre.get("window"), pad_value=pre.get("pad_value", 0.0))

    def to_config(self) -> dict[str, Any]:
        """The ``preprocessing`` entry of an export's ``config.json``."""
        return preprocessing_config(self.img_size, self.in_chans, self.mean, self.std, self.window, self.pad_value)

    def __repr__(self) -> str:
        return (f"Preprocessor(img_size={self.img_size}, in_chans={self.in_chans}, "
                f"mean={self.mean}, std={self.std}, window={self.window})")

    def read(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Reads a DICOM, PNG or JPEG file into ``(in_chans, H, W)`` float32 in [0, 1].

        Raises:
            medvl.data.DicomReadError: The file cannot be read; the message names it and why.
        """
        return read_pixels(path, window=self.window, in_chans=self.in_chans)

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
        x = to_channels(x.to(torch.float32), self.in_chans)
        return resize_longest_pad(x, self.img_size, self.pad_value)[None]

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
            x = to_channels(inputs.to(torch.float32), self.in_chans)
            x = resize_longest_pad(x, self.img_size, self.pad_value)  # (B, C, S, S)
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("empty list of images")
            x = torch.cat([self._one(item) for item in inputs], dim=0)
        else:
            x = self._one(inputs)
        return normalize(x, self.mean, self.std)
