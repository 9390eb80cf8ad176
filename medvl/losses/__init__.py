"""Loss modules. Each consumes a model's output dict: ``loss = ClipLoss()(**out)``.

Torch only: nothing here imports Lightning.
"""

from medvl.losses.captioning import CaptioningLoss
from medvl.losses.classification import MaskedBCELoss
from medvl.losses.contrastive import ClipLoss, SigLipLoss
from medvl.losses.vqa import VQALoss

__all__ = ["CaptioningLoss", "ClipLoss", "MaskedBCELoss", "SigLipLoss", "VQALoss"]
