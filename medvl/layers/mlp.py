"""The position-wise feed-forward network of a Transformer block.

Two linear layers with a GELU between them, as in Vaswani et al., "Attention Is All You
Need" (NeurIPS 2017) and ViT (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929, Eq. 3;
GELU from Hendrycks & Gimpel, arXiv:1606.08415). Names (``fc1``, ``act``, ``fc2``)
follow ``timm.layers.Mlp``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` with optional dropout after each layer.

    Args:
        in_features: Input width.
        hidden_features: Hidden width; defaults to ``in_features``.
        out_features: Output width; defaults to ``in_features``.
        act_layer: Activation module class.
        bias: Whether the linear layers have biases.
        drop: Dropout probability after the activation and after ``fc2``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the MLP to the last dimension: ``(..., in) -> (..., out)``."""
        x = self.drop1(self.act(self.fc1(x)))  # (..., hidden)
        return self.drop2(self.fc2(x))  # (..., out)
