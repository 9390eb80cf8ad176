"""Tests for medvl.losses.contrastive: hand-computed cases, properties, open_clip parity."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvl.losses import ClipLoss, SigLipLoss


def _np_logsumexp(v):
    m = max(v)
    return m + math.log(sum(math.exp(x - m) for x in v))


def _np_clip(img, txt, scale):
    """Reference InfoNCE in plain numpy/math, written out independently."""
    img, txt = np.asarray(img, float), np.asarray(txt, float)
    logits = scale * img @ txt.T
    n = len(img)
    row = sum(_np_logsumexp(logits[i]) - logits[i, i] for i in range(n)) / n
    col = sum(_np_logsumexp(logits[:, j]) - logits[j, j] for j in range(n)) / n
    return (row + col) / 2


def _np_siglip(img, txt, scale, bias):
    img, txt = np.asarray(img, float), np.asarray(txt, float)
    logits = scale * img @ txt.T + bias
    n = len(img)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-z * logits[i, j]))  # -logsigmoid(z * l)
    return total / n


def test_clip_2x2_by_hand():
    # Orthonormal pairs: logits = scale * I, so each row is CE([s, 0], 0) = log(1 + e^-s).
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = 2.0
    expected = math.log(1 + math.exp(-s))
    assert ClipLoss()(img, img.clone(), torch.tensor(s)).item() == pytest.approx(expected, rel=1e-6)


def test_clip_3x3_asymmetric_by_hand():
    r = 1 / math.sqrt(2)
    img = [[1, 0, 0], [0, 1, 0], [r, 0, r]]
    txt = [[r, r, 0], [0, 1, 0], [0, 0, 1]]
    out = ClipLoss()(torch.tensor(img), torch.tensor(txt), 3.0)
    assert out.item() == pytest.approx(_np_clip(img, txt, 3.0), rel=1e-5)


def test_clip_label_smoothing_by_hand():
    img = torch.eye(2)
    s, eps = 2.0, 0.1
    # row [s, 0], target 0: smoothed target (1 - eps/2, eps/2)
    lse = math.log(math.exp(s) + 1)
    expected = (1 - eps / 2) * (lse - s) + (eps / 2) * lse
    out = ClipLoss(label_smoothing=eps)(img, img, s)
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_siglip_2x2_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    s, b = 10.0, -5.0
    # logits: [[6-5, 8-5], [0-5, 10-5]] = [[1, 3], [-5, 5]]
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(3))
                + math.log1p(math.exp(-5)) + math.log1p(math.exp(-5))) / 2
    assert SigLipLoss()(img, txt, s, b).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(_np_siglip(img, txt, s, b))


def _rand_pair(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return img, txt


def test_symmetry_swapping_modalities():
    img, txt = _rand_pair()
    assert ClipLoss()(img, txt, 5.0).item() == pytest.approx(ClipLoss()(txt, img, 5.0).item(), rel=1e-6)
    assert SigLipLoss()(img, txt, 5.0, -2.0).item() == pytest.approx(
        SigLipLoss()(txt, img, 5.0, -2.0).item(), rel=1e-6)


def test_perfect_alignment_gives_low_loss():
    img, txt = _rand_pair(n=8, d=64)
    eye = torch.eye(8, 64)
    assert ClipLoss()(eye, eye, 100.0).item() < 1e-6
    assert ClipLoss()(eye, eye, 100.0) < ClipLoss()(img, txt, 100.0)
    assert SigLipLoss()(eye, eye, 100.0, -10.0).item() < 1e-3
    assert SigLipLoss()(eye, eye, 100.0, -10.0) < SigLipLoss()(img, txt, 100.0, -10.0)


def test_accepts_model_output_dict_and_ignores_extras():
    img, txt = _rand_pair()
    out = {
        "image_features": img, "text_features": txt,
        "logit_scale": torch.tensor(10.0), "logit_bias": torch.tensor(-3.0),
        "patch_tokens": torch.randn(8, 4, 16),
    }
    clip = ClipLoss()(**out)
    # A constant bias cannot change a softmax, so ClipLoss may ignore it.
    assert clip.item() == pytest.approx(_np_clip(img.numpy(), txt.numpy(), 10.0), rel=1e-5)
    sig = SigLipLoss()(**out)
    assert sig.item() == pytest.approx(_np_siglip(img.numpy(), txt.numpy(), 10.0, -3.0), rel=1e-5)


def test_gradients_reach_scale_bias_and_features():
    img, txt = _rand_pair()
    img.requires_grad_(True)
    log_scale = torch.tensor(math.log(10.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    ClipLoss()(img, txt, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad != 0 and img.grad.abs().sum() > 0
    log_scale.grad = None
    SigLipLoss()(img, txt, log_scale.exp(), bias).backward()
    assert log_scale.grad != 0 and bias.grad != 0


@pytest.mark.parametrize("loss_fn", [ClipLoss(), SigLipLoss()])
def test_bf16_inputs_and_autocast_compute_in_fp32(loss_fn):
    img, txt = _rand_pair(n=16, d=32)
    img16, txt16 = img.bfloat16(), txt.bfloat16()
    ref = loss_fn(img16.float(), txt16.float(), torch.tensor(20.0), logit_bias=torch.tensor(-5.0))
    out = loss_fn(img16, txt16, torch.tensor(20.0, dtype=torch.bfloat16),
                  logit_bias=torch.tensor(-5.0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-3)  # only the scale's bf16 rounding differs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss_fn(img16, txt16, torch.tensor(20.0), logit_bias=torch.tensor(-5.0))
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, ref, rtol=1e-6, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="paired"):
        ClipLoss()(torch.randn(4, 8), torch.randn(5, 8), 1.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        SigLipLoss()(torch.randn(4, 8, 2), torch.randn(4, 8, 2), 1.0, 0.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_with_open_clip(seed):
    oc_loss = pytest.importorskip("open_clip.loss")
    img, txt = _rand_pair(n=12, d=24, seed=seed)
    scale, bias = torch.tensor(14.3), torch.tensor(-7.0)
    torch.testing.assert_close(ClipLoss()(img, txt, scale), oc_loss.ClipLoss()(img, txt, scale))
    torch.testing.assert_close(
        SigLipLoss()(img, txt, scale, bias), oc_loss.SigLipLoss()(img, txt, scale, bias)
    )


@pytest.mark.parametrize("loss_cls", ["clip", "siglip"])
def test_blockwise_option_matches_dense_values_and_gradients(loss_cls):
    from medvl.losses import ClipLoss, SigLipLoss

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(37, 16), dim=-1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(37, 16), dim=-1).requires_grad_()
    scale = torch.tensor(12.0, requires_grad=True)
    bias = torch.tensor(-3.0, requires_grad=True)
    dense, block = ((ClipLoss(), ClipLoss(blockwise=True, block_size=8)) if loss_cls == "clip"
                    else (SigLipLoss(), SigLipLoss(blockwise=True, block_size=8)))
    grads = []
    for fn in (dense, block):
        loss = fn(image_features=img, text_features=txt, logit_scale=scale, logit_bias=bias)
        grads.append((loss.detach(), *torch.autograd.grad(loss, [img, txt, scale, bias], allow_unused=True)))
    for a, b in zip(*grads):
        if a is None:
            assert b is None or float(b.abs().max()) == 0.0
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("blockwise", [False, True], ids=["full", "blockwise"])
def test_scalars_of_shape_1_give_the_0d_loss_and_gradients(blockwise):
    # (1,) is the parameters' shape (FSDP refuses 0-d ones); the loss and its gradients are the same
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = F.normalize(img + 0.3 * torch.randn(6, 8, generator=g), dim=-1)
    for fn in (ClipLoss(blockwise=blockwise, block_size=4), SigLipLoss(blockwise=blockwise, block_size=4)):
        got, want = [], []
        for shape, out in (((1,), got), ((), want)):
            scale = torch.full(shape, 7.0, requires_grad=True)
            bias = torch.full(shape, -3.0, requires_grad=True)
            loss = fn(image_features=img, text_features=txt, logit_scale=scale, logit_bias=bias)
            loss.backward()
            assert loss.shape == () and scale.grad.shape == shape
            out += [loss.detach(), scale.grad.reshape(())] + ([bias.grad.reshape(())] if isinstance(fn, SigLipLoss)
                                                              else [])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        with pytest.raises(ValueError, match="logit_scale must hold one value"):
            fn(image_features=img, text_features=txt, logit_scale=torch.ones(2), logit_bias=torch.zeros(1))
