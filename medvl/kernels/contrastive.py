"""Memory-lean CLIP and SigLIP losses: the B x B logits exist one block at a time.

Same losses as :class:`medvl.losses.ClipLoss` (symmetric InfoNCE of Radford et al.,
CLIP, arXiv:2103.00020, with optional label smoothing) and
:class:`medvl.losses.SigLipLoss` (pairwise sigmoid of Zhai et al., SigLIP,
arXiv:2303.15343), computed without ever holding the full ``(B, B)`` logit matrix:

* CLIP: one pass over ``(block, block)`` tiles keeps running maxima and sums for the
  row (image->text) and column (text->image) logsumexps -- the online softmax of
  Milakov & Gimelshein (arXiv:1805.02867) used by flash attention. The label terms
  need only the diagonal and the feature means.
* SigLIP: the sum of ``-logsigmoid`` over tiles.
* Backward: each tile is recomputed and its logit gradient folded straight into the
  feature gradients, ``d img += s * G @ txt_block``, ``d txt += s * G.T @ img_block``,
  plus the scalar gradients of ``logit_scale`` (and ``logit_bias``).

Peak extra memory is ``O(block^2 + B)`` instead of ``O(B^2)``. Two implementations: a
readable blockwise ``torch.autograd.Function`` in plain PyTorch (the reference; this is
the memory-lean path on the CPU), and Triton kernels
(:mod:`medvl.kernels._contrastive_kernels`) used where :func:`medvl.kernels.use_triton`
allows. Features may be fp32, bf16 or fp16; both paths upcast them and compute logits,
logsumexps and the loss in fp32, returning an fp32 scalar, as the full-matrix losses do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medvl.kernels._switch import use_triton

__all__ = ["blockwise_clip_loss", "blockwise_siglip_loss", "DEFAULT_BLOCK_SIZE"]

DEFAULT_BLOCK_SIZE = 256  # reference path tile side; the Triton path clamps to 16..64
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- helpers
def _check(image_features: torch.Tensor, text_features: torch.Tensor, block_size: int) -> None:
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            "blockwise contrastive loss: expected paired (B, D) image and text features, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if image_features.shape[0] == 0:
        raise ValueError("blockwise contrastive loss: empty batch")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(
            f"blockwise contrastive loss: block_size must be a positive int, got {block_size!r}"
        )


def _scalar(value: torch.Tensor | float, like: torch.Tensor, name: str) -> torch.Tensor:
    """A scalar parameter as a tensor (kept in the graph when it is one)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"blockwise contrastive loss: {name} must hold one value, got shape {tuple(value.shape)}"
            )
        return value
    return torch.tensor(float(value), dtype=torch.float32, device=like.device)


def _fp32_scalar(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(1).float().contiguous()


def _scalar_grad(value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A 0-dim fp32 gradient reshaped and cast to its parameter."""
    return grad.reshape(value.shape).to(value.dtype)


def _blocks(n: int, block: int) -> list[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)``."""
    return [(i, min(i + block, n)) for i in range(0, n, block)]


def _on_diagonal(i0: int, i1: int, j0: int, j1: int, device: torch.device) -> torch.Tensor:
    """``(i1 - i0, j1 - j0)`` bool mask of the global diagonal inside a tile."""
    return torch.arange(i0, i1, device=device)[:, None] == torch.arange(j0, j1, device=device)[None, :]


def _clip_loss_from_lse(
    a: torch.Tensor,
    b: torch.Tensor,
    s: torch.Tensor,
    lse_r: torch.Tensor,
    lse_c: torch.Tensor,
    smoothing: float,
) -> torch.Tensor:
    """Symmetric label-smoothed InfoNCE from the row and column logsumexps (fp32).

    With ``logits = s * a @ b.T`` and smoothed targets ``(1 - e) * I + e / B``
    (``e = smoothing``), row ``i``'s cross-entropy is
    ``lse_r[i] - (1 - e) * logits_ii - e * mean_j logits_ij``,
    and ``mean_j logits_ij = s * a_i . mean(b)``: nothing here is ``O(B^2)``.
    """
    diag = s * (a * b).sum(1)  # (B,) positive-pair logits
    row_mean = s * (a @ b.mean(0))  # (B,) mean logit of each row
    col_mean = s * (b @ a.mean(0))  # (B,) mean logit of each column
    loss_i2t = (lse_r - (1 - smoothing) * diag - smoothing * row_mean).mean()
    loss_t2i = (lse_c - (1 - smoothing) * diag - smoothing * col_mean).mean()
    return (loss_i2t + loss_t2i) / 2


# --------------------------------------------------------------- reference: PyTorch
class _ClipTorch(torch.autograd.Function):
    """Blockwise CLIP loss in plain PyTorch; backward recomputes each block."""

    @staticmethod
    def forward(ctx, img, txt, scale, smoothing, block):
        with torch.autocast(device_type=img.device.type, enabled=False):
            # fp32 island: logits, online logsumexp and the loss all in fp32.
            a, b = img.float(), txt.float()  # (B, D)
            s = scale.detach().float().reshape(())
            n = a.shape[0]
            row_max = a.new_full((n,), float("-inf"))
            row_sum = a.new_zeros(n)
            col_max = a.new_full((n,), float("-inf"))
            col_sum = a.new_zeros(n)
            for i0, i1 in _blocks(n, block):
                for j0, j1 in _blocks(n, block):
                    logits = s * (a[i0:i1] @ b[j0:j1].T)  # (bi, bj): the only logits alive
                    # online logsumexp over columns, for rows i0:i1 ...
                    m = torch.maximum(row_max[i0:i1], logits.amax(1))
                    rescale = torch.exp(row_max[i0:i1] - m)
                    row_sum[i0:i1] = row_sum[i0:i1] * rescale + torch.exp(logits - m[:, None]).sum(1)
                    row_max[i0:i1] = m
                    # ... and over rows, for columns j0:j1
                    m = torch.maximum(col_max[j0:j1], logits.amax(0))
                    rescale = torch.exp(col_max[j0:j1] - m)
                    col_sum[j0:j1] = col_sum[j0:j1] * rescale + torch.exp(logits - m[None, :]).sum(0)
                    col_max[j0:j1] = m
            lse_r = row_max + torch.log(row_sum)  # (B,) image -> text normalisers
            lse_c = col_max + torch.log(col_sum)  # (B,) text -> image normalisers
            loss = _clip_loss_from_lse(a, b, s, lse_r, lse_c, smoothing)
        ctx.save_for_backward(img, txt, scale, lse_r, lse_c)
        ctx.smoothing, ctx.block = smoothing, block
        return loss

    @staticmethod
    def backward(ctx, grad):
        img, txt, scale, lse_r, lse_c = ctx.saved_tensors
        smoothing, block = ctx.smoothing, ctx.block
        with torch.autocast(device_type=img.device.type, enabled=False):
            a, b = img.float(), txt.float()
            s = scale.detach().float().reshape(())
            g = grad.float()
            n = a.shape[0]
            da, db = torch.zeros_like(a), torch.zeros_like(b)
            ds = a.new_zeros(())
            for i0, i1 in _blocks(n, block):
                for j0, j1 in _blocks(n, block):
                    dot = a[i0:i1] @ b[j0:j1].T  # (bi, bj)
                    logits = s * dot
                    p = torch.exp(logits - lse_r[i0:i1, None]) + torch.exp(logits - lse_c[None, j0:j1])
                    # d loss / d logits = (softmax_rows + softmax_cols) / 2B - targets / B
                    G = p / (2 * n) - smoothing / n**2
                    G = (G - _on_diagonal(i0, i1, j0, j1, a.device) * ((1 - smoothing) / n)) * g
                    da[i0:i1] += s * (G @ b[j0:j1])
                    db[j0:j1] += s * (G.T @ a[i0:i1])
                    ds += (G * dot).sum()
        return (
            da.to(img.dtype) if ctx.needs_input_grad[0] else None,
            db.to(txt.dtype) if ctx.needs_input_grad[1] else None,
            _scalar_grad(scale, ds) if ctx.needs_input_grad[2] else None,
            None,
            None,
        )


class _SigLipTorch(torch.autograd.Function):
    """Blockwise SigLIP loss in plain PyTorch; backward recomputes each block."""

    @staticmethod
    def forward(ctx, img, txt, scale, bias, block):
        with torch.autocast(device_type=img.device.type, enabled=False):
            # fp32 island: B^2 small logsigmoid terms would round away in bf16.
            a, b = img.float(), txt.float()
            s = scale.detach().float().reshape(())
            t = bias.detach().float().reshape(())
            n = a.shape[0]
            total = a.new_zeros(())
            for i0, i1 in _blocks(n, block):
                for j0, j1 in _blocks(n, block):
                    logits = s * (a[i0:i1] @ b[j0:j1].T) + t  # (bi, bj)
                    labels = _on_diagonal(i0, i1, j0, j1, a.device).float() * 2 - 1  # +1 pair, -1 else
                    total = total - F.logsigmoid(labels * logits).sum()
            loss = total / n
        ctx.save_for_backward(img, txt, scale, bias)
        ctx.block = block
        return loss

    @staticmethod
    def backward(ctx, grad):
        img, txt, scale, bias = ctx.saved_tensors
        block = ctx.block
        with torch.autocast(device_type=img.device.type, enabled=False):
            a, b = img.float(), txt.float()
            s = scale.detach().float().reshape(())
            t = bias.detach().float().reshape(())
            g = grad.float()
            n = a.shape[0]
            da, db = torch.zeros_like(a), torch.zeros_like(b)
            ds, dt = a.new_zeros(()), a.new_zeros(())
            for i0, i1 in _blocks(n, block):
                for j0, j1 in _blocks(n, block):
                    dot = a[i0:i1] @ b[j0:j1].T
                    logits = s * dot + t
                    labels = _on_diagonal(i0, i1, j0, j1, a.device).float() * 2 - 1
                    # d/dz -logsigmoid(z) = -sigmoid(-z), z = labels * logits
                    G = (-labels * torch.sigmoid(-labels * logits) / n) * g
                    da[i0:i1] += s * (G @ b[j0:j1])
                    db[j0:j1] += s * (G.T @ a[i0:i1])
                    ds += (G * dot).sum()
                    dt += G.sum()
        return (
            da.to(img.dtype) if ctx.needs_input_grad[0] else None,
            db.to(txt.dtype) if ctx.needs_input_grad[1] else None,
            _scalar_grad(scale, ds) if ctx.needs_input_grad[2] else None,
            _scalar_grad(bias, dt) if ctx.needs_input_grad[3] else None,
            None,
        )


# ------------------------------------------------------------------- fused: Triton
def _triton_grads(a, b, lse_r, lse_c, s, t, g, smoothing: float, block: int,
                  need_a: bool, need_b: bool, need_scalars: bool):
    """``(dA, dB, d logit_scale, d logit_bias)`` from the backward kernel (None where not needed).

    ``dB`` is the same kernel on swapped arguments (and swapped CLIP normalisers), because
    the logit gradient of ``(B, A)`` is the transpose of that of ``(A, B)`` for both losses;
    the scalar sums come with ``dA``.
    """
    from medvl.kernels import _contrastive_kernels as K

    da = db = ds = dt = None
    if need_a or need_scalars:
        da, ds, dt = K.contrastive_grad(a, b, lse_r, lse_c, s, t, g, smoothing, block, need_scalars)
    if need_b:
        db, _, _ = K.contrastive_grad(b, a, lse_c, lse_r, s, t, g, smoothing, block, False)
    return da, db, ds, dt


class _ClipTriton(torch.autograd.Function):
    """Blockwise CLIP loss with Triton kernels for the tiles."""

    @staticmethod
    def forward(ctx, img, txt, scale, smoothing, block):
        from medvl.kernels import _contrastive_kernels as K

        with torch.autocast(device_type=img.device.type, enabled=False):
            a, b = img.float().contiguous(), txt.float().contiguous()  # fp32 island
            s = _fp32_scalar(scale)
            lse_r = K.clip_lse(a, b, s, block)  # (B,) rows: image -> text
            lse_c = K.clip_lse(b, a, s, block)  # (B,) columns: text -> image
            loss = _clip_loss_from_lse(a, b, s.reshape(()), lse_r, lse_c, smoothing)
        ctx.save_for_backward(a, b, scale, lse_r, lse_c)
        ctx.smoothing, ctx.block = smoothing, block
        ctx.dtypes = (img.dtype, txt.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad):
        a, b, scale, lse_r, lse_c = ctx.saved_tensors
        s, g = _fp32_scalar(scale), _fp32_scalar(grad)
        need_a, need_b, need_s = ctx.needs_input_grad[:3]
        da, db, ds, _ = _triton_grads(a, b, lse_r, lse_c, s, None, g, ctx.smoothing, ctx.block, need_a, need_b, need_s)
        return (
            da.to(ctx.dtypes[0]) if need_a else None,
            db.to(ctx.dtypes[1]) if need_b else None,
            _scalar_grad(scale, ds) if need_s else None,
            None,
            None,
        )


class _SigLipTriton(torch.autograd.Function):
    """Blockwise SigLIP loss with Triton kernels for the tiles."""

    @staticmethod
    def forward(ctx, img, txt, scale, bias, block):
        from medvl.kernels import _contrastive_kernels as K

        with torch.autocast(device_type=img.device.type, enabled=False):
            a, b = img.float().contiguous(), txt.float().contiguous()  # fp32 island
            s, t = _fp32_scalar(scale), _fp32_scalar(bias)
            loss = K.siglip_loss_sum(a, b, s, t, block) / a.shape[0]
        ctx.save_for_backward(a, b, scale, bias)
        ctx.block = block
        ctx.dtypes = (img.dtype, txt.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad):
        a, b, scale, bias = ctx.saved_tensors
        s, t, g = _fp32_scalar(scale), _fp32_scalar(bias), _fp32_scalar(grad)
        need_a, need_b, need_s, need_t = ctx.needs_input_grad[:4]
        da, db, ds, dt = _triton_grads(a, b, None, None, s, t, g, 0.0, ctx.block, need_a, need_b, need_s or need_t)
        return (
            da.to(ctx.dtypes[0]) if need_a else None,
            db.to(ctx.dtypes[1]) if need_b else None,
            _scalar_grad(scale, ds) if need_s else None,
            _scalar_grad(bias, dt) if need_t else None,
            None,
        )


# ------------------------------------------------------------------------ public API
def _triton_ok(*ts: torch.Tensor) -> bool:
    return use_triton(*ts) and all(t.dtype in _FLOATS for t in ts) and len({t.device for t in ts}) == 1


def blockwise_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    label_smoothing: float = 0.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss, equal to :class:`medvl.losses.ClipLoss`, blockwise.

    Args:
        image_features: L2-normalised image embeddings, ``(B, D)``.
        text_features: L2-normalised text embeddings, ``(B, D)``; row ``i`` pairs with
            image ``i``.
        logit_scale: Inverse temperature, already exponentiated (tensor of one element
            or float); a tensor receives its gradient.
        label_smoothing: Cross-entropy label smoothing in ``[0, 1)``.
        block_size: Side of the logit tiles on the reference path (``O(block_size^2)``
            memory); the Triton path uses tiles of ``clamp(block_size, 16, 64)``.

    Returns:
        Scalar fp32 loss.
    """
    _check(image_features, text_features, block_size)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"blockwise_clip_loss: label_smoothing must be in [0, 1), got {label_smoothing}")
    scale = _scalar(logit_scale, image_features, "logit_scale")
    fn = _ClipTriton if _triton_ok(image_features, text_features, scale) else _ClipTorch
    return fn.apply(image_features, text_features, scale, float(label_smoothing), block_size)


def blockwise_siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> torch.Tensor:
    """Pairwise sigmoid (SigLIP) loss, equal to :class:`medvl.losses.SigLipLoss`, blockwise.

    Args:
        image_features: L2-normalised image embeddings, ``(B, D)``.
        text_features: L2-normalised text embeddings, ``(B, D)``.
        logit_scale: Inverse temperature, already exponentiated; a tensor receives its
            gradient.
        logit_bias: Additive logit bias; a tensor receives its gradient.
        block_size: Side of the logit tiles on the reference path; the Triton path uses
            ``clamp(block_size, 16, 64)``.

    Returns:
        Scalar fp32 loss, ``-sum_ij logsigmoid(label_ij * logit_ij) / B``.
    """
    _check(image_features, text_features, block_size)
    scale = _scalar(logit_scale, image_features, "logit_scale")
    bias = _scalar(logit_bias, image_features, "logit_bias")
    fn = _SigLipTriton if _triton_ok(image_features, text_features, scale, bias) else _SigLipTorch
    return fn.apply(image_features, text_features, scale, bias, block_size)
