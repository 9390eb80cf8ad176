"""MONAI dict transforms of the image pipeline (:mod:`medvl.data.pipeline` composes them).

Array + dict pairs in the MONAI style (``ResizeLongestPad`` / ``ResizeLongestPadd``), thin
wrappers over the functions of :mod:`medvl._preprocess`, so the training pipeline and
an exported encoder's torch-only preprocessing run the same code:

* :class:`LoadMedicalImage` / :class:`LoadMedicalImaged` read DICOM, PNG or JPEG
  into a ``(C, H, W)`` float32 array in [0, 1] with the encoder's channel count.
* :class:`ResizeLongestPad` / :class:`ResizeLongestPadd` resize keeping the aspect
  ratio (longest side = ``size``, antialiased) and zero-pad to a centred square.
* :class:`AlbumentationsD` applies an albumentations pipeline to ``(C, H, W)``
  float images; :func:`default_train_augmentation` is a mild, radiograph-safe one.
  :func:`run_seed` and :func:`derive_seed` make its randomness a pure function of
  (the run's seed, epoch, sample index) (see "Determinism" below).
* :class:`NormalizeImaged` subtracts the mean and divides by the std, per channel.
* :func:`build_image_transforms` is the whole chain for key ``"image"``
  (:class:`medvl.data.pipeline.ImagePipeline`).

Determinism: albumentations (>= 2.0) draws from its own generators, never from NumPy's
or Python's global state, and ``A.Compose(seed=None)`` seeds them from OS entropy, so
``seed_everything`` alone does not reach it. medvl therefore seeds it explicitly:
:meth:`AlbumentationsD.set_random_state` restarts the stream from an integer, and the
dataset passes :func:`derive_seed` of (:func:`run_seed`, epoch, sample index) for every
sample (:meth:`medvl.data.dataset.ImageReportDataset.augmentation_seed`). The augmented
pixels are then bitwise identical for the same seed on the same machine, whatever the
number of loader workers; OpenCV's vectorised kernels (``warpAffine``) may round
differently on another CPU family or OpenCV build.
"""

from __future__ import annotations

import os
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, RandomizableTrait, Transform

from medvl._preprocess import normalize, read_pixels, resize_longest_pad, to_channels
from medvl.data.dicom import resolve_window

if TYPE_CHECKING:
    import albumentations as A

# medvl never phones home: albumentations checks PyPI for updates on import unless told not to.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__all__ = [
    "AlbumentationsD",
    "ClipIntensityd",
    "LoadMedicalImage",
    "LoadMedicalImaged",
    "NormalizeImaged",
    "ResizeLongestPad",
    "ResizeLongestPadd",
    "build_image_transforms",
    "default_train_augmentation",
    "derive_seed",
    "run_seed",
]


def run_seed() -> int:
    """The run's seed: ``PL_GLOBAL_SEED`` when set, else ``torch.initial_seed()``.

    Lightning's ``seed_everything`` (``medvl fit --seed_everything N``) sets both; the
    environment variable is inherited by loader workers, whose ``torch.initial_seed()``
    is their own (base seed + worker id), so resolve the seed in the main process when
    it must be the same in every worker. Without ``seed_everything`` the seed is torch's
    default, random per process: an unseeded run is not reproducible, by design.
    """
    env = os.environ.get("PL_GLOBAL_SEED")
    return int(env) if env else torch.initial_seed()


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that is a pure function of ``seed`` and ``keys`` (e.g. epoch, sample index).

    NumPy's ``SeedSequence`` hashes them (an algorithm NumPy keeps fixed across releases),
    so neighbouring inputs give unrelated streams; ``seed + index`` would make sample
    ``i`` of one run draw what sample ``i + 1`` of the run seeded ``seed - 1`` draws.

    Args:
        seed: The base seed (any integer; taken modulo 2**64).
        keys: Non-negative integers.
    """
    ss = np.random.SeedSequence(int(seed) % 2**64, spawn_key=tuple(int(k) for k in keys))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _seed_albumentations(transform: A.BasicTransform | A.BaseCompose, seed: int) -> None:
    """Restart ``transform``'s random stream from ``seed``: one NumPy and one Python generator for all its parts.

    Not ``set_random_seed(seed)``: it gives every child transform its own generator seeded
    with the same number, so their draws coincide (the rotation would track the brightness).

    Raises:
        TypeError: ``transform`` has no generators of its own (albumentations < 2.0).
    """
    if not hasattr(transform, "set_random_state"):
        raise TypeError(f"{type(transform).__name__} cannot be seeded: medvl needs albumentations >= 2.0, "
                        "whose transforms carry their own random generators")
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


class LoadMedicalImage(Transform):
    """Read an image file into a ``(C, H, W)`` float32 array in [0, 1].

    Greyscale images give ``C = 1``. RGB images give ``C = 3``, or ``C = 1`` (luma)
    when ``grayscale`` is set. Multi-frame DICOM read with ``all_frames=True``
    puts the frames on the channel axis. ``in_chans`` fixes the channel count
    (luma fold or grey replication) and takes precedence over ``grayscale``.

    Args:
        window: ``(center, width)`` or a preset name (:data:`~medvl.data.dicom.WINDOW_PRESETS`)
            overriding the DICOM file's own window.
        grayscale: Fold colour images into one luma channel.
        reader_kwargs: Extra keyword arguments for :func:`~medvl.data.dicom.read_image`
            (``all_frames``, ``max_pixels``).
        in_chans: Channels of the output (None: from ``grayscale``).
    """

    def __init__(
        self,
        window: tuple[float, float] | str | None = None,
        grayscale: bool = True,
        reader_kwargs: Mapping[str, Any] | None = None,
        in_chans: int | None = None,
    ) -> None:
        self.window = resolve_window(window)
        self.in_chans = in_chans
        self.grayscale = grayscale
        self.reader_kwargs = dict(reader_kwargs or {})

    def load(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
        """Read ``path``; return the ``(C, H, W)`` array and the whitelisted meta."""
        pixels, meta = read_pixels(path, window=self.window, in_chans=self.in_chans,
                                   reader_kwargs=self.reader_kwargs, return_meta=True)
        if self.in_chans is None and self.grayscale and pixels.shape[0] == 3:
            pixels = to_channels(pixels, 1)
        return pixels, meta

    def __call__(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Read ``path`` into a ``(C, H, W)`` float32 array."""
        return self.load(path)[0]


class LoadMedicalImaged(MapTransform):
    """Dict version of :class:`LoadMedicalImage`: replace a path by its pixels.

    Named so as not to clash with MONAI's ``LoadImaged``. With ``meta_key_postfix`` set,
    the reader's meta (non-identifying header values) goes to ``d[f"{key}_{postfix}"]``;
    it holds ``None`` values that default collation cannot batch, so the training
    pipeline drops it (``meta_key_postfix=None``).

    Args:
        keys: Keys holding file paths.
        window: ``(center, width)`` or a preset name (:data:`~medvl.data.dicom.WINDOW_PRESETS`)
            overriding the DICOM file's own window.
        reader_kwargs: Extra keyword arguments for :func:`~medvl.data.dicom.read_image`.
        grayscale: Fold colour images into one luma channel.
        in_chans: Channels of the output (None: from ``grayscale``).
        meta_key_postfix: Suffix of the meta key, or None to store no meta.
        allow_missing_keys: Skip keys absent from the sample.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        window: tuple[float, float] | str | None = None,
        reader_kwargs: Mapping[str, Any] | None = None,
        grayscale: bool = True,
        in_chans: int | None = None,
        meta_key_postfix: str | None = "meta",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMedicalImage(window=window, grayscale=grayscale, reader_kwargs=reader_kwargs,
                                       in_chans=in_chans)
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

    :func:`medvl._preprocess.resize_longest_pad` as a MONAI transform: bilinear with
    antialiasing, values stay inside the input range. Works on ``(C, H, W)`` numpy
    arrays or tensors and returns the same kind, float32.

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
        if img.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image, got shape {tuple(img.shape)}")
        return resize_longest_pad(img, self.size, self.pad_value)


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


class ClipIntensityd(MapTransform):
    """Clip values into ``[low, high]`` (numpy or tensor, kind kept; no MONAI ``MetaTensor``).

    Args:
        keys: Keys holding images.
        low: Lower bound.
        high: Upper bound.
        allow_missing_keys: Skip keys absent from the sample.
    """

    def __init__(self, keys: KeysCollection, low: float = 0.0, high: float = 1.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.low, self.high = float(low), float(high)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Clip every key of ``data``; return a new dict."""
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            d[key] = x.clamp(self.low, self.high) if isinstance(x, torch.Tensor) else np.clip(x, self.low, self.high)
        return d


class NormalizeImaged(MapTransform):
    """``(x - mean) / std`` per channel (:func:`medvl._preprocess.normalize`); returns float32 tensors.

    Args:
        keys: Keys holding ``(C, H, W)`` images in [0, 1].
        mean: A number or one per channel.
        std: A number or one per channel.
        allow_missing_keys: Skip keys absent from the sample.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mean, self.std = mean, std

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalise every key of ``data``; return a new dict."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = normalize(torch.as_tensor(np.ascontiguousarray(d[key])), self.mean, self.std)
        return d


class AlbumentationsD(MapTransform, RandomizableTrait):
    """Apply an albumentations transform to ``(C, H, W)`` float32 images.

    The image is moved to ``(H, W, C)`` for albumentations and back. The class
    carries MONAI's ``RandomizableTrait`` so that ``CacheDataset`` and
    ``PersistentDataset`` cache only the transforms before it. Randomness comes
    from albumentations' own generators; :meth:`set_random_state` restarts them from
    a seed (the dataset does so per sample, see the module's "Determinism"). Without
    it the stream continues from wherever the transform's last seed left it.

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

    def set_random_state(self, seed: int) -> AlbumentationsD:
        """Restart the augmentation's random stream from ``seed``; the next call draws a pure function of it.

        Returns:
            self, as MONAI's ``Randomizable.set_random_state`` does.
        """
        _seed_albumentations(self.transform, seed)
        return self

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


def default_train_augmentation(size: int, *, seed: int | None = None) -> A.Compose:
    """Mild augmentation for ``size x size`` radiographs in [0, 1].

    Small affine (rotate +-7 degrees, scale 0.9-1.1, translate +-5% of ``size``),
    brightness/contrast, gamma and faint Gaussian noise. There is deliberately
    no horizontal flip: reports name sides ("left pleural effusion"), and a
    flipped image would contradict its report.

    Args:
        size: Side of the square images the pipeline sees.
        seed: Seed of its random stream (one generator shared by the transforms);
            None: OS entropy, as ``A.Compose`` does.

    Returns:
        The albumentations pipeline.
    """
    import albumentations as A
    import cv2

    shift = max(1, round(0.05 * size))
    compose = A.Compose(
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
    if seed is not None:
        _seed_albumentations(compose, seed)
    return compose


def build_image_transforms(
    size: int,
    *,
    train: bool,
    window: tuple[float, float] | str | None = None,
    key: str = "image",
    augmentation: A.BaseCompose | None = None,
    in_chans: int = 1,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
) -> Compose:
    """The image branch: load -> resize/pad -> (augment) -> normalise, as one ``Compose``.

    A shortcut for :class:`medvl.data.pipeline.ImagePipeline` (``mean=0, std=1`` keeps
    [0, 1] grey levels).

    Args:
        size: Side of the square output.
        train: Add augmentation (``augmentation`` or :func:`default_train_augmentation`).
        window: ``(center, width)`` or a preset name overriding the DICOM files' own window.
        key: Sample key holding the image path.
        augmentation: Albumentations pipeline to use instead of the default.
        in_chans: Channels of the output.
        mean: Normalisation mean (a number or one per channel).
        std: Normalisation std (a number or one per channel).

    Returns:
        A MONAI ``Compose`` mapping ``{key: path}`` to ``{key: (C, size, size) float32 tensor}``.
    """
    from medvl.data.pipeline import ImagePipeline

    pipe = ImagePipeline(img_size=size, in_chans=in_chans, window=window, mean=mean, std=std,
                         augment=train, augmentation=augmentation, key=key)
    return pipe.compose()
