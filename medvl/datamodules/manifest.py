"""A LightningDataModule over any medvl JSONL manifest (images + reports + labels)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from medvl.data.cache import (
    CachedImageDataset,
    CacheMismatchError,
    CacheSpec,
    build_cache,
    is_complete,
    read_cache_manifest,
)
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
        window: Explicit (centre, width) or preset name overriding the files' own windows.
        cache_dir: Preprocessed cache folder (:mod:`medvl.data.cache`). Built by
            ``prepare_data`` (rank 0 only) when absent, resumed when interrupted, refused
            when built with another size, dtype or window; then every process reads the
            memory-mapped shards and ``preload`` is not needed.
        cache_dtype: ``uint8`` or ``uint16`` pixels in the cache.
        cache_workers: Processes that build the cache (None: all cores).
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
        window: tuple[float, float] | str | None = None,
        cache_dir: str | None = None,
        cache_dtype: Literal["uint8", "uint16"] = "uint8",
        cache_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.manifest, self.img_size, self.batch_size = manifest, img_size, batch_size
        self.num_workers, self.text_key, self.augment = num_workers, text_key, augment
        self.preload, self.window = preload, window
        self.cache_dir, self.cache_dtype, self.cache_workers = cache_dir, cache_dtype, cache_workers
        self.label_names = list(label_names or FINDINGS)
        self.datasets: dict[str, ImageReportDataset] = {}
        self._records: list[dict] | None = None

    def cache_spec(self) -> CacheSpec:
        """The preprocessing the cache must have been built with."""
        return CacheSpec(img_size=self.img_size, dtype=self.cache_dtype, window=self.window)

    def prepare_data(self) -> None:
        """Build (or resume) the cache when one is configured; Lightning calls this on rank 0."""
        if self.cache_dir and not is_complete(self.cache_dir, self.cache_spec()):
            summary = build_cache(
                self.all_records(), self.image_root(), self.cache_dir, self.cache_spec(),
                num_workers=self.cache_workers,
            )
            print(f"[medvl] cache: {summary}")

    def _dataset(self, split: str) -> ImageReportDataset | CachedImageDataset:
        if split not in self.datasets:
            hp = self
            augment = None
            if split == "train" and hp.augment:
                from medvl.data.transforms import AlbumentationsD, default_train_augmentation

                augment = AlbumentationsD(keys=("image",), transform=default_train_augmentation(hp.img_size))
            if hp.cache_dir:
                if not is_complete(hp.cache_dir, self.cache_spec()):
                    raise CacheMismatchError(
                        f"{hp.cache_dir}: no finished cache with {self.cache_spec()}; "
                        "call prepare_data() or run `medvl prepare` first"
                    )
                total = sum(1 for r in self.all_records() if r["split"] == split)
                rows = read_cache_manifest(hp.cache_dir, split=split)
                ds = CachedImageDataset(
                    hp.cache_dir, rows, label_names=self.label_names, text_key=hp.text_key, augment=augment
                )
                if total - len(rows):
                    print(f"[medvl] {split}: {total} studies, {total - len(rows)} dropped as unreadable")
                self.datasets[split] = ds
                return ds
            rows = [r for r in self.all_records() if r["split"] == split]
            ds = ImageReportDataset(
                rows, self.image_root(), img_size=hp.img_size, label_names=self.label_names,
                text_key=hp.text_key, augment=augment, window=hp.window, preload=hp.preload,
            )
            dropped = len(rows) - len(ds)
            log.info("%s split: %d studies found, %d dropped as unreadable", split, len(rows), dropped)
            if dropped:
                print(f"[medvl] {split}: {len(rows)} studies, {dropped} dropped as unreadable")
            self.datasets[split] = ds
        return self.datasets[split]

    def all_records(self) -> list[dict]:
        """Every row of the dataset (all splits), in the medvl manifest schema.

        Subclasses for other on-disk layouts (:mod:`medvl.data.formats`) override this
        and :meth:`image_root`; rows need ``study_id``, ``image`` (relative to
        :meth:`image_root`), ``split`` and the text fields.
        """
        if self._records is None:
            self._records = read_manifest(self.manifest)
        return self._records

    def train_texts(self) -> list[str]:
        """The training split's texts (``text_key``), e.g. to build a report vocabulary."""
        return [str(r.get(self.text_key) or "") for r in self.all_records() if r["split"] == "train"]

    def image_root(self) -> Path:
        """Folder the rows' ``image`` paths are relative to."""
        return Path(self.manifest).parent

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
