"""Teacher-forced captioning loss: token cross-entropy for report generation.

The maximum-likelihood objective of image captioning (Vinyals et al., CVPR 2015, "Show
and Tell") as used by the report generators R2Gen (Chen et al., EMNLP 2020) and
LLaVA-Med (Li et al., NeurIPS 2023): the mean cross-entropy of each next token given the
image and the previous tokens, padding excluded, with optional label smoothing (Szegedy
et al., CVPR 2016). Consumes the network's output dict, ``CaptioningLoss()(**out)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CaptioningLoss"]


class CaptioningLoss(nn.Module):
    """Mean next-token cross-entropy over the non-ignored target positions.

    Args:
        label_smoothing: Cross-entropy label smoothing in ``[0, 1)``; 0 is plain MLE.
        ignore_index: Target id that does not count (padding); -100 as in PyTorch and
            Hugging Face.
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        """``logits`` ``(B, T, V)`` and ``targets`` ``(B, T)`` -> a scalar; other keys are ignored."""
        if logits.shape[:-1] != targets.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not fit targets {tuple(targets.shape)}")
        # fp32 island: the softmax over the vocabulary under bf16/fp16 autocast.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=self.ignore_index,
                                   label_smoothing=self.label_smoothing)
