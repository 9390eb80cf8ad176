"""Multihead attention pooling (MAP): a learnt query attends over the tokens.

The pooling head of big_vision ViTs and SigLIP (Zhai et al., "Sigmoid Loss for Language
Image Pre-Training", ICCV 2023, arXiv:2303.15343; the MAP head of Zhai et al., "Scaling
Vision Transformers", CVPR 2022, arXiv:2106.04560): one learnt latent token cross-attends
to the encoder's tokens, then passes a residual pre-norm MLP. Module and parameter names
(``latent``, ``q``, ``kv``, ``proj``, ``norm``, ``mlp.fc1``, ``mlp.fc2``) follow
``timm.layers.AttentionPoolLatent`` so SigLIP weights load with a plain state-dict copy.
Like :class:`medvl.layers.Attention` it has a fused (SDPA) and a reference path chosen by
``medvl.kernels.set_fused`` / ``MEDVL_FUSED`` at construction (``module.fused_attn``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from medvl.layers.attention import attend, fused_attn_default
from medvl.layers.mlp import Mlp

__all__ = ["AttentionPoolLatent"]


class AttentionPoolLatent(nn.Module):
    """Pools ``(B, N, D)`` tokens into ``(B, D)`` with one learnt query.

    Args:
        dim: Token width ``D``.
        num_heads: Attention heads; ``dim`` must be divisible by it.
        mlp_ratio: Hidden width of the MLP as a multiple of ``dim``.
        norm_layer: Norm class for the norm before the MLP.
        act_layer: MLP activation class.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn_default()
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.init_weights()

    def init_weights(self) -> None:
        """The latent query as timm initialises it: truncated normal, std ``D ** -0.5``."""
        nn.init.trunc_normal_(self.latent, std=self.latent.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pools tokens: ``(B, N, D) -> (B, D)``."""
        B, N, D = x.shape
        q = self.q(self.latent.expand(B, -1, -1))  # (B, 1, D)
        q = q.reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, 1, hd)
        kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, N, hd)
        out = attend(q, k, v, scale=self.scale, fused=self.fused_attn)  # (B, nh, 1, hd)
        out = self.proj(out.transpose(1, 2).reshape(B, 1, D))  # (B, 1, D)
        out = out + self.mlp(self.norm(out))
        return out[:, 0]  # (B, D)
