"""Unit tests for medvl.layers: shapes, the fused/reference attention twins, timm parity."""

import pytest
import torch
import torch.nn.functional as F

from medvl.layers import Attention, Block, DropPath, LayerScale, Mlp, PatchEmbed, resample_abs_pos_embed


def test_patch_embed_shapes_and_sizes():
    pe = PatchEmbed(img_size=32, patch_size=8, in_chans=1, embed_dim=16)
    assert pe.grid_size == (4, 4) and pe.num_patches == 16
    assert pe(torch.randn(2, 1, 32, 32)).shape == (2, 16, 16)  # (B, N, D)
    with pytest.raises(ValueError, match="does not match img_size"):
        pe(torch.randn(2, 1, 40, 32))
    dyn = PatchEmbed(img_size=32, patch_size=8, in_chans=1, embed_dim=16, dynamic_img_size=True)
    assert dyn(torch.randn(2, 1, 40, 24)).shape == (2, 15, 16)
    with pytest.raises(ValueError, match="not divisible"):
        dyn(torch.randn(2, 1, 36, 32))
    with pytest.raises(ValueError, match="channels"):
        dyn(torch.randn(2, 3, 32, 32))


def test_patch_embed_matches_manual_patchify():
    pe = PatchEmbed(img_size=8, patch_size=4, in_chans=1, embed_dim=5)
    x = torch.randn(1, 1, 8, 8)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(1, 4, 16)  # row-major (gh, gw)
    expected = patches @ pe.proj.weight.reshape(5, 16).T + pe.proj.bias
    torch.testing.assert_close(pe(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_fused_matches_reference(masked):
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(2, 7, 32)
    mask = torch.rand(7, 7) > 0.3 if masked else None
    if mask is not None:
        mask.fill_diagonal_(True)
    attn.fused_attn = True
    fused = attn(x, attn_mask=mask)
    attn.fused_attn = False
    ref = attn(x, attn_mask=mask)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)


def test_attention_env_switch(monkeypatch):
    monkeypatch.setenv("MEDVL_FUSED", "0")
    assert Attention(8, num_heads=2).fused_attn is False
    monkeypatch.setenv("MEDVL_FUSED", "1")
    assert Attention(8, num_heads=2).fused_attn is True


def test_mlp_and_layerscale():
    mlp = Mlp(8, 32)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x))))
    ls = LayerScale(8, init_values=1e-5)
    torch.testing.assert_close(ls(x), x * 1e-5)


def test_drop_path_train_only():
    dp = DropPath(0.5)
    x = torch.ones(1000, 3, 4)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}  # whole samples dropped, rest rescaled
    assert (per_sample == per_sample[:, :1]).all()
    assert 0.4 < (per_sample[:, 0] == 0).float().mean() < 0.6


def test_block_matches_timm():
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    ref = timm_vit.Block(32, num_heads=4, qkv_bias=True, init_values=1e-3).eval()
    ours = Block(32, num_heads=4, init_values=1e-3).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_resample_abs_pos_embed_matches_timm():
    timm_layers = pytest.importorskip("timm.layers")
    pos = torch.randn(1, 1 + 16, 8)
    for new in [(4, 4), (6, 6), (3, 5), (8, 2)]:
        ours = resample_abs_pos_embed(pos, new, old_grid=(4, 4), num_prefix_tokens=1)
        ref = timm_layers.resample_abs_pos_embed(pos, list(new), old_size=[4, 4], num_prefix_tokens=1)
        assert ours.shape == (1, 1 + new[0] * new[1], 8)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(ours[:, :1], pos[:, :1])  # prefix untouched
    assert resample_abs_pos_embed(pos, (4, 4)) is pos  # no-op at the same grid


def test_resample_abs_pos_embed_keeps_dtype_and_checks_grid():
    pos = torch.randn(1, 16, 8, dtype=torch.bfloat16)
    assert resample_abs_pos_embed(pos, (2, 2), num_prefix_tokens=0).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="old_grid"):
        resample_abs_pos_embed(torch.randn(1, 15, 8), (2, 2), num_prefix_tokens=0)


def test_cpu_half_precision_training_takes_the_reference_attention(monkeypatch):
    """CPU flash-attention backward is slow in bf16: training there spells the maths out."""
    import torch.nn.functional as F

    from medvl.layers import attention as attention_module
    from medvl.layers.attention import Attention

    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4)
    attn.fused_attn = True
    x = torch.randn(2, 10, 32, requires_grad=True)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_math = attn(x)  # training: reference path
    assert calls == []
    y_math.float().sum().backward()
    g_math, x.grad = x.grad.clone(), None

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        attn(x)  # inference: SDPA (its forward is fast)
    assert calls == [1]
    attn(x).sum()  # fp32 training: SDPA
    assert calls == [1, 1]

    monkeypatch.setattr(attention_module, "CPU_MATH_ATTN_MAX_ELEMENTS", 0)  # a large matrix keeps SDPA
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_sdpa = attn(x)
    assert calls == [1, 1, 1]
    y_sdpa.float().sum().backward()
    torch.testing.assert_close(y_math.float(), y_sdpa.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(g_math, x.grad, atol=2e-2, rtol=2e-2)
