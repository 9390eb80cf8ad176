"""The embedded default: phantom chest radiographs written as DICOM by ``medvl synth``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medvl.datamodules.manifest import ManifestDataModule


class SyntheticCXR(ManifestDataModule):
    """The synthetic phantom dataset, generated on first use.

    Args:
        root: Dataset folder; generated there when ``manifest.jsonl`` is absent.
        n: Studies to generate.
        seed: Generator seed; the same seed gives byte-identical files.
        img_size: Square input size.
        batch_size: Samples per batch.
        num_workers: Data-loader worker processes.
        text_key: Report field used as the text.
        augment: Albumentations augmentation on the training split.
        preload: Decode every image once at set-up and keep it in memory.
        cache_dir: Preprocessed cache folder, built on first use (see ManifestDataModule).
        cache_dtype: ``uint8`` or ``uint16`` pixels in the cache.
    """

    def __init__(
        self,
        root: str = "data/synthetic_cxr",
        n: int = 2000,
        seed: int = 0,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        text_key: Literal["report", "findings", "impression"] = "report",
        augment: bool = True,
        preload: bool = True,
        cache_dir: str | None = None,
        cache_dtype: Literal["uint8", "uint16"] = "uint8",
    ) -> None:
        super().__init__(
            manifest=str(Path(root) / "manifest.jsonl"), img_size=img_size, batch_size=batch_size,
            num_workers=num_workers, text_key=text_key, augment=augment, preload=preload and cache_dir is None,
            cache_dir=cache_dir, cache_dtype=cache_dtype,
        )
        self.root, self.n, self.seed = Path(root), n, seed

    def prepare_data(self) -> None:
        if not (self.root / "manifest.jsonl").is_file():
            from medvl.data.synth import generate_dataset

            print(f"[medvl] generating {self.n} synthetic studies in {self.root} (seed {self.seed})")
            generate_dataset(self.root, n=self.n, seed=self.seed)
        super().prepare_data()
