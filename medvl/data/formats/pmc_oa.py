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

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from medvl.data.formats._base import Collector, FormatResult, OnError, find_file, hash_split, read_jsonl
from medvl.data.reports import clean_text

__all__ = ["read_pmc_oa", "PMC_OA_IMAGE_DIR"]

PMC_OA_IMAGE_DIR = "caption_T060_filtered_top4_sep_v0_subfigures"
"""Folder name of the extracted ``images.zip``."""


def read_pmc_oa(
    root: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    on_error: OnError = "raise",
    check_files: bool = True,
) -> FormatResult:
    """Read PMC-OA.

    Args:
        root: Folder with the ``*.jsonl`` files.
        images_dir: The sub-figure folder, if not ``root/caption_T060_...`` or
            ``root/images/caption_T060_...`` (or ``root/images``).
        seed: Seed of the hash split used when only ``pmc_oa.jsonl`` exists.
        fractions: Train/val/test fractions of that split.
        on_error: ``raise`` or ``skip`` malformed lines.
        check_files: Drop records whose image is missing.

    Raises:
        MissingFileError: No JSONL file, or no image folder.
        ManifestError: A malformed line, with ``on_error="raise"``.
    """
    root = Path(root)
    hash_split("", seed=seed, fractions=fractions)
    names = (("train", "train"), ("valid", "val"), ("test", "test"))
    split_files = [(root / f"{name}.jsonl", split) for name, split in names]
    sources: list[tuple[Path, str | None]] = [(p, s) for p, s in split_files if p.is_file()]
    if not sources:
        sources = [(find_file("PMC-OA captions (train/valid/test.jsonl or pmc_oa.jsonl)",
                              [root / "pmc_oa.jsonl", *(p for p, _ in split_files)]), None)]
    if images_dir is not None:
        img_root = find_file("PMC-OA image folder", [Path(images_dir)], dirs=True)
    else:
        candidates = [root / PMC_OA_IMAGE_DIR, root / "images" / PMC_OA_IMAGE_DIR, root / "images"]
        img_root = find_file("PMC-OA image folder", candidates, dirs=True)
    col = Collector(img_root, on_error=on_error, check_files=check_files)
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
