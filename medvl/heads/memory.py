"""Cross-modal memory (R2GenCMN): a learnt memory matrix shared by image and text.

Chen et al., "Cross-modal Memory Networks for Radiology Report Generation" (ACL 2021,
arXiv:2204.13258). A matrix of ``num_slots`` memory vectors is queried by visual
features (in the encoder) and by word embeddings (in the decoder); each query reads a
weighted sum of its ``topk`` best-matching slots through multi-head attention, and the
response is added to the query. Because both modalities read the same slots, the
memory learns image–text alignments (e.g. a slot for "cardiomegaly" patterns that the
decoder's words also retrieve).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossModalMemory"]


class CrossModalMemory(nn.Module):
    """Top-k multi-head memory querying, shared across modalities.

    Args:
        dim: Width of the queries (and the response).
        num_slots: Memory vectors; R2GenCMN uses 2048 for MIMIC-CXR.
        num_heads: Attention heads over the memory.
        topk: Slots each query reads (per head); the rest are masked out.
        dropout: Dropout on the memory attention weights.
    """

    def __init__(self, dim: int, num_slots: int = 2048, num_heads: int = 8, topk: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.memory = nn.Parameter(torch.randn(num_slots, dim) / math.sqrt(dim))
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.num_heads, self.topk = num_heads, min(topk, num_slots)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` plus its memory response: ``(B, L, dim) -> (B, L, dim)``."""
        B, L, D = x.shape
        H, hd = self.num_heads, D // self.num_heads
        q = self.q(x).view(B, L, H, hd).transpose(1, 2)  # (B, H, L, hd)
        k = self.k(self.memory).view(-1, H, hd).transpose(0, 1)  # (H, S, hd)
        v = self.v(self.memory).view(-1, H, hd).transpose(0, 1)  # (H, S, hd)
        scores = torch.einsum("bhld,hsd->bhls", q, k) / math.sqrt(hd)  # (B, H, L, S)
        top, idx = scores.topk(self.topk, dim=-1)  # (B, H, L, k)
        attn = self.drop(F.softmax(top.float(), dim=-1).to(x.dtype))  # fp32 softmax island
        picked = v[torch.arange(H, device=x.device)[None, :, None, None], idx]  # (B, H, L, k, hd)
        resp = (attn.unsqueeze(-1) * picked).sum(-2)  # (B, H, L, hd)
        return x + self.out(resp.transpose(1, 2).reshape(B, L, D))

    def no_weight_decay(self) -> set[str]:
        return {"memory"}
