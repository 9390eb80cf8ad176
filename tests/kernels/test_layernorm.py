"""Residual-add + LayerNorm: Triton (interpreted on the CPU) against the PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medvl.kernels import add_layernorm_reference, fused_add_layernorm, fused_layernorm

from ._tolerances import assert_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPE = (3, 37, 200)  # 111 rows: 7 row tiles of 16, the last one partial; D=200 pads to 256


def _inputs(dtype, y_dtype=None, affine=True, shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = shape[-1]
    x = torch.randn(shape, generator=g) * 2 + 0.5
    y = torch.randn(shape, generator=g)
    if dtype == torch.bfloat16 and y_dtype is None:
        # Multiples of 1/16 below 8 in magnitude: x + y is exact in bf16. Triton's
        # interpreter truncates fp32 -> bf16 where torch rounds to nearest, and an
        # ulp of difference in the saved residual would spread into dweight's column
        # sums; exact sums keep the comparison about the kernel's maths.
        x, y = ((t * 16).round().clamp(-127, 127) / 16 for t in (x, y))
    x = x.to(dtype).requires_grad_()
    y = y.to(y_dtype or dtype).requires_grad_()
    w = (1 + 0.3 * torch.randn(D, generator=g)).requires_grad_() if affine else None
    b = (0.2 * torch.randn(D, generator=g)).requires_grad_() if affine else None
    return x, y, w, b


def _run(fn, x, y, w, b, grad_s, grad_out):
    """Forward and backward of ``fn``; returns outputs then input gradients."""
    s, out = fn(x, y, w, b, 1e-6)
    inputs = [t for t in (x, y, w, b) if t is not None and t.requires_grad]
    outputs, grads = ([s, out], [grad_s, grad_out]) if grad_s is not None else ([out], [grad_out])
    return (s, out, *torch.autograd.grad(outputs, inputs, grads))


def test_reference_is_layernorm_of_the_sum():
    x, y, w, b = _inputs(torch.float32)
    ln = nn.LayerNorm(SHAPE[-1], eps=1e-6)
    with torch.no_grad():
        ln.weight.copy_(w)
        ln.bias.copy_(b)
    s, out = add_layernorm_reference(x, y, w, b, 1e-6)
    torch.testing.assert_close(s, x + y)
    torch.testing.assert_close(out, ln(x + y))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_add_layernorm_matches_reference(interpret, dtype, affine):
    x, y, w, b = _inputs(dtype, affine=affine)
    g = torch.Generator().manual_seed(1)
    grad_s = torch.randn(SHAPE, generator=g).to(dtype)
    grad_out = torch.randn(SHAPE, generator=g).to(dtype)
    got = _run(fused_add_layernorm, x, y, w, b, grad_s, grad_out)
    want = _run(add_layernorm_reference, x, y, w, b, grad_s, grad_out)
    names = ["s", "normed", "dx", "dy", "dweight", "dbias"]
    for name, a, e in zip(names, got, want):
        assert_close(a, e, dtype, f"{dtype} {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_plain_layernorm_matches_reference(interpret, dtype):
    x, _, w, b = _inputs(dtype)
    grad_out = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2)).to(dtype)
    got = fused_layernorm(x, w, b)
    want = add_layernorm_reference(x, None, w, b)[1]
    assert_close(got, want, dtype, "normed")
    g_got = torch.autograd.grad(got, (x, w, b), grad_out)
    g_want = torch.autograd.grad(want, (x, w, b), grad_out)
    for name, a, e in zip(["dx", "dweight", "dbias"], g_got, g_want):
        assert_close(a, e, dtype, name)


def test_mixed_precision_stream(interpret):
    # An fp32 residual stream meeting a bf16 branch (autocast) stays fp32.
    x, y, w, b = _inputs(torch.float32, y_dtype=torch.bfloat16)
    grad_s = torch.randn(SHAPE)
    grad_out = torch.randn(SHAPE)
    got = _run(fused_add_layernorm, x, y, w, b, grad_s, grad_out)
    want = _run(add_layernorm_reference, x, y, w, b, grad_s, grad_out)
    assert got[0].dtype == got[1].dtype == torch.float32
    assert got[3].dtype == torch.bfloat16  # dy comes back in the branch's dtype
    for name, a, e in zip(["s", "normed", "dx", "dy", "dweight", "dbias"], got, want):
        assert_close(a, e, torch.float32 if a.dtype == torch.float32 else torch.bfloat16, name)


def test_gradient_through_normed_output_only(interpret):
    # The residual output unused downstream: its gradient is None inside the Function.
    x, y, w, b = _inputs(torch.float32)
    grad_out = torch.randn(SHAPE)
    got = _run(fused_add_layernorm, x, y, w, b, None, grad_out)
    want = _run(add_layernorm_reference, x, y, w, b, None, grad_out)
    for name, a, e in zip(["s", "normed", "dx", "dy", "dweight", "dbias"], got, want):
        assert_close(a, e, torch.float32, name)


def test_statistics_are_fp32(interpret):
    # Large offset, small spread: fp16 statistics would cancel catastrophically.
    x = (torch.randn(4, 64) * 0.05 + 300.0).half()
    out = fused_layernorm(x, None, None)
    want = nn.functional.layer_norm(x.float(), (64,), eps=1e-6).half()
    assert_close(out, want, torch.float16, "normed")
    assert torch.isfinite(out).all()


def test_shape_errors_name_the_reason():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="equal shapes"):
        fused_add_layernorm(x, torch.randn(2, 9), None, None)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        fused_add_layernorm(x, x, torch.ones(9), None)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_add_layernorm_matches_reference_cuda(cuda, dtype):
    x, y, w, b = (t.detach().to(cuda).requires_grad_() for t in _inputs(dtype, shape=(8, 197, 384)))
    grad_s = torch.randn(x.shape, device=cuda, dtype=dtype)
    grad_out = torch.randn(x.shape, device=cuda, dtype=dtype)
    got = _run(fused_add_layernorm, x, y, w, b, grad_s, grad_out)
    want = _run(add_layernorm_reference, x, y, w, b, grad_s, grad_out)
    for name, a, e in zip(["s", "normed", "dx", "dy", "dweight", "dbias"], got, want):
        # dweight / dbias sum 1576 rows: allow for fp32 summation order.
        tol_dtype = torch.bfloat16 if name in ("dweight", "dbias") and dtype != torch.float32 else dtype
        assert_close(a, e, tol_dtype, f"{dtype} {name}")
