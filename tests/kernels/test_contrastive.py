"""Blockwise CLIP / SigLIP losses against medvl.losses.ClipLoss / SigLipLoss.

Both the PyTorch blockwise reference and the Triton kernels (interpreted on the CPU)
must give the full-matrix losses' values and gradients wrt the features, logit_scale
and logit_bias; the reference must never allocate a B x B tensor.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from medvl.kernels import blockwise_clip_loss, blockwise_siglip_loss, use_fused
from medvl.losses import ClipLoss, SigLipLoss

from ._tolerances import assert_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
B, D, BLOCK = 37, 24, 16  # 3 blocks per side, the last partial; D: 2 feature slices


def _features(dtype, n=B, d=D, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = F.normalize(img + 0.8 * torch.randn(n, d, generator=g), dim=-1)  # paired, noisy
    return img.to(device, dtype), txt.to(device, dtype)


def _clip(fn, img, txt, scale, smoothing):
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    scale = torch.tensor(scale, requires_grad=True, device=img.device)
    loss = fn(img, txt, scale, smoothing)
    return (loss, *torch.autograd.grad(loss, (img, txt, scale)))


def _siglip(fn, img, txt, scale, bias):
    img, txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
    scale = torch.tensor(scale, requires_grad=True, device=img.device)
    bias = torch.tensor(bias, requires_grad=True, device=img.device)
    loss = fn(img, txt, scale, bias)
    return (loss, *torch.autograd.grad(loss, (img, txt, scale, bias)))


def _full_clip(img, txt, scale, smoothing):
    return ClipLoss(label_smoothing=smoothing)(image_features=img, text_features=txt, logit_scale=scale)


def _full_siglip(img, txt, scale, bias):
    return SigLipLoss()(image_features=img, text_features=txt, logit_scale=scale, logit_bias=bias)


def _block_clip(img, txt, scale, smoothing):
    return blockwise_clip_loss(img, txt, scale, label_smoothing=smoothing, block_size=BLOCK)


def _block_siglip(img, txt, scale, bias):
    return blockwise_siglip_loss(img, txt, scale, bias, block_size=BLOCK)


def _compare(got, want, dtype, names, scalar_dtype=torch.float32):
    for name, a, e in zip(names, got, want):
        # Features' gradients come back in the features' dtype (their tolerance); the
        # loss and the scalar gradients are fp32 on both sides.
        assert_close(a, e, a.dtype if a.ndim else scalar_dtype, f"{dtype} {name}")


# ----------------------------------------------------------------- reference path
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_torch_blockwise_clip_matches_clip_loss(dtype, smoothing):
    img, txt = _features(dtype)
    with use_fused(False):
        got = _clip(_block_clip, img, txt, 14.3, smoothing)
    want = _clip(_full_clip, img, txt, 14.3, smoothing)
    _compare(got, want, dtype, ["loss", "dimg", "dtxt", "dscale"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_blockwise_siglip_matches_siglip_loss(dtype):
    img, txt = _features(dtype)
    with use_fused(False):
        got = _siglip(_block_siglip, img, txt, 10.0, -10.0)
    want = _siglip(_full_siglip, img, txt, 10.0, -10.0)
    _compare(got, want, dtype, ["loss", "dimg", "dtxt", "dscale", "dbias"])


class _LargestAllocation(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_reference_never_holds_the_full_logit_matrix(loss):
    n, d, block = 256, 8, 32  # B^2 = 65536; a block is 1024; features are 2048
    img, txt = (t.requires_grad_() for t in _features(torch.float32, n=n, d=d))
    scale = torch.tensor(10.0, requires_grad=True)

    def run(blockwise):
        with use_fused(False), _LargestAllocation() as probe:
            if loss == "clip":
                out = (blockwise_clip_loss(img, txt, scale, block_size=block) if blockwise
                       else ClipLoss()(img, txt, scale))
            else:
                out = (blockwise_siglip_loss(img, txt, scale, -10.0, block_size=block) if blockwise
                       else SigLipLoss()(img, txt, scale, -10.0))
            out.backward()
        return probe.largest

    assert run(blockwise=False) >= n * n  # the probe sees the full matrix when there is one
    assert run(blockwise=True) <= max(block * block, n * d)


# -------------------------------------------------------------------- Triton path
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_clip_matches_clip_loss(interpret, dtype):
    img, txt = _features(dtype)
    smoothing = 0.1 if dtype == torch.float32 else 0.0
    got = _clip(_block_clip, img, txt, 14.3, smoothing)
    want = _clip(_full_clip, img, txt, 14.3, smoothing)
    _compare(got, want, dtype, ["loss", "dimg", "dtxt", "dscale"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_siglip_matches_siglip_loss(interpret, dtype):
    img, txt = _features(dtype)
    got = _siglip(_block_siglip, img, txt, 10.0, -10.0)
    want = _siglip(_full_siglip, img, txt, 10.0, -10.0)
    _compare(got, want, dtype, ["loss", "dimg", "dtxt", "dscale", "dbias"])


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "triton"])
def test_partial_gradients_and_float_scalars(monkeypatch, fused):
    # A frozen text tower and fixed (float) scale / bias: only d img is asked for.
    if fused:
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    img, txt = _features(torch.float32)
    img_a, img_b = img.clone().requires_grad_(), img.clone().requires_grad_()
    with use_fused(fused):
        got = torch.autograd.grad(blockwise_clip_loss(img_a, txt, 5.0, block_size=BLOCK), img_a)[0]
        got_s = torch.autograd.grad(blockwise_siglip_loss(img_b, txt, 5.0, -2.0, block_size=BLOCK), img_b)[0]
    ref_a, ref_b = img.clone().requires_grad_(), img.clone().requires_grad_()
    want = torch.autograd.grad(ClipLoss()(ref_a, txt, 5.0), ref_a)[0]
    want_s = torch.autograd.grad(SigLipLoss()(ref_b, txt, 5.0, -2.0), ref_b)[0]
    assert_close(got, want, torch.float32, "dimg clip")
    assert_close(got_s, want_s, torch.float32, "dimg siglip")


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "triton"])
def test_one_element_parameter_keeps_its_shape(monkeypatch, fused):
    if fused:
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    img, txt = _features(torch.float32, n=5)
    log_scale = torch.nn.Parameter(torch.full((1,), 2.0))
    with use_fused(fused):
        blockwise_clip_loss(img, txt, log_scale.exp(), block_size=BLOCK).backward()
    ref = torch.nn.Parameter(torch.full((1,), 2.0))
    ClipLoss()(img, txt, ref.exp().squeeze()).backward()
    assert log_scale.grad.shape == (1,)
    assert_close(log_scale.grad, ref.grad, torch.float32, "dlog_scale")


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "triton"])
def test_siglip_keeps_tiny_terms(monkeypatch, fused):
    # Orthonormal pairs, scale 20, bias -10: every term is log1p(e^-10) ~ 4.5e-5, where
    # a naive log(1 + u) in fp32 loses about three digits.
    if fused:
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    q = torch.linalg.qr(torch.randn(20, 20, generator=torch.Generator().manual_seed(4)))[0]
    img, txt = q[:18], q[:18].clone()
    with use_fused(fused):
        got = _siglip(_block_siglip, img, txt, 20.0, -10.0)
    want = _siglip(_full_siglip, img, txt, 20.0, -10.0)
    assert 1e-4 < got[0].item() < 1e-3
    # Relative checks only: an absolute tolerance would swallow the whole loss. Feature
    # gradients are compared as vectors (single entries cancel to ~1e-7).
    for name, a, e in zip(["loss", "dimg", "dtxt", "dscale", "dbias"], got, want):
        rel = ((a - e).norm() / e.norm()).item()
        assert rel < 1e-5, f"{name}: relative error {rel:.2e}"


@pytest.mark.parametrize("fused", [False, True], ids=["torch", "triton"])
def test_large_logit_scale_is_stable(monkeypatch, fused):
    # CLIP clamps logit_scale at 100: logits up to +-100 overflow a naive exp.
    if fused:
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    img, txt = _features(torch.float32)
    with use_fused(fused):
        got = _clip(_block_clip, img, txt, 100.0, 0.0)
    want = _clip(_full_clip, img, txt, 100.0, 0.0)
    assert all(torch.isfinite(t).all() for t in got)
    _compare(got, want, torch.float32, ["loss", "dimg", "dtxt", "dscale"])


def test_errors_name_the_reason():
    img, txt = _features(torch.float32)
    with pytest.raises(ValueError, match="paired"):
        blockwise_clip_loss(img, txt[:-1], 1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        blockwise_clip_loss(img, txt, 1.0, label_smoothing=1.0)
    with pytest.raises(ValueError, match="logit_bias must hold one value"):
        blockwise_siglip_loss(img, txt, 1.0, torch.zeros(2))


# ------------------------------------------------------------------------ GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_losses_match_cuda(cuda, dtype):
    img, txt = _features(dtype, n=1000, d=512, device=cuda)
    got = _clip(lambda *a: blockwise_clip_loss(*a[:3], label_smoothing=a[3]), img, txt, 30.0, 0.1)
    want = _clip(_full_clip, img, txt, 30.0, 0.1)
    # The scalar gradients sum 10^6 terms of both signs in a different order.
    _compare(got, want, dtype, ["loss", "dimg", "dtxt", "dscale"], scalar_dtype=torch.float16)
    got = _siglip(blockwise_siglip_loss, img, txt, 10.0, -10.0)
    want = _siglip(_full_siglip, img, txt, 10.0, -10.0)
    _compare(got, want, dtype, ["loss", "dimg", "dtxt", "dscale", "dbias"], scalar_dtype=torch.float16)
