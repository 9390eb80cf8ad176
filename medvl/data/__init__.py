"""Data: DICOM/PNG reading, MONAI dict transforms, datasets (never imports Lightning).

The reader (:mod:`medvl.data.dicom`) and the series assembler (:mod:`medvl.data.series`)
are imported eagerly; the transforms, the MONAI ``ImageReader`` and the public-dataset
format readers load on first attribute access because importing MONAI takes seconds
(PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvl._lazy import lazy_attributes
from medvl.data.deid import IDENTIFYING_KEYWORDS
from medvl.data.dicom import (
    META_KEYS,
    WINDOW_PRESETS,
    DicomImage,
    DicomReadError,
    read_dicom,
    read_image,
    resolve_window,
)
from medvl.data.series import DicomVolume, SeriesInfo, list_series, read_series, series_key

if TYPE_CHECKING:
    from medvl.data.formats import (
        FormatResult,
        read_chexpert,
        read_iu_xray,
        read_mimic_cxr,
        read_pathvqa,
        read_pmc_oa,
        read_roco,
        read_slake,
        read_table,
        read_vqa_rad,
    )
    from medvl.data.monai_reader import MedvlDicomReader
    from medvl.data.pipeline import ImagePipeline
    from medvl.data.transforms import (
        AlbumentationsD,
        LoadMedicalImage,
        LoadMedicalImaged,
        NormalizeImaged,
        ResizeLongestPad,
        ResizeLongestPadd,
        build_image_transforms,
        default_train_augmentation,
    )
    from medvl.data.vqa import VQADataset, answer_vocabulary, closed_candidates

_LAZY: dict[str, str] = {
    "ImagePipeline": "medvl.data.pipeline",
    "NormalizeImaged": "medvl.data.transforms",
    "AlbumentationsD": "medvl.data.transforms",
    "LoadMedicalImage": "medvl.data.transforms",
    "LoadMedicalImaged": "medvl.data.transforms",
    "ResizeLongestPad": "medvl.data.transforms",
    "ResizeLongestPadd": "medvl.data.transforms",
    "build_image_transforms": "medvl.data.transforms",
    "default_train_augmentation": "medvl.data.transforms",
    "MedvlDicomReader": "medvl.data.monai_reader",
    "FormatResult": "medvl.data.formats",
    "read_chexpert": "medvl.data.formats",
    "read_iu_xray": "medvl.data.formats",
    "read_mimic_cxr": "medvl.data.formats",
    "read_pathvqa": "medvl.data.formats",
    "read_pmc_oa": "medvl.data.formats",
    "read_roco": "medvl.data.formats",
    "read_slake": "medvl.data.formats",
    "read_table": "medvl.data.formats",
    "read_vqa_rad": "medvl.data.formats",
    "VQADataset": "medvl.data.vqa",
    "answer_vocabulary": "medvl.data.vqa",
    "closed_candidates": "medvl.data.vqa",
}

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "META_KEYS",
    "WINDOW_PRESETS",
    "DicomImage",
    "DicomReadError",
    "DicomVolume",
    "SeriesInfo",
    "list_series",
    "read_dicom",
    "read_image",
    "read_series",
    "resolve_window",
    "series_key",
    *_LAZY,
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
