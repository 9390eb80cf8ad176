"""Networks: plain torch assemblies of encoders and heads, usable without Lightning.

As open_clip keeps its ``CLIP`` module apart from the training task, a network here is
an ``nn.Module`` that returns features or logits; the tasks in :mod:`medvl.models` add
the loss, optimiser, logging and metrics.
"""

from medvl.networks.classifier import ImageClassifier
from medvl.networks.image_text import ImageTextModel
from medvl.networks.report import ReportGenerator
from medvl.networks.vqa import FusionVQA, GenerativeVQA

__all__ = ["FusionVQA", "GenerativeVQA", "ImageClassifier", "ImageTextModel", "ReportGenerator"]
