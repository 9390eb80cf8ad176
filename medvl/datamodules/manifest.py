"""A LightningDataModule over any medvl JSONL manifest (images + reports + labels)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from medvl.data.dataset import ImageReportDataset, collate_samples, read_manifest
from medvl.data.labels import FINDINGS

log = logging.getLogger(__name__)


class ManifestDataModule(L.LightningDataModule):
    """Train/val/test loaders from a manifest's ``split`` column.

    Args:
        manifest: Path of the JSONL manifest; image paths are relative to its folder.
        img_size: Square input size (longest side resized, then zero-padded).
        batch_size: Samples per batch; contrastive losses want it as large as fits.
        num_workers: Data-loader worker processes (0 loads in the main process).
        text_key: Manifest field used as the text: ``report``, ``findings`` or ``impression``.
        label_names: Label columns; defaults to the synthetic findings.
        augment: Albumentations augmentation on the training split.
        preload: Decode and resize every image once at set-up and keep it in memory.
        window: Explicit (centre, width) overriding the files' own windows.
    """

    def __init__(
        self,
        manifest: str = "data/synthetic_cxr/manifest.jsonl",
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        text_key: Literal["report", "findings", "impression"] = "report",
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = True,
        window: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.manifest, self.img_size, self.batch_size = manifest, img_size, batch_size
        self.num_workers, self.text_key, self.augment = num_workers, text_key, augment
        self.preload, self.window = preload, window
        self.label_names = list(label_names or FINDINGS)
        self.datasets: dict[str, ImageReportDataset] = {}

    def _dataset(self, split: str) -> ImageReportDataset:
        if split not in self.datasets:
            hp = self
            augment = None
            if split == "train" and hp.augment:
                from medvl.data.transforms import AlbumentationsD, default_train_augmentation

                augment = AlbumentationsD(keys=("image",), transform=default_train_augmentation(hp.img_size))
            rows = read_manifest(hp.manifest, split=split)
            ds = ImageReportDataset(
                rows, Path(hp.manifest).parent, img_size=hp.img_size, label_names=self.label_names,
                text_key=hp.text_key, augment=augment, window=hp.window, preload=hp.preload,
            )
            dropped = len(rows) - len(ds)
            log.info("%s split: %d studies found, %d dropped as unreadable", split, len(rows), dropped)
            if dropped:
                print(f"[medvl] {split}: {len(rows)} studies, {dropped} dropped as unreadable")
            self.datasets[split] = ds
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
        for split in splits.get(stage, ["train", "val", "test"]):
            self._dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        hp = self
        return DataLoader(
            self._dataset(split), batch_size=hp.batch_size, shuffle=shuffle, drop_last=shuffle,
            num_workers=hp.num_workers, collate_fn=collate_samples, persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
