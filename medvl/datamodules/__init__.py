"""LightningDataModules: the synthetic default and manifest-based datasets."""

from medvl.datamodules.manifest import ManifestDataModule
from medvl.datamodules.synthetic import SyntheticCXR

__all__ = ["ManifestDataModule", "SyntheticCXR"]
