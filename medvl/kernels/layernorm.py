"""Residual-add + LayerNorm, fused: ``s = x + y`` and ``LayerNorm(s)`` in one pass.

LayerNorm is Ba et al., "Layer Normalization" (arXiv:1607.06450). In a pre-norm ViT
block (Dosovitskiy et al., arXiv:2010.11929, Eq. 2-3) every residual add is followed by
the next sub-layer's norm, ``x = x + attn(norm1(x)); h = norm2(x)``; fusing the two
reads the residual stream once instead of three times, the fusion of apex's and
flash-attn's ``layer_norm`` with ``residual``. The Triton kernels
(:mod:`medvl.kernels._layernorm_kernels`) compute the forward and the backward
(``dx``, ``dy``, ``dweight``, ``dbias``); :func:`add_layernorm_reference` is the readable
slow twin in plain PyTorch, used when fused paths are off or Triton cannot run (see
:mod:`medvl.kernels._switch`).

Dtypes: the residual sum takes ``torch.result_type(x, y)`` (fp32 when an fp32 stream
meets a bf16 branch under autocast); the normalised output takes the same dtype.
Statistics are always fp32. This differs from ``nn.LayerNorm`` under CUDA autocast,
which returns fp32 outputs; cast the result if fp32 is required.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medvl.kernels._switch import use_triton

__all__ = ["add_layernorm_reference", "fused_add_layernorm", "fused_layernorm"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _check(x: torch.Tensor, y: torch.Tensor | None, weight, bias) -> None:
    if y is not None and y.shape != x.shape:
        raise ValueError(
            f"fused_add_layernorm: x and y must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.ndim < 1:
        raise ValueError("fused_add_layernorm: x must have at least one dimension")
    D = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (D,):
            raise ValueError(
                f"fused_add_layernorm: {name} must have shape ({D},), got {tuple(p.shape)}"
            )


def add_layernorm_reference(
    x: torch.Tensor,
    y: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference path: ``s = x + y`` then LayerNorm over the last dimension.

    Args:
        x: Residual stream, ``(..., D)``.
        y: Branch output to add, same shape as ``x``; None for a plain LayerNorm.
        weight: LayerNorm scale ``(D,)`` or None.
        bias: LayerNorm shift ``(D,)`` or None.
        eps: Added to the variance.

    Returns:
        ``(s, LayerNorm(s))``, both ``(..., D)`` in ``s``'s dtype.
    """
    _check(x, y, weight, bias)
    s = x if y is None else x + y
    # fp32 island: mean and variance in fp32 whatever the storage dtype.
    out = F.layer_norm(
        s.float(), (s.shape[-1],),
        weight.float() if weight is not None else None,
        bias.float() if bias is not None else None,
        eps,
    )
    return s, out.to(s.dtype)


class _FusedAddLayerNorm(torch.autograd.Function):
    """Triton forward and backward; inputs already flattened to contiguous ``(M, D)``."""

    @staticmethod
    def forward(ctx, x, y, weight, bias, eps):
        from medvl.kernels._layernorm_kernels import add_layernorm_fwd

        s_dtype = x.dtype if y is None else torch.result_type(x, y)
        s, out, mean, rstd = add_layernorm_fwd(x, y, weight, bias, eps, s_dtype)
        ctx.save_for_backward(s, weight, bias, mean, rstd)
        ctx.has_y = y is not None
        ctx.x_dtype = x.dtype
        ctx.y_dtype = None if y is None else y.dtype
        ctx.set_materialize_grads(False)
        if y is None:
            return out
        return s, out

    @staticmethod
    def backward(ctx, *grads):
        from medvl.kernels._layernorm_kernels import add_layernorm_bwd

        s, weight, bias, mean, rstd = ctx.saved_tensors
        if ctx.has_y:
            ds_in, dout = grads
        else:
            ds_in, (dout,) = None, grads
        if dout is None:
            dout = torch.zeros_like(s)
        ds, dw, db = add_layernorm_bwd(
            s, dout.contiguous(), None if ds_in is None else ds_in.contiguous(), weight, mean, rstd
        )
        dx = ds.to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        dy = ds.to(ctx.y_dtype) if ctx.has_y and ctx.needs_input_grad[1] else None
        dweight = dw.to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        dbias = db.to(bias.dtype) if bias is not None and ctx.needs_input_grad[3] else None
        return dx, dy, dweight, dbias, None


def _triton_ok(x: torch.Tensor, y, weight, bias) -> bool:
    from medvl.kernels._layernorm_kernels import MAX_D  # only reached when Triton imports

    ts = [t for t in (x, y, weight, bias) if t is not None]
    return (
        all(t.dtype in _FLOATS for t in ts)
        and len({t.device for t in ts}) == 1
        and 0 < x.shape[-1] <= MAX_D
        and x.numel() > 0
    )


def fused_add_layernorm(
    x: torch.Tensor,
    y: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual add and LayerNorm in one kernel where Triton can run, else the reference.

    Args:
        x: Residual stream, ``(..., D)``.
        y: Branch output to add, same shape as ``x``; None for a plain LayerNorm (then
            the returned residual is ``x`` itself).
        weight: LayerNorm scale ``(D,)`` or None.
        bias: LayerNorm shift ``(D,)`` or None.
        eps: Added to the variance (1e-6 as timm's ViT norms).

    Returns:
        ``(s, normed)``: the new residual stream ``x + y`` and ``LayerNorm(x + y)``, both
        ``(..., D)`` in ``torch.result_type(x, y)``. Gradients flow to ``x``, ``y``,
        ``weight`` and ``bias`` on either path.
    """
    _check(x, y, weight, bias)
    if not (use_triton(x, y, weight, bias) and _triton_ok(x, y, weight, bias)):
        return add_layernorm_reference(x, y, weight, bias, eps)
    shape = x.shape
    D = shape[-1]
    x2 = x.reshape(-1, D).contiguous()  # (M, D)
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None
    if y is None:
        out = _FusedAddLayerNorm.apply(x2, None, weight, bias, float(eps))
        return x, out.reshape(shape)
    s, out = _FusedAddLayerNorm.apply(x2, y.reshape(-1, D).contiguous(), weight, bias, float(eps))
    return s.reshape(shape), out.reshape(shape)


def fused_layernorm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """LayerNorm over the last dimension with fp32 statistics (no residual add).

    Same dispatch as :func:`fused_add_layernorm` with ``y=None``; returns ``(..., D)``
    in ``x``'s dtype.
    """
    return fused_add_layernorm(x, None, weight, bias, eps)[1]
