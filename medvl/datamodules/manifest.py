"""A data module over any medvl JSONL manifest (images + reports + labels)."""

from __future__ import annotations

from typing import Any

from medvl.data.sources import Manifest
from medvl.datamodules.base import ImageTextDataModule

__all__ = ["ManifestDataModule"]


class ManifestDataModule(ImageTextDataModule):
    """:class:`ImageTextDataModule` over a :class:`~medvl.data.sources.Manifest`.

    Args:
        manifest: Path of the JSONL manifest; image paths are relative to its folder.
        **kwargs: The loader options of :class:`ImageTextDataModule`.
    """

    def __init__(self, manifest: str = "data/synthetic_cxr/manifest.jsonl", **kwargs: Any) -> None:
        super().__init__(source=Manifest(manifest), **kwargs)
        self.manifest = manifest
