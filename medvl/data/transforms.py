"""MONAI dict transforms that turn an image path into a model-ready tensor.

Array + dict pairs in the MONAI style (``ResizeLongestPad`` / ``ResizeLongestPadd``):

* :class:`LoadMedicalImage` / :class:`LoadMedicalImaged` read DICOM, PNG or JPEG
  through :func:`medvl.data.dicom.read_image` into a ``(C, H, W)`` float32 array.
* :class:`ResizeLongestPad` / :class:`ResizeLongestPadd` resize keeping the aspect
  ratio (longest side = ``size``, antialiased) and zero-pad to a centred square.
* :class:`AlbumentationsD` applies an albumentations pipeline to ``(C, H, W)``
  float images; :func:`default_train_augmentation` is a mild, radiograph-safe one.
* :func:`build_image_transforms` composes the whole image branch for key ``"image"``.

Intensity normalisation and tensor conversion come from MONAI unchanged, e.g.
``monai.transforms.NormalizeIntensityd(keys="image", subtrahend=0.5, divisor=0.5)``
after this pipeline, and ``monai.transforms.ToTensord``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandomizableTrait,
    ScaleIntensityRanged,
    ToTensord,
    Transform,
)

from medvl.data.dicom import read_image, resolve_window

if TYPE_CHECKING:
    import albumentations as A

# medvl never phones home: albumentations checks PyPI for updates on import unless told not to.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = [
    "AlbumentationsD",
    "LoadMedicalImage",
    "LoadMedicalImaged",
    "ResizeLongestPad",
    "ResizeLongestPadd",
    "build_image_transforms",
    "default_train_augmentation",
]

# ITU-R BT.601 luma weights for folding RGB into one channel.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class LoadMedicalImage(Transform):
    """Read an image file into a ``(C, H, W)`` float32 array in [0, 1].

    Greyscale images give ``C = 1``. RGB images give ``C = 3``, or ``C = 1`` (luma)
    when ``grayscale`` is set. Multi-frame DICOM read with ``all_frames=True``
    puts the frames on the channel axis.

    Args:
        window: ``(center, width)`` or a preset name (:data:`~medvl.data.dicom.WINDOW_PRESETS`)
            overriding the DICOM file's own window.
        grayscale: Fold colour images into one luma channel.
        reader_kwargs: Extra keyword arguments for :func:`~medvl.data.dicom.read_image`
            (``all_frames``, ``max_pixels``).
    """

    def __init__(
        self,
        window: tuple[float, float] | str | None = None,
        grayscale: bool = True,
        reader_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.window = resolve_window(window)
        self.grayscale = grayscale
        self.reader_kwargs = dict(reader_kwargs or {})

    def load(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
        """Read ``path``; return the ``(C, H, W)`` array and the whitelisted meta."""
        kwargs = dict(self.reader_kwargs)
        if self.window is not None:
            kwargs["window"] = self.window  # ignored for PNG/JPEG
        image = read_image(path, **kwargs)
        pixels, meta = image.pixels, image.meta
        if meta.get("photometric_interpretation") not in ("MONOCHROME1", "MONOCHROME2"):  # RGB
            if pixels.ndim == 4:  # (F, H, W, 3): keep the first frame
                pixels = pixels[0]
            # (H, W) luma, or (3, H, W)
            pixels = pixels @ _LUMA if self.grayscale else np.moveaxis(pixels, -1, 0)
        if pixels.ndim == 2:
            pixels = pixels[None]  # (1, H, W)
        return np.ascontiguousarray(pixels, dtype=np.float32), meta

    def __call__(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Read ``path`` into a ``(C, H, W)`` float32 array."""
        return self.load(path)[0]


class LoadMedicalImaged(MapTransform):
    """Dict version of :class:`LoadMedicalImage`: replace a path by its pixels.

    Named so as not to clash with MONAI's ``LoadImaged``. For each key the path
    in ``d[key]`` becomes a ``(C, H, W)`` float32 array and, with ``meta_key_postfix``
    set, the reader's meta (non-identifying header values) goes to
    ``d[f"{key}_{meta_key_postfix}"]``. The meta holds ``None`` values that default
    collation cannot batch, so drop it (``meta_key_postfix=None``) for training.

    Args:
        keys: Keys holding file paths.
        window: ``(center, width)`` or a preset name (:data:`~medvl.data.dicom.WINDOW_PRESETS`)
            overriding the DICOM file's own window.
        reader_kwargs: Extra keyword arguments for :func:`~medvl.data.dicom.read_image`.
        grayscale: Fold colour images into one luma channel.
        meta_key_postfix: Suffix of the meta key, or None to store no meta.
        allow_missing_keys: Skip keys absent from the sample.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        window: tuple[float, float] | str | None = None,
        reader_kwargs: Mapping[str, Any] | None = None,
        grayscale: bool = True,
        meta_key_postfix: str | None = "meta",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMedicalImage(
            window=window, grayscale=grayscale, reader_kwargs=reader_kwargs
        )
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key of ``data``; return a new dict."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], meta = self.loader.load(d[key])
            if self.meta_key_postfix is not None:
                d[f"{key}_{self.meta_key_postfix}"] = meta
        return d


class ResizeLongestPad(Transform):
    """Resize so the longest side is ``size`` (aspect kept), then centre-pad to a square.

    Interpolation is bilinear with antialiasing (a triangle filter as wide as the
    scale factor, as in Pillow), so downscaling a large radiograph does not alias
    and values stay inside the input range. Works on ``(C, H, W)`` numpy arrays or
    tensors and returns the same kind, float32.

    Args:
        size: Side of the square output.
        pad_value: Value of the padding.
    """

    def __init__(self, size: int, pad_value: float = 0.0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = int(size)
        self.pad_value = float(pad_value)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Resize and pad one ``(C, H, W)`` image to ``(C, size, size)``."""
        is_numpy = isinstance(img, np.ndarray)
        x = torch.as_tensor(img).to(torch.float32)
        if x.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image, got shape {tuple(x.shape)}")
        _, h, w = x.shape
        scale = self.size / max(h, w)
        new_h = min(self.size, max(1, round(h * scale)))
        new_w = min(self.size, max(1, round(w * scale)))
        if (new_h, new_w) != (h, w):
            x = F.interpolate(
                x[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
            )[0]  # (C, new_h, new_w)
        top, left = (self.size - new_h) // 2, (self.size - new_w) // 2
        bottom, right = self.size - new_h - top, self.size - new_w - left
        x = F.pad(x, (left, right, top, bottom), value=self.pad_value)  # (C, size, size)
        return x.numpy() if is_numpy else x


class ResizeLongestPadd(MapTransform):
    """Dict version of :class:`ResizeLongestPad`.

    Args:
        keys: Keys holding ``(C, H, W)`` images.
        size: Side of the square output.
        pad_value: Value of the padding.
        allow_missing_keys: Skip keys absent from the sample.
    """

    def __init__(
        self,
        keys: KeysCollection,
        size: int,
        pad_value: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = ResizeLongestPad(size, pad_value=pad_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Resize and pad every key of ``data``; return a new dict."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer(d[key])
        return d


class AlbumentationsD(MapTransform, RandomizableTrait):
    """Apply an albumentations transform to ``(C, H, W)`` float32 images.

    The image is moved to ``(H, W, C)`` for albumentations and back. The class
    carries MONAI's ``RandomizableTrait`` so that ``CacheDataset`` and
    ``PersistentDataset`` cache only the transforms before it. Randomness comes
    from albumentations' own generator (seed it with ``A.Compose(seed=...)``).

    Args:
        keys: Keys holding ``(C, H, W)`` images (numpy or tensor).
        transform: An albumentations transform or ``Compose``.
        allow_missing_keys: Skip keys absent from the sample.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        transform: A.BasicTransform | A.BaseCompose | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if transform is None:
            raise ValueError("AlbumentationsD needs an albumentations transform")
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Augment every key of ``data``; return a new dict."""
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            is_tensor = isinstance(img, torch.Tensor)
            chw = img.detach().cpu().numpy() if is_tensor else np.asarray(img)
            hwc = np.ascontiguousarray(np.moveaxis(chw, 0, -1), dtype=np.float32)  # (H, W, C)
            out = np.asarray(self.transform(image=hwc)["image"], dtype=np.float32)
            if out.ndim == 2:  # OpenCV drops a single channel
                out = out[..., None]
            out = np.ascontiguousarray(np.moveaxis(out, -1, 0))  # (C, H, W)
            d[key] = torch.from_numpy(out) if is_tensor else out
        return d


def default_train_augmentation(size: int) -> A.Compose:
    """Mild augmentation for ``size x size`` radiographs in [0, 1].

    Small affine (rotate +-7 degrees, scale 0.9-1.1, translate +-5% of ``size``),
    brightness/contrast, gamma and faint Gaussian noise. There is deliberately
    no horizontal flip: reports name sides ("left pleural effusion"), and a
    flipped image would contradict its report.

    Args:
        size: Side of the square images the pipeline sees.

    Returns:
        The albumentations pipeline.
    """
    import albumentations as A
    import cv2

    shift = max(1, round(0.05 * size))
    return A.Compose(
        [
            # No A.HorizontalFlip: it would swap left/right against the report.
            A.Affine(
                rotate=(-7, 7),
                scale=(0.9, 1.1),
                translate_px=(-shift, shift),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.8,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            A.RandomGamma(gamma_limit=(85, 115), p=0.3),
            A.GaussNoise(std_range=(0.005, 0.02), p=0.2),
        ]
    )


def build_image_transforms(
    size: int,
    *,
    train: bool,
    window: tuple[float, float] | str | None = None,
    key: str = "image",
    augmentation: A.BaseCompose | None = None,
    keep_meta: bool = False,
) -> Compose:
    """The image branch: load -> resize/pad -> (augment) -> float32 tensor.

    Args:
        size: Side of the square output.
        train: Add augmentation (``augmentation`` or :func:`default_train_augmentation`).
        window: ``(center, width)`` or a preset name overriding the DICOM files' own window.
        key: Sample key holding the image path.
        augmentation: Albumentations pipeline to use instead of the default.
        keep_meta: Store the reader's meta under ``f"{key}_meta"`` (it holds
            ``None`` values, so leave it off for default collation).

    Returns:
        A MONAI ``Compose`` mapping ``{key: path}`` to ``{key: (C, size, size) float32 tensor}``.
    """
    steps: list[Any] = [
        LoadMedicalImaged(keys=key, window=window, meta_key_postfix="meta" if keep_meta else None),
        ResizeLongestPadd(keys=key, size=size),
    ]
    if train:
        steps += [
            AlbumentationsD(keys=key, transform=augmentation or default_train_augmentation(size)),
            # Brightness and noise can leave [0, 1]; clip back.
            ScaleIntensityRanged(keys=key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        ]
    steps.append(ToTensord(keys=key, dtype=torch.float32, track_meta=False))
    return Compose(steps)

