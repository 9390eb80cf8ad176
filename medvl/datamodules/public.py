"""LightningDataModules over public datasets read in their official layouts.

Each class is a :class:`~medvl.datamodules.manifest.ManifestDataModule` whose
:meth:`all_records` and :meth:`image_root` come from a reader of
:mod:`medvl.data.formats`, so the loaders, augmentation and skip-and-count policy
are the manifest ones. The typed ``__init__`` arguments are the LightningCLI schema::

    class_path: medvl.datamodules.public.MIMICCXR
    init_args:
      root: /data/physionet.org/files/mimic-cxr-jpg/2.0.0
      reports: /data/mimic-cxr-reports
      section: impression

At set-up each prints and logs the reader's "found N, dropped M (reasons)" line.
VQA datasets (VQA-RAD, SLAKE, PathVQA) have readers only, for the VQA task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from medvl.data.formats import (
    FormatResult,
    read_chexpert,
    read_iu_xray,
    read_mimic_cxr,
    read_pmc_oa,
    read_roco,
    read_table,
)
from medvl.data.labels import CHEXPERT_LABELS
from medvl.datamodules.manifest import ManifestDataModule

__all__ = ["CheXpert", "IUXray", "MIMICCXR", "PMCOA", "ROCO", "TableDataModule"]

log = logging.getLogger(__name__)

TextKey = Literal["report", "findings", "impression"]


class _PublicDataModule(ManifestDataModule):
    """Shared set-up: read once, report the counts, serve records and image root."""

    def __init__(
        self,
        *,
        img_size: int,
        batch_size: int,
        num_workers: int,
        text_key: TextKey,
        label_names: list[str] | None,
        augment: bool,
        preload: bool,
        window: tuple[float, float] | str | None = None,
        cache_dir: str | None = None,
        cache_dtype: Literal["uint8", "uint16"] = "uint8",
    ) -> None:
        super().__init__(
            manifest="", img_size=img_size, batch_size=batch_size, num_workers=num_workers, text_key=text_key,
            label_names=label_names, augment=augment, preload=preload, window=window,
            cache_dir=cache_dir, cache_dtype=cache_dtype,
        )
        self.result: FormatResult | None = None

    def read(self) -> FormatResult:
        """Run the dataset's reader (subclasses)."""
        raise NotImplementedError

    def all_records(self) -> list[dict[str, Any]]:
        if self.result is None:
            self.result = self.read()
            msg = f"{type(self).__name__}: {self.result.summary()}"
            log.info(msg)
            print(f"[medvl] {msg}")
        return self.result.records

    def image_root(self) -> Path:
        self.all_records()
        assert self.result is not None
        return self.result.image_root


class MIMICCXR(_PublicDataModule):
    """MIMIC-CXR-JPG (or the DICOM release) with its free-text reports.

    Args:
        root: Folder holding ``files/`` (``mimic-cxr-jpg/2.0.0``).
        meta_root: Folder of the ``mimic-cxr-2.0.0-*.csv[.gz]`` tables (default ``root``).
        reports: Reports folder or ``mimic-cxr-reports.zip`` (default: found under ``root``).
        image_format: ``jpg`` or ``dcm``.
        labels: ``chexpert``, ``negbio`` or ``none``.
        uncertainty: -1 labels: ``ignore`` (U-Ignore), ``ones`` (U-Ones), ``zeros`` (U-Zeros).
        views: ``frontal`` (PA/AP), ``lateral`` or ``all``.
        section: Report section used as ``report``: ``findings``, ``impression`` or ``both``.
        images: ``one`` image per study or ``all`` images.
        on_error: ``raise`` on malformed rows, or ``skip`` and count them.
        check_files: Drop studies whose image file is missing, up front.
        img_size: Square input size.
        batch_size: Samples per batch.
        num_workers: Data-loader worker processes.
        text_key: Record field used as the text.
        label_names: Label order (default: the 14 CheXpert observations).
        augment: Albumentations augmentation on the training split.
        preload: Decode every image at set-up and keep it in memory (small subsets only).
        cache_dir: Preprocessed cache folder (``medvl prepare`` format), built on first use.
        window: Explicit (centre, width) or preset name overriding the DICOM files' own windows.
        cache_dir: Preprocessed cache folder, built on first use (``medvl prepare`` format).
        cache_dtype: ``uint8`` or ``uint16`` cache pixels.
    """

    def __init__(
        self,
        root: str,
        meta_root: str | None = None,
        reports: str | None = None,
        image_format: Literal["jpg", "dcm"] = "jpg",
        labels: Literal["chexpert", "negbio", "none"] = "chexpert",
        uncertainty: Literal["ignore", "ones", "zeros"] = "ignore",
        views: Literal["frontal", "lateral", "all"] = "frontal",
        section: Literal["findings", "impression", "both"] = "findings",
        images: Literal["one", "all"] = "one",
        on_error: Literal["raise", "skip"] = "raise",
        check_files: bool = True,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        text_key: TextKey = "report",
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = False,
        window: tuple[float, float] | str | None = None,
        cache_dir: str | None = None,
        cache_dtype: Literal["uint8", "uint16"] = "uint8",
    ) -> None:
        super().__init__(img_size=img_size, batch_size=batch_size, num_workers=num_workers, text_key=text_key,
                         label_names=label_names or list(CHEXPERT_LABELS), augment=augment, preload=preload,
                         window=window, cache_dir=cache_dir, cache_dtype=cache_dtype)
        self.options = dict(meta_root=meta_root, reports=reports, image_format=image_format, labels=labels,
                            uncertainty=uncertainty, views=views, section=section, images=images,
                            on_error=on_error, check_files=check_files)
        self.root = root

    def read(self) -> FormatResult:
        return read_mimic_cxr(self.root, **self.options)


class CheXpert(_PublicDataModule):
    """CheXpert (labels only: its ``report`` is empty; use it for probes and zero-shot).

    Args:
        root: ``CheXpert-v1.0-small/`` or its parent.
        uncertainty: -1 labels: ``ignore`` (U-Ignore), ``ones`` (U-Ones), ``zeros`` (U-Zeros).
        blank: Blank cells are ``absent`` (ignored) or ``negative``.
        views: ``frontal``, ``lateral`` or ``all``.
        valid_split: Split of the ``valid.csv`` images: ``val`` or ``test``.
        val_fraction: Fraction of train patients moved to ``val`` (seeded).
        seed: Seed of that split.
        on_error: ``raise`` on malformed rows, or ``skip`` and count them.
        check_files: Drop images that are missing, up front.
        img_size: Square input size.
        batch_size: Samples per batch.
        num_workers: Data-loader worker processes.
        label_names: Label order (default: the 14 CheXpert observations).
        augment: Albumentations augmentation on the training split.
        preload: Decode every image at set-up and keep it in memory.
    """

    def __init__(
        self,
        root: str,
        uncertainty: Literal["ignore", "ones", "zeros"] = "ignore",
        blank: Literal["absent", "negative"] = "absent",
        views: Literal["frontal", "lateral", "all"] = "frontal",
        valid_split: Literal["val", "test"] = "val",
        val_fraction: float = 0.0,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        check_files: bool = True,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(img_size=img_size, batch_size=batch_size, num_workers=num_workers, text_key="report",
                         label_names=label_names or list(CHEXPERT_LABELS), augment=augment, preload=preload,
                         cache_dir=cache_dir)
        self.options = dict(uncertainty=uncertainty, blank=blank, views=views, valid_split=valid_split,
                            val_fraction=val_fraction, seed=seed, on_error=on_error, check_files=check_files)
        self.root = root

    def read(self) -> FormatResult:
        return read_chexpert(self.root, **self.options)


class IUXray(_PublicDataModule):
    """IU X-ray (Open-i) reports and PNG images, split by a seeded hash of the report id.

    Args:
        root: Folder with ``NLMCXR_reports.tgz`` (or ``ecgen-radiology/``) and ``NLMCXR_png/``.
        reports: The report archive or folder, if elsewhere.
        images_dir: The PNG folder, if elsewhere.
        images: ``first`` image per report or ``all`` images.
        section: Report section used as ``report``: ``findings``, ``impression`` or ``both``.
        seed: Seed of the split.
        fractions: Train/val/test fractions.
        on_error: ``raise`` on malformed XML, or ``skip`` and count it.
        check_files: Drop images that are missing, up front.
        img_size: Square input size.
        batch_size: Samples per batch.
        num_workers: Data-loader worker processes.
        text_key: Record field used as the text.
        label_names: Label order (IU X-ray has no finding labels: all are ignored).
        augment: Albumentations augmentation on the training split.
        preload: Decode every image at set-up and keep it in memory.
    """

    def __init__(
        self,
        root: str,
        reports: str | None = None,
        images_dir: str | None = None,
        images: Literal["first", "all"] = "first",
        section: Literal["findings", "impression", "both"] = "findings",
        seed: int = 0,
        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        on_error: Literal["raise", "skip"] = "raise",
        check_files: bool = True,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        text_key: TextKey = "report",
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(img_size=img_size, batch_size=batch_size, num_workers=num_workers, text_key=text_key,
                         label_names=label_names, augment=augment, preload=preload,
                         cache_dir=cache_dir)
        self.options = dict(reports=reports, images_dir=images_dir, images=images, section=section, seed=seed,
                            fractions=tuple(fractions), on_error=on_error, check_files=check_files)
        self.root = root

    def read(self) -> FormatResult:
        return read_iu_xray(self.root, **self.options)


class ROCO(_PublicDataModule):
    """ROCO image-caption pairs (``report`` is the caption).

    Args:
        root: The roco-dataset repository folder (with ``data/``) or ``data/`` itself.
        subsets: ``radiology`` and/or ``non-radiology``.
        on_error: ``raise`` on malformed caption lines, or ``skip`` and count them.
        check_files: Drop images that are missing, up front.
        img_size: Square input size.
        batch_size: Samples per batch.
        num_workers: Data-loader worker processes.
        label_names: Label order (ROCO has no finding labels: all are ignored).
        augment: Albumentations augmentation on the training split.
        preload: Decode every image at set-up and keep it in memory.
    """

    def __init__(
        self,
        root: str,
        subsets: list[Literal["radiology", "non-radiology"]] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        check_files: bool = True,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(img_size=img_size, batch_size=batch_size, num_workers=num_workers, text_key="report",
                         label_names=label_names, augment=augment, preload=preload,
                         cache_dir=cache_dir)
        self.options = dict(subsets=tuple(subsets or ("radiology",)), on_error=on_error, check_files=check_files)
        self.root = root

    def read(self) -> FormatResult:
        return read_roco(self.root, **self.options)


class PMCOA(_PublicDataModule):
    """PMC-OA sub-figure-caption pairs (``report`` is the caption).

    Args:
        root: Folder with ``train/valid/test.jsonl`` or ``pmc_oa.jsonl``.
        images_dir: The sub-figure folder, if not found under ``root``.
        seed: Seed of the hash split used without the split files.
        on_error: ``raise`` on malformed lines, or ``skip`` and count them.
        check_files: Drop images that are missing, up front.
        img_size: Square input size.
        batch_size: Samples per batch.
        num_workers: Data-loader worker processes.
        label_names: Label order (PMC-OA has no finding labels: all are ignored).
        augment: Albumentations augmentation on the training split.
        preload: Decode every image at set-up and keep it in memory.
    """

    def __init__(
        self,
        root: str,
        images_dir: str | None = None,
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        check_files: bool = True,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(img_size=img_size, batch_size=batch_size, num_workers=num_workers, text_key="report",
                         label_names=label_names, augment=augment, preload=preload,
                         cache_dir=cache_dir)
        self.options = dict(images_dir=images_dir, seed=seed, on_error=on_error, check_files=check_files)
        self.root = root

    def read(self) -> FormatResult:
        return read_pmc_oa(self.root, **self.options)


class TableDataModule(_PublicDataModule):
    """Your own CSV / TSV / JSONL table of images and reports.

    Args:
        path: The table.
        image_root: Folder the image paths are relative to (default: the table's folder).
        image_col: Column of the image path.
        text_col: Column of the report or caption (``None`` for labels only).
        split_col: Column of the split (``None``: seeded hash split of the id).
        id_col: Column of the record id (default: the image path without suffix).
        label_cols: Label columns (1 / 0 / -1 / blank).
        findings_col: Column of the findings, instead of parsing the report.
        impression_col: Column of the impression, instead of parsing the report.
        uncertainty: -1 labels: ``ignore``, ``ones`` or ``zeros``.
        seed: Seed of the hash split.
        on_error: ``raise`` on malformed rows, or ``skip`` and count them.
        check_files: Drop rows whose image is missing, up front.
        img_size: Square input size.
        batch_size: Samples per batch.
        num_workers: Data-loader worker processes.
        text_key: Record field used as the text.
        label_names: Label order (default: the label columns' names, else the synthetic findings).
        augment: Albumentations augmentation on the training split.
        preload: Decode every image at set-up and keep it in memory.
    """

    def __init__(
        self,
        path: str,
        image_root: str | None = None,
        image_col: str = "image",
        text_col: str | None = "report",
        split_col: str | None = "split",
        id_col: str | None = None,
        label_cols: list[str] | None = None,
        findings_col: str | None = None,
        impression_col: str | None = None,
        uncertainty: Literal["ignore", "ones", "zeros"] = "ignore",
        seed: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        check_files: bool = True,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 0,
        text_key: TextKey = "report",
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        from medvl.data.formats.table import label_name

        default_names = [label_name(c) for c in label_cols] if label_cols else None
        super().__init__(img_size=img_size, batch_size=batch_size, num_workers=num_workers, text_key=text_key,
                         label_names=label_names or default_names, augment=augment, preload=preload,
                         cache_dir=cache_dir)
        self.options = dict(image_root=image_root, image_col=image_col, text_col=text_col, split_col=split_col,
                            id_col=id_col, label_cols=label_cols, findings_col=findings_col,
                            impression_col=impression_col, uncertainty=uncertainty, seed=seed,
                            on_error=on_error, check_files=check_files)
        self.path = path

    def read(self) -> FormatResult:
        return read_table(self.path, **self.options)
