"""LightningModules, one per task."""

from medvl.models.contrastive import ContrastivePretraining
from medvl.models.probe import Classifier

__all__ = ["Classifier", "ContrastivePretraining"]
