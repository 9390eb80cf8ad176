"""The embedded default: phantom chest radiographs written as DICOM by ``medvl synth``."""

from __future__ import annotations

from typing import Any

from medvl.data.sources import Synthetic
from medvl.datamodules.base import ImageTextDataModule

__all__ = ["SyntheticCXR"]


class SyntheticCXR(ImageTextDataModule):
    """:class:`ImageTextDataModule` over the synthetic phantom dataset, generated on first use.

    Args:
        root: Dataset folder; generated there when ``manifest.jsonl`` is absent.
        n: Studies to generate.
        seed: Generator seed; the same seed gives byte-identical files.
        preload: Decode every image once at set-up and keep it in memory (ignored with a cache).
        **kwargs: The loader options of :class:`ImageTextDataModule`.
    """

    def __init__(self, root: str = "data/synthetic_cxr", n: int = 2000, seed: int = 0, preload: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(source=Synthetic(root, n, seed), preload=preload, **kwargs)
        self.root, self.n, self.seed = root, n, seed
