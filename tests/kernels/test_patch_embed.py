"""Patch embedding + position add: Triton (interpreted on the CPU) against the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvl.kernels import patch_embed_pos, patch_embed_pos_reference, patchify
from medvl.layers import PatchEmbed

from ._tolerances import assert_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# 2 images of 28x28 in 4x4 patches: M = 98 rows (2 row tiles of 64, one partial),
# K = 3*4*4 = 48 (2 K-chunks of 32, one partial), D = 80 (2 column tiles, one partial).
IMG, PATCH, CHANS, DIM = 28, 4, 3, 80
N = (IMG // PATCH) ** 2


def _inputs(seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, CHANS, IMG, IMG, generator=g)
    weight = torch.randn(DIM, CHANS, PATCH, PATCH, generator=g) * 0.1
    bias = torch.randn(DIM, generator=g) * 0.1
    pos = torch.randn(1, N, DIM, generator=g) * 0.02
    return [t.to(device) for t in (images, weight, bias, pos)]


def _run(fn, patches, weight, bias, pos, grad):
    """Forward and the gradients wrt all inputs that require them."""
    out = fn(patches, weight, bias, pos)
    inputs = [t for t in (patches, weight, bias, pos) if t is not None and t.requires_grad]
    return (out, *torch.autograd.grad(out, inputs, grad))


def test_reference_equals_patch_embed_module_plus_pos():
    images, weight, bias, pos = _inputs()
    module = PatchEmbed(IMG, PATCH, CHANS, DIM)
    with torch.no_grad():
        module.proj.weight.copy_(weight)
        module.proj.bias.copy_(bias)
    want = module(images) + pos  # the unfused encoder: conv, flatten, then add
    got = patch_embed_pos_reference(patchify(images, PATCH), weight, bias, pos)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_patch_embed_pos_matches_reference(interpret, dtype):
    images, weight, bias, pos = _inputs()
    patches = patchify(images, PATCH).to(dtype).requires_grad_()
    weight = weight.to(dtype).requires_grad_()
    bias = bias.to(dtype).requires_grad_()
    pos = pos.to(dtype).requires_grad_()
    grad = torch.randn(2, N, DIM, generator=torch.Generator().manual_seed(3)).to(dtype)
    got = _run(patch_embed_pos, patches, weight, bias, pos, grad)
    want = _run(patch_embed_pos_reference, patches, weight, bias, pos, grad)
    assert got[0].shape == (2, N, DIM)
    for name, a, e in zip(["out", "dpatches", "dweight", "dbias", "dpos"], got, want):
        assert_close(a, e, dtype, f"{dtype} {name}")


def test_half_gemm_with_fp32_pos_gives_fp32(interpret):
    # A bf16 GEMM meeting fp32 parameters promotes as `linear_out + pos_embed` does.
    images, weight, bias, pos = _inputs()
    patches = patchify(images, PATCH).bfloat16().requires_grad_()
    weight, bias, pos = (t.requires_grad_() for t in (weight, bias, pos))
    grad = torch.randn(2, N, DIM)
    got = _run(patch_embed_pos, patches, weight, bias, pos, grad)
    want = _run(patch_embed_pos_reference, patches, weight, bias, pos, grad)
    assert got[0].dtype == torch.float32
    for name, a, e in zip(["out", "dpatches", "dweight", "dbias", "dpos"], got, want):
        assert a.dtype == e.dtype, name
        assert_close(a, e, torch.bfloat16, name)


def test_autocast_runs_the_gemm_in_the_autocast_dtype(interpret):
    images, weight, bias, pos = _inputs()
    patches = patchify(images, PATCH)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = patch_embed_pos(patches, weight, bias, pos)
        want = patch_embed_pos_reference(patches, weight, bias, pos)
    assert got.dtype == want.dtype == torch.float32  # bf16 GEMM + fp32 pos_embed
    assert_close(got, want, torch.bfloat16, "out")
    # The GEMM really ran in bf16: the fp32 result differs by more than fp32 noise.
    fp32 = patch_embed_pos_reference(patches, weight, bias, pos)
    assert (got - fp32).abs().max() > 1e-4


def test_no_bias_and_2d_pos(interpret):
    images, weight, _, pos = _inputs()
    patches = patchify(images, PATCH)
    w2 = weight.reshape(DIM, -1)
    got = patch_embed_pos(patches, w2, None, pos[0])
    want = F.linear(patches, w2) + pos
    assert_close(got, want, torch.float32, "out")


def test_errors_name_the_reason():
    images, weight, bias, pos = _inputs()
    patches = patchify(images, PATCH)
    with pytest.raises(ValueError, match="weight must be"):
        patch_embed_pos(patches, weight[:, :2], bias, pos)
    with pytest.raises(ValueError, match="pos_embed must be"):
        patch_embed_pos(patches, weight, bias, pos[:, :-1])
    with pytest.raises(ValueError, match="not divisible"):
        patchify(images[..., :-1], PATCH)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_patch_embed_pos_matches_reference_cuda(cuda, dtype):
    g = torch.Generator(device=cuda).manual_seed(0)
    images = torch.randn(8, 1, 224, 224, device=cuda, generator=g)
    weight = (torch.randn(384, 1, 16, 16, device=cuda, generator=g) * 0.05).to(dtype).requires_grad_()
    bias = torch.zeros(384, device=cuda, dtype=dtype, requires_grad=True)
    pos = (torch.randn(1, 196, 384, device=cuda, generator=g) * 0.02).to(dtype).requires_grad_()
    patches = patchify(images, 16).to(dtype).requires_grad_()
    grad = torch.randn(8, 196, 384, device=cuda, dtype=dtype)
    got = _run(patch_embed_pos, patches, weight, bias, pos, grad)
    want = _run(patch_embed_pos_reference, patches, weight, bias, pos, grad)
    for name, a, e in zip(["out", "dpatches", "dweight", "dbias", "dpos"], got, want):
        assert_close(a, e, dtype if dtype != torch.float32 else torch.float16, f"{dtype} {name}")
