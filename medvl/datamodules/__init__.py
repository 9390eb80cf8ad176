"""LightningDataModules: one image–text data module composed with a record source.

:class:`ImageTextDataModule` takes any :mod:`medvl.data.sources` source (a manifest, the
synthetic set, the public datasets in their own layouts); :class:`SyntheticCXR` and
:class:`ManifestDataModule` are it with the source spelled out, and :class:`VQADataModule`
is it with one sample per question of a VQA source. The old per-dataset names
(``MIMICCXR``, ``CheXpert``, ``IUXray``, ``ROCO``, ``PMCOA``, ``TableDataModule``) still
work and warn.
"""

from medvl.datamodules.base import ImageTextDataModule
from medvl.datamodules.manifest import ManifestDataModule
from medvl.datamodules.public import PMCOA, ROCO, CheXpert, IUXray, MIMICCXR, TableDataModule
from medvl.datamodules.synthetic import SyntheticCXR
from medvl.datamodules.vqa import VQADataModule

__all__ = [
    "CheXpert",
    "IUXray",
    "ImageTextDataModule",
    "MIMICCXR",
    "ManifestDataModule",
    "PMCOA",
    "ROCO",
    "SyntheticCXR",
    "TableDataModule",
    "VQADataModule",
]
