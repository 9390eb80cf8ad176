"""The position-wise feed-forward networks of a Transformer block.

``Mlp``: two linear layers with a GELU between them, as in Vaswani et al., "Attention Is
All You Need" (NeurIPS 2017) and ViT (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929,
Eq. 3; GELU from Hendrycks & Gimpel, arXiv:1606.08415). ``GluMlp``: the gated variant
of Shazeer, "GLU Variants Improve Transformer" (arXiv:2002.05202), SwiGLU with a SiLU
gate as EVA-02 (Fang et al., arXiv:2303.11331) and DINOv2-giant use it. Either may hold
a LayerNorm on the hidden activations before ``fc2`` (the "sub-LN" of EVA-02, after
NormFormer, Shleifer et al., arXiv:2110.09456). Names (``fc1``, ``act``, ``norm``,
``fc2``) follow ``timm.layers.Mlp`` / ``timm.layers.GluMlp``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["GluMlp", "Mlp"]


class Mlp(nn.Module):
    """``fc2(norm(drop(act(fc1(x)))))`` with optional dropout after each layer.

    Args:
        in_features: Input width.
        hidden_features: Hidden width; defaults to ``in_features``.
        out_features: Output width; defaults to ``in_features``.
        act_layer: Activation module class.
        bias: Whether the linear layers have biases.
        drop: Dropout probability after the activation and after ``fc2``.
        norm_layer: Optional norm on the hidden activations (EVA-02's sub-LN); None for identity.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the MLP to the last dimension: ``(..., in) -> (..., out)``."""
        x = self.norm(self.drop1(self.act(self.fc1(x))))  # (..., hidden)
        return self.drop2(self.fc2(x))  # (..., out)


class GluMlp(nn.Module):
    """Gated MLP: ``fc2(norm(act(gate) * value))`` with ``[gate, value] = fc1(x)``.

    One packed ``fc1`` of width ``2 * hidden_features`` whose first half is the gate
    (timm's ``SwiGLUPacked``, EVA-02's packed ``GluMlp``); EVA's split ``fc1_g``/``fc1_x``
    weights are its two halves.

    Args:
        in_features: Input width.
        hidden_features: Width of the gated product (the input of ``fc2``).
        out_features: Output width; defaults to ``in_features``.
        act_layer: Gate activation class (SiLU: SwiGLU).
        bias: Whether the linear layers have biases.
        drop: Dropout probability after the gating and after ``fc2``.
        norm_layer: Optional norm on the gated product (EVA-02's sub-LN); None for identity.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.SiLU,
        bias: bool = True,
        drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the gated MLP to the last dimension: ``(..., in) -> (..., out)``."""
        gate, value = self.fc1(x).chunk(2, dim=-1)  # each (..., hidden)
        x = self.norm(self.drop1(self.act(gate) * value))
        return self.drop2(self.fc2(x))  # (..., out)
