"""LightningModules, one per task."""

from medvl.models.contrastive import ContrastivePretraining

__all__ = ["ContrastivePretraining"]
