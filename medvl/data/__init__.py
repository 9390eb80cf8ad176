"""Data: DICOM/PNG reading, MONAI dict transforms, datasets (never imports Lightning).

The reader (:mod:`medvl.data.dicom`) is imported eagerly; the transforms
(:mod:`medvl.data.transforms`) load on first attribute access because importing
MONAI takes seconds (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medvl.data.dicom import (
    IDENTIFYING_KEYWORDS,
    DicomImage,
    DicomReadError,
    read_dicom,
    read_image,
)

if TYPE_CHECKING:
    from medvl.data.transforms import (
        AlbumentationsD,
        LoadMedicalImage,
        LoadMedicalImaged,
        ResizeLongestPad,
        ResizeLongestPadd,
        build_image_transforms,
        default_train_augmentation,
    )

_LAZY: dict[str, str] = {
    "AlbumentationsD": "medvl.data.transforms",
    "LoadMedicalImage": "medvl.data.transforms",
    "LoadMedicalImaged": "medvl.data.transforms",
    "ResizeLongestPad": "medvl.data.transforms",
    "ResizeLongestPadd": "medvl.data.transforms",
    "build_image_transforms": "medvl.data.transforms",
    "default_train_augmentation": "medvl.data.transforms",
}

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "DicomImage",
    "DicomReadError",
    "read_dicom",
    "read_image",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import the MONAI-backed names on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
