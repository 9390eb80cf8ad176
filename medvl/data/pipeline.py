"""The one image pipeline of training and evaluation: path -> model-ready tensor.

An :class:`ImagePipeline` is three stages on key ``"image"``, each a MONAI ``Compose``
of the dict transforms of :mod:`medvl.data.transforms`:

1. ``prefix`` (deterministic): :class:`~medvl.data.transforms.LoadMedicalImaged`
   (DICOM modality LUT, VOI LUT/window, MONOCHROME1, colour -> ``in_chans``) and
   :class:`~medvl.data.transforms.ResizeLongestPadd` -> ``(C, S, S)`` float32 in [0, 1].
   This is what :mod:`medvl.data.cache` stores (quantised) and what ``preload`` keeps.
2. ``augmentation`` (training only, after the cache): the albumentations pipeline
   (:func:`~medvl.data.transforms.default_train_augmentation`), clipped back to [0, 1].
   ``finish(image, seed=s)`` draws it from ``s`` alone; the datasets pass a seed derived
   from (the run's seed, epoch, sample index), so augmentation repeats bit for bit under
   the same seed and differs between epochs and samples.
3. ``normalization``: ``(x - mean) / std`` (:class:`~medvl.data.transforms.NormalizeImaged`),
   the only place medvl normalises intensities. The numbers travel to the model (the CLI
   links them) and from there into every checkpoint and export, whose torch-only twin
   (:class:`medvl._preprocess.Preprocessor`, built from :meth:`ImagePipeline.preprocessing`)
   gives the same tensor for the same file (a test holds them equal).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.transforms import Compose

from medvl._preprocess import check_normalization, preprocessing_config
from medvl.data.dicom import resolve_window
from medvl.data.transforms import (
    AlbumentationsD,
    ClipIntensityd,
    LoadMedicalImaged,
    NormalizeImaged,
    ResizeLongestPadd,
    default_train_augmentation,
    run_seed,
)

if TYPE_CHECKING:
    import albumentations as A

__all__ = ["ImagePipeline"]


class ImagePipeline:
    """The deterministic prefix, the augmentation and the normalisation of key ``"image"``.

    Args:
        img_size: Side ``S`` of the square output.
        in_chans: Channels ``C`` of the output (colour folded to luma for 1, grey replicated for 3).
        window: ``(center, width)`` or a preset name overriding the DICOM files' own VOI.
        mean: Normalisation mean of the [0, 1] grey levels; a number or one per channel.
        std: Normalisation std; a number or one per channel.
        augment: Add the augmentation stage (training split).
        augmentation: An albumentations pipeline instead of :func:`default_train_augmentation`.
        key: Sample key holding the image path, then the image.
        seed: Start of the augmentation's stream for :meth:`finish` calls without a seed.
            None: :func:`~medvl.data.transforms.run_seed` for the default augmentation,
            and ``augmentation``'s own state for one passed in.
    """

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 1,
        window: tuple[float, float] | str | None = None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.25,
        *,
        augment: bool = False,
        augmentation: A.BaseCompose | None = None,
        key: str = "image",
        seed: int | None = None,
    ) -> None:
        if img_size < 1 or in_chans < 1:
            raise ValueError(f"img_size and in_chans must be >= 1, got {img_size} and {in_chans}")
        check_normalization(mean, std, in_chans)
        self.img_size, self.in_chans, self.key = int(img_size), int(in_chans), key
        self.window = resolve_window(window)
        self.mean = list(mean) if isinstance(mean, (list, tuple)) else float(mean)
        self.std = list(std) if isinstance(std, (list, tuple)) else float(std)
        self.prefix = Compose([
            LoadMedicalImaged(keys=key, window=self.window, in_chans=self.in_chans, meta_key_postfix=None),
            ResizeLongestPadd(keys=key, size=self.img_size),
        ])
        steps: list[Any] = []
        self._augmenter: AlbumentationsD | None = None
        if augment:
            transform = augmentation or default_train_augmentation(self.img_size)
            self._augmenter = AlbumentationsD(keys=key, transform=transform)
            if seed is not None or augmentation is None:
                self._augmenter.set_random_state(run_seed() if seed is None else seed)
            steps += [
                self._augmenter,
                # Brightness and noise can leave [0, 1]; clip back.
                ClipIntensityd(keys=key, low=0.0, high=1.0),
            ]
        self.augmentation = Compose(steps) if steps else None
        self.normalization = Compose([NormalizeImaged(keys=key, mean=self.mean, std=self.std)])

    def __repr__(self) -> str:
        return (f"ImagePipeline(img_size={self.img_size}, in_chans={self.in_chans}, window={self.window}, "
                f"mean={self.mean}, std={self.std}, augment={self.augmentation is not None})")

    def load(self, path: Any) -> np.ndarray:
        """The deterministic prefix of one file: ``(C, S, S)`` float32 in [0, 1].

        Raises:
            medvl.data.DicomReadError: The file cannot be read; the message names it and why.
        """
        d: Mapping[Hashable, Any] = {self.key: path}
        for transform in self.prefix.transforms:  # not Compose.__call__: it wraps DicomReadError in RuntimeError
            d = transform(d)
        return d[self.key]

    @property
    def augments(self) -> bool:
        """Whether :meth:`finish` augments (the training split's pipeline)."""
        return self._augmenter is not None

    def set_random_state(self, seed: int) -> None:
        """Restart the augmentation's random stream from ``seed`` (no-op without augmentation)."""
        if self._augmenter is not None:
            self._augmenter.set_random_state(seed)

    def finish(self, image: np.ndarray | torch.Tensor, *, seed: int | None = None) -> torch.Tensor:
        """Augmentation (when on) and normalisation of a prefix output -> ``(C, S, S)`` float32 tensor.

        Args:
            image: A :meth:`load` output.
            seed: Draw the augmentation from this seed alone (bitwise repeatable on one
                machine); None continues the stream of the last seed.
        """
        if seed is not None:
            self.set_random_state(seed)
        d: Mapping[Hashable, Any] = {self.key: image}
        stages = [*(self.augmentation.transforms if self.augmentation is not None else ()),
                  *self.normalization.transforms]
        for transform in stages:
            d = transform(d)
        out = d[self.key]
        return torch.as_tensor(out, dtype=torch.float32).as_subclass(torch.Tensor)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """``{key: path, ...}`` -> ``{key: (C, S, S) tensor, ...}`` (other keys kept)."""
        d = dict(data)
        d[self.key] = self.finish(self.load(d[self.key]))
        return d

    def compose(self) -> Compose:
        """All stages as one MONAI ``Compose`` (prefix, augmentation, normalisation)."""
        stages = [self.prefix, *([self.augmentation] if self.augmentation is not None else []), self.normalization]
        return Compose(stages)

    def preprocessing(self) -> dict[str, Any]:
        """The ``preprocessing`` record of an export (:meth:`medvl._preprocess.Preprocessor.from_config`)."""
        return preprocessing_config(self.img_size, self.in_chans, self.mean, self.std, self.window)
