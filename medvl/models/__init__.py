"""LightningModules, one per task."""

from medvl.models.contrastive import ContrastivePretraining
from medvl.models.probe import Classifier
from medvl.models.report import ReportGeneration

__all__ = ["Classifier", "ContrastivePretraining", "ReportGeneration"]
