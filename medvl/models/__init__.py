"""LightningModules, one per task."""

from medvl.models.contrastive import ContrastivePretraining
from medvl.models.probe import Classifier
from medvl.models.report import ReportGeneration
from medvl.models.vqa import VQA

__all__ = ["Classifier", "ContrastivePretraining", "ReportGeneration", "VQA"]
