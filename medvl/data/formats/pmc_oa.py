"""PMC-OA in the layout of its Hugging Face release (``axiong/pmc_oa``).

Lin et al., "PMC-CLIP: Contrastive Language-Image Pre-training using Biomedical
Documents", MICCAI 2023. The release has ``train.jsonl``, ``valid.jsonl`` and
``test.jsonl`` (the official split) and ``pmc_oa.jsonl`` (everything), one
``{"image": "PMC212319_Fig3_4.jpg", "caption": "...", ...}`` per line, and the
sub-figures of ``images.zip`` in ``caption_T060_filtered_top4_sep_v0_subfigures/``
(found directly under the root or under ``images/``). The split files are used when
present; with only ``pmc_oa.jsonl`` the split is a seeded hash of the image name
(:func:`~medvl.data.formats.hash_split`, 80/10/10 by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medvl.data.formats._base import FormatResult, LayoutSource, StrPath, find_file, hash_split, read_jsonl
from medvl.data.reports import clean_text

__all__ = ["PMCOA", "read_pmc_oa", "PMC_OA_IMAGE_DIR"]

PMC_OA_IMAGE_DIR = "caption_T060_filtered_top4_sep_v0_subfigures"
"""Folder name of the extracted ``images.zip``."""


@dataclass(eq=False, kw_only=True)
class PMCOA(LayoutSource):
    """PMC-OA sub-figure-caption pairs; ``report`` is the caption, no labels.

    Args:
        root: Folder with the ``*.jsonl`` files.
        images_dir: The sub-figure folder, if not ``root/caption_T060_...`` or
            ``root/images/caption_T060_...`` (or ``root/images``).
        seed: Seed of the hash split used when only ``pmc_oa.jsonl`` exists.
        fractions: Train/val/test fractions of that split.

    Raises:
        MissingFileError: On reading: no JSONL file, or no image folder.
        ManifestError: On reading: a malformed line, with ``on_error="raise"``.
    """

    default_label_names = ()

    images_dir: StrPath | None = None
    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def _read(self) -> FormatResult:
        root, seed, fractions = Path(self.root), self.seed, self.fractions
        hash_split("", seed=seed, fractions=fractions)
        names = (("train", "train"), ("valid", "val"), ("test", "test"))
        split_files = [(root / f"{name}.jsonl", split) for name, split in names]
        sources: list[tuple[Path, str | None]] = [(p, s) for p, s in split_files if p.is_file()]
        if not sources:
            sources = [(find_file("PMC-OA captions (train/valid/test.jsonl or pmc_oa.jsonl)",
                                  [root / "pmc_oa.jsonl", *(p for p, _ in split_files)]), None)]
        if self.images_dir is not None:
            img_root = find_file("PMC-OA image folder", [Path(self.images_dir)], dirs=True)
        else:
            candidates = [root / PMC_OA_IMAGE_DIR, root / "images" / PMC_OA_IMAGE_DIR, root / "images"]
            img_root = find_file("PMC-OA image folder", candidates, dirs=True)
        col = self._collector(img_root)
        for path, split in sources:
            for where, row in read_jsonl(path, col):
                if not (isinstance(row.get("image"), str) and isinstance(row.get("caption"), str)):
                    col.bad(where, "expected an object with string 'image' and 'caption'")
                    continue
                caption = clean_text(row["caption"])
                if not caption:
                    col.drop("empty caption")
                    continue
                image = col.image(row["image"].strip(), where)
                if image is None:
                    continue
                record = {
                    "study_id": str(PurePosixPath(image).with_suffix("")),
                    "image": image,
                    "split": split or hash_split(image, seed=seed, fractions=fractions),
                    "report": caption,
                    "caption": caption,
                }
                col.add(record, where)
        return col.result()


def read_pmc_oa(root: StrPath, **options: Any) -> FormatResult:
    """Read PMC-OA: ``PMCOA(root, **options).result()``, with its options and errors."""
    return PMCOA(root, **options).result()
