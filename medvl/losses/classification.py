"""Multi-label binary cross-entropy with an uncertainty policy for label -1.

medvl's labels are 1 (positive), 0 (negative) and -1 (uncertain or not mentioned). The
``uncertain`` policy says what -1 means for training, following the U-Ignore, U-Ones
and U-Zeros baselines of Irvin et al., "CheXpert: A Large Chest Radiograph Dataset with
Uncertainty Labels and Expert Comparison" (AAAI 2019, arXiv:1901.07031): ``ignore``
masks those entries out of the mean, ``ones``/``zeros`` map them to that target.

The loss consumes a model's output dict like the other medvl losses
(``MaskedBCELoss()(**out, labels=batch["labels"])``) and ignores keys it does not use.
It is computed in an explicit fp32 island, so bf16/fp16 logits under autocast give the
fp32 value.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedBCELoss"]

POLICIES = ("ignore", "ones", "zeros")


class MaskedBCELoss(nn.Module):
    """Mean binary cross-entropy over the labelled entries of a ``(B, K)`` label matrix.

    Args:
        uncertain: Training target for label -1: ``ignore`` (left out of the mean),
            ``ones`` or ``zeros``.
    """

    def __init__(self, uncertain: Literal["ignore", "ones", "zeros"] = "ignore") -> None:
        super().__init__()
        if uncertain not in POLICIES:
            raise ValueError(f"uncertain must be one of {POLICIES}, got {uncertain!r}")
        self.uncertain = uncertain

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, **_: Any) -> torch.Tensor:
        """``logits`` (B, K), ``labels`` (B, K) in {1, 0, -1} -> scalar; 0 when nothing is labelled."""
        if logits.shape != labels.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
        target = labels.float()
        if self.uncertain == "ones":
            target = torch.where(target < 0, torch.ones_like(target), target)
        elif self.uncertain == "zeros":
            target = torch.where(target < 0, torch.zeros_like(target), target)
        mask = (target >= 0).float()  # (B, K)
        # fp32 island: the per-element BCE and its mean over possibly few valid labels.
        with torch.autocast(logits.device.type, enabled=False):
            bce = F.binary_cross_entropy_with_logits(logits.float(), target.clamp_min(0), reduction="none")
            return (bce * mask).sum() / mask.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"uncertain={self.uncertain!r}"
