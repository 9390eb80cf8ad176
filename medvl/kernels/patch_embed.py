"""Patch embedding with the position-embedding add fused into the GEMM epilogue.

The ViT patchify of Dosovitskiy et al. (ICLR 2021, arXiv:2010.11929, Eq. 1) is a
convolution with kernel = stride = patch size, i.e. a GEMM of the unfolded patches by
the flattened kernel; the encoder then adds the position embedding. Here
:func:`patchify` unfolds the image (channel-major within a patch, the order of
``conv.weight.reshape(D, -1)``) and :func:`patch_embed_pos` computes
``patches @ weight.T + bias + pos_embed`` with one Triton kernel
(:mod:`medvl.kernels._patch_embed_kernels`) where Triton can run. The backward uses
PyTorch GEMMs inside a ``torch.autograd.Function``. :func:`patch_embed_pos_reference`
is the plain-PyTorch slow twin.

Dtypes follow the unfused path: under autocast the GEMM runs in the autocast dtype (as
``F.linear`` / ``F.conv2d`` would), otherwise in the dtype of ``patches`` (weight and
bias are cast to it, differentiably); the result takes
``torch.promote_types(gemm_dtype, pos_embed.dtype)``, as ``linear_out + pos_embed``
does. A class token and its position embedding are not part of this op: the caller adds
``pos_embed[:, :num_prefix_tokens]`` to the prefix tokens and passes the rest here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medvl.kernels._switch import triton_interpret, use_triton

__all__ = ["patchify", "patch_embed_pos", "patch_embed_pos_reference"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def patchify(images: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Unfolds images into flattened non-overlapping patches.

    Args:
        images: ``(B, C, H, W)`` with ``H`` and ``W`` multiples of the patch size.
        patch_size: Patch side, an int or ``(ph, pw)``.

    Returns:
        ``(B, N, C * ph * pw)`` with ``N = (H / ph) * (W / pw)`` in row-major grid order;
        each patch is flattened channel-major, matching ``conv.weight.reshape(D, -1)``.
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    if images.ndim != 4:
        raise ValueError(f"patchify: expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    B, C, H, W = images.shape
    if H % ph or W % pw:
        raise ValueError(f"patchify: image size ({H}, {W}) is not divisible by patch size ({ph}, {pw})")
    gh, gw = H // ph, W // pw
    x = images.reshape(B, C, gh, ph, gw, pw)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, ph, pw)
    return x.reshape(B, gh * gw, C * ph * pw)


def _prepare(
    patches: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos_embed: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Checks shapes, flattens a conv weight and casts to the GEMM dtype."""
    if patches.ndim != 3:
        raise ValueError(f"patch_embed_pos: expected (B, N, K) patches, got shape {tuple(patches.shape)}")
    B, N, K = patches.shape
    if weight.ndim == 4:  # a Conv2d kernel (D, C, ph, pw)
        weight = weight.reshape(weight.shape[0], -1)
    if weight.ndim != 2 or weight.shape[1] != K:
        raise ValueError(
            f"patch_embed_pos: weight must be (D, {K}) or a conv kernel with {K} inputs, "
            f"got shape {tuple(weight.shape)}"
        )
    D = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(f"patch_embed_pos: bias must have shape ({D},), got {tuple(bias.shape)}")
    if pos_embed.ndim == 3 and pos_embed.shape[0] == 1:
        pos_embed = pos_embed[0]
    if tuple(pos_embed.shape) != (N, D):
        raise ValueError(
            f"patch_embed_pos: pos_embed must be ({N}, {D}) or (1, {N}, {D}), got {tuple(pos_embed.shape)}"
        )
    dev = patches.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else patches.dtype
    bias = bias.to(dtype) if bias is not None else None
    return patches.to(dtype), weight.to(dtype), bias, pos_embed


def patch_embed_pos_reference(
    patches: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos_embed: torch.Tensor,
) -> torch.Tensor:
    """Reference path: ``F.linear(patches, weight, bias) + pos_embed``.

    Args: as :func:`patch_embed_pos`.

    Returns:
        Patch tokens with position embeddings, ``(B, N, D)``.
    """
    patches, weight, bias, pos = _prepare(patches, weight, bias, pos_embed)
    return F.linear(patches, weight, bias) + pos  # (B, N, D)


class _PatchEmbedPos(torch.autograd.Function):
    """Triton forward; PyTorch GEMMs for the backward. Inputs already in the GEMM dtype."""

    @staticmethod
    def forward(ctx, patches, weight, bias, pos, interpret):
        from medvl.kernels._patch_embed_kernels import patch_embed_pos_fwd

        out_dtype = torch.promote_types(patches.dtype, pos.dtype)
        out = patch_embed_pos_fwd(
            patches.contiguous(), weight.contiguous(),
            bias.contiguous() if bias is not None else None,
            pos.contiguous(), out_dtype, interpret,
        )
        ctx.save_for_backward(patches, weight)
        ctx.has_bias = bias is not None
        ctx.pos_dtype = pos.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        patches, weight = ctx.saved_tensors
        D, K = weight.shape
        # The add's backward hands the GEMM its gradient in the GEMM dtype.
        g = grad_out.to(patches.dtype)  # (B, N, D)
        d_patches = g @ weight if ctx.needs_input_grad[0] else None  # (B, N, K)
        d_weight = g.reshape(-1, D).T @ patches.reshape(-1, K) if ctx.needs_input_grad[1] else None  # (D, K)
        d_bias = g.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (D,)
        d_pos = grad_out.sum(0).to(ctx.pos_dtype) if ctx.needs_input_grad[3] else None  # (N, D)
        return d_patches, d_weight, d_bias, d_pos, None


def patch_embed_pos(
    patches: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos_embed: torch.Tensor,
) -> torch.Tensor:
    """Patch projection plus position embedding, fused where Triton can run.

    Args:
        patches: Unfolded patches ``(B, N, K)``, e.g. from :func:`patchify`.
        weight: Projection ``(D, K)``, or the patchify ``Conv2d`` kernel ``(D, C, ph, pw)``.
        bias: Projection bias ``(D,)`` or None.
        pos_embed: Position embeddings of the ``N`` patch tokens, ``(N, D)`` or
            ``(1, N, D)``.

    Returns:
        ``(B, N, D)`` tokens; gradients flow to all four inputs on either path.
    """
    p, w, b, pos = _prepare(patches, weight, bias, pos_embed)
    ts = [t for t in (p, w, b, pos) if t is not None]
    if (
        use_triton(*ts)
        and all(t.dtype in _FLOATS for t in ts)
        and len({t.device for t in ts}) == 1
        and p.numel() > 0
    ):
        return _PatchEmbedPos.apply(p, w, b, pos, triton_interpret())
    return F.linear(p, w, b) + pos  # the reference path, inputs already prepared
