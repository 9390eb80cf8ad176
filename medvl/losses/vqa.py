"""Answer-classification losses of the VQA fusion head.

``bce``: binary cross-entropy on soft answer scores, summed over the answers (the mean
over the vocabulary times its size), as the VQA classifiers since Teney et al. ("Tips
and Tricks for Visual Question Answering", CVPR 2018) and METER/M3AE train; the
medical sets carry one answer per question, so its score is 1 and the others 0. ``ce``:
softmax cross-entropy on the answer index. A training answer outside the vocabulary
(below the minimum count) has target index -1: an all-zero score row under ``bce``, no
loss under ``ce``. Consumes the network's output dict:
``VQALoss()(**out, targets=...)``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VQALoss"]


class VQALoss(nn.Module):
    """Answer loss over ``logits`` ``(B, A)`` for answer indices ``targets`` ``(B,)`` (-1: outside the vocabulary).

    Args:
        kind: ``bce`` (soft scores) or ``ce`` (cross-entropy).
        label_smoothing: Cross-entropy label smoothing (``ce`` only).
    """

    def __init__(self, kind: Literal["bce", "ce"] = "bce", label_smoothing: float = 0.0) -> None:
        super().__init__()
        if kind not in ("bce", "ce"):
            raise ValueError(f"kind must be 'bce' or 'ce', got {kind!r}")
        if kind == "bce" and label_smoothing:
            raise ValueError("label_smoothing applies to kind='ce' only")
        self.kind, self.label_smoothing = kind, label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        if logits.ndim != 2 or targets.shape != logits.shape[:1]:
            raise ValueError(f"logits {tuple(logits.shape)} do not fit targets {tuple(targets.shape)}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            if self.kind == "ce":
                if bool((targets < 0).all()):
                    return logits.sum() * 0.0  # nothing to learn from: keep the graph, no NaN
                return F.cross_entropy(logits, targets, ignore_index=-1, label_smoothing=self.label_smoothing)
            scores = torch.zeros_like(logits)
            known = targets >= 0
            scores[known.nonzero(as_tuple=True)[0], targets[known]] = 1.0
            return F.binary_cross_entropy_with_logits(logits, scores) * logits.shape[1]
