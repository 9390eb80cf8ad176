"""LightningDataModules: the synthetic default, any medvl manifest, and the public datasets' layouts."""

from medvl.datamodules.manifest import ManifestDataModule
from medvl.datamodules.public import PMCOA, ROCO, CheXpert, IUXray, MIMICCXR, TableDataModule
from medvl.datamodules.synthetic import SyntheticCXR

__all__ = ["CheXpert", "IUXray", "MIMICCXR", "ManifestDataModule", "PMCOA", "ROCO", "SyntheticCXR", "TableDataModule"]
