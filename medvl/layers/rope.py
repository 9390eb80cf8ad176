"""2-D axial rotary position embeddings (RoPE) for patch tokens.

Rotary embeddings (Su et al., "RoFormer: Enhanced Transformer with Rotary Position
Embedding", arXiv:2104.09864) rotate each pair of query/key channels by an angle
proportional to the token's position, so that attention scores depend on relative
positions. The 2-D axial form of EVA-02 (Fang et al., "EVA-02: A Visual Representation
for Neon Genesis", arXiv:2303.11331; Heo et al., "Rotary Position Embedding for Vision
Transformer", arXiv:2403.13298): the first half of each head's channels encodes the row,
the second half the column, with frequencies ``temperature ** (-i / (head_dim / 4))``
and channel pairs interleaved ``(x0, x1), (x2, x3), ...``.

EVA scales positions to a reference grid (``ref_grid``, timm's ``ref_feat_shape``): at
another input size the positions of a ``gh x gw`` grid are ``i * ref / g``, so an image
of any size spans the same angles as the pretraining grid. The numerics follow timm's
``RotaryEmbeddingCat`` (``in_pixels=False``), computed in fp32.
"""

from __future__ import annotations

import torch

__all__ = ["apply_rope", "pad_rope", "rope_2d"]


def rope_2d(
    grid: tuple[int, int],
    head_dim: int,
    *,
    ref_grid: tuple[int, int] | None = None,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sines and cosines of the rotation angles of a patch grid.

    Args:
        grid: Patch grid ``(gh, gw)``.
        head_dim: Channels per attention head; a multiple of 4.
        ref_grid: Grid the positions are scaled to; None keeps patch indices.
        temperature: Frequency base.
        device: Device of the result.

    Returns:
        ``(gh * gw, 2 * head_dim)`` fp32: ``[sin | cos]``, each in the interleaved
        layout (every angle twice), rows in row-major patch order.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    num_bands = head_dim // 4
    exponent = torch.arange(num_bands, device=device, dtype=torch.float32) / num_bands
    bands = 1.0 / (temperature**exponent)  # (nb,)
    axes = [torch.arange(int(g), device=device, dtype=torch.float32) for g in grid]
    if ref_grid is not None:
        axes = [t / g * r for t, g, r in zip(axes, grid, ref_grid)]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (gh, gw, 2): row, column
    angles = coords.unsqueeze(-1) * bands  # (gh, gw, 2, nb)
    angles = angles.flatten(-2).flatten(0, 1)  # (N, head_dim / 2): row bands, then column bands
    sin = angles.sin().repeat_interleave(2, dim=-1)  # (N, head_dim)
    cos = angles.cos().repeat_interleave(2, dim=-1)
    return torch.cat([sin, cos], dim=-1)  # (N, 2 * head_dim)


def pad_rope(rope: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """Prepends identity rotations (sin 0, cos 1) for prefix tokens, which carry no position.

    Args:
        rope: ``(N, 2 * head_dim)`` or ``(B, N, 2 * head_dim)`` from :func:`rope_2d`.
        num_prefix_tokens: Class and register tokens in front of the patches.

    Returns:
        ``(P + N, 2 * head_dim)`` or ``(B, P + N, 2 * head_dim)``: one row per token, so
        that :func:`apply_rope` needs no slicing (the identity rows leave prefix tokens
        exactly as they were).
    """
    if not num_prefix_tokens:
        return rope
    hd = rope.shape[-1] // 2
    identity = torch.cat([rope.new_zeros(num_prefix_tokens, hd), rope.new_ones(num_prefix_tokens, hd)], dim=-1)
    if rope.ndim == 3:
        identity = identity.expand(rope.shape[0], -1, -1)
    return torch.cat([identity, rope], dim=-2)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotates queries or keys by ``rope``, token by token.

    Args:
        x: Queries or keys, ``(B, heads, N, head_dim)`` (four dimensions).
        rope: ``(N, 2 * head_dim)``, or per sample ``(B, N, 2 * head_dim)`` after patch
            dropout: :func:`rope_2d` rows with :func:`pad_rope` identities for prefix tokens.

    Returns:
        Rotated ``x``, in its dtype (the rotation itself runs in the promoted dtype, fp32
        for half-precision ``x``).
    """
    if rope.ndim == 3:
        rope = rope.unsqueeze(1)  # (B, 1, N, 2 * hd): broadcast over heads
    sin, cos = rope.chunk(2, dim=rope.ndim - 1)
    # rotate each channel pair (x0, x1) -> (-x1, x0). Dims are spelled out: the TorchScript
    # ONNX exporter loses the rank of unbound q/k and would resolve negative dims wrongly.
    rotated = torch.stack([-x[:, :, :, 1::2], x[:, :, :, 0::2]], dim=4).reshape(x.shape)  # (B, nh, N, hd)
    return (x * cos + rotated * sin).to(x.dtype)
