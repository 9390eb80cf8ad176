"""Projection heads that map encoder features into the shared image–text space.

Linear projection as in CLIP (Radford et al., 2021); the two-layer MLP variant follows
ConVIRT (Zhang et al., 2020), the first medical image–report contrastive model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """Maps (B, in_dim) features to (B, out_dim) embeddings; normalisation is left to the caller.

    Args:
        in_dim: Width of the encoder's pooled feature.
        out_dim: Width of the joint embedding space.
        kind: ``"linear"`` (CLIP) or ``"mlp"`` (ConVIRT: Linear-GELU-Linear).
    """

    def __init__(self, in_dim: int, out_dim: int, kind: Literal["linear", "mlp"] = "linear") -> None:
        super().__init__()
        if kind == "linear":
            self.proj = nn.Linear(in_dim, out_dim, bias=False)
        elif kind == "mlp":
            self.proj = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
        else:
            raise ValueError(f"unknown projection kind {kind!r}; expected 'linear' or 'mlp'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
