"""Learnt absolute position embeddings and their resampling to new grid sizes.

ViT (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929, Sec. 3.2 "Fine-tuning and higher
resolution") adapts a position embedding learnt at one resolution to another by 2-D
interpolation over the patch grid. ``resample_abs_pos_embed`` does the same as
``timm.layers.resample_abs_pos_embed`` (bicubic, antialiased, prefix tokens passed
through untouched) so that medvl and timm agree bit for bit on resized inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["resample_abs_pos_embed"]


def resample_abs_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, ...] | list[int],
    old_grid: tuple[int, ...] | list[int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resamples a ``(1, P + gh*gw, D)`` position embedding to a new patch grid.

    A 3-D grid ``(gd, gh, gw)`` (volume encoders) is resampled trilinearly, since
    PyTorch has no bicubic 3-D interpolation.

    Args:
        pos_embed: Position embedding, ``(1, P + old_gh * old_gw, D)``, whose first
            ``num_prefix_tokens`` rows belong to prefix (class) tokens.
        new_grid: Target patch grid ``(gh, gw)``.
        old_grid: Source patch grid; if None it is assumed square.
        num_prefix_tokens: Leading rows that are not part of the grid; copied as is.
        interpolation: ``F.interpolate`` mode.
        antialias: Antialias when downsampling (timm's default).

    Returns:
        The resampled embedding, ``(1, P + new_gh * new_gw, D)``, in the input dtype.
    """
    if len(new_grid) == 3:
        return _resample_3d(pos_embed, tuple(int(g) for g in new_grid), old_grid, num_prefix_tokens)
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    num_pos = pos_embed.shape[1]
    num_grid = num_pos - num_prefix_tokens
    if old_grid is None:
        side = int(math.sqrt(num_grid))
        if side * side != num_grid:
            raise ValueError(
                f"cannot infer a square grid from {num_grid} position tokens; pass old_grid"
            )
        old_grid = (side, side)
    old_grid = (int(old_grid[0]), int(old_grid[1]))
    if old_grid[0] * old_grid[1] != num_grid:
        raise ValueError(f"old_grid {old_grid} does not hold {num_grid} position tokens")
    if old_grid == new_grid:
        return pos_embed

    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    orig_dtype = pos_embed.dtype
    # fp32 island: bicubic interpolation is not implemented for half types on every
    # backend and its overshoot is worth keeping precise; cast back afterwards.
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode=interpolation, antialias=antialias)
    # (1, D, new_gh, new_gw) -> (1, new_gh * new_gw, D)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(orig_dtype)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid


def _resample_3d(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, ...],
    old_grid: tuple[int, ...] | list[int] | None,
    num_prefix_tokens: int,
) -> torch.Tensor:
    """Trilinear resampling of a ``(1, P + gd*gh*gw, D)`` embedding."""
    if old_grid is None or len(old_grid) != 3:
        raise ValueError("resampling a 3-D position embedding needs old_grid=(gd, gh, gw)")
    old_grid = tuple(int(g) for g in old_grid)
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if math.prod(old_grid) != num_grid:
        raise ValueError(f"old_grid {old_grid} does not hold {num_grid} position tokens")
    if old_grid == new_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim, orig_dtype = pos_embed.shape[-1], pos_embed.dtype
    # fp32 island, as in the 2-D case.
    grid = grid.float().reshape(1, *old_grid, dim).permute(0, 4, 1, 2, 3)  # (1, D, gd, gh, gw)
    grid = F.interpolate(grid, size=new_grid, mode="trilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(orig_dtype)  # (1, N', D)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid
