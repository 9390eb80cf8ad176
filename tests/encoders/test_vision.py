"""Tests for the encoder registry and PatchEncoder (timm ``tests/test_models.py`` style)."""

import pytest
import torch

from medvl.encoders import (
    PatchEncoder,
    VisionConfig,
    create_encoder,
    encoder_kind,
    is_encoder,
    list_encoders,
    register_encoder,
)
from medvl.encoders import registry as registry_mod

TEST_VISION = [n for n in list_encoders("test_*", kind="vision")]
ALL_VISION = list_encoders(kind="vision")


# ---------------------------------------------------------------- registry
def test_registry_lists_and_filters():
    assert "test_vit_tiny_patch8" in TEST_VISION and len(TEST_VISION) >= 2
    assert {"vit_small_patch16", "vit_base_patch16", "vit_large_patch14"} <= set(ALL_VISION)
    assert list_encoders("vit_*_patch14", kind="vision") == [
        "vit_base_patch14", "vit_large_patch14", "vit_small_patch14"
    ]
    assert is_encoder("vit_small_patch16") and not is_encoder("vit_gigantic")
    assert encoder_kind("vit_small_patch16") == "vision"
    assert all(encoder_kind(n) == "text" for n in list_encoders(kind="text"))
    with pytest.raises(ValueError, match="kind"):
        list_encoders(kind="audio")


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError, match="vit_small_patch16"):
        create_encoder("vit_smal_patch16")


def test_register_bare_and_with_kind(monkeypatch):
    monkeypatch.setattr(registry_mod, "_factories", dict(registry_mod._factories))
    monkeypatch.setattr(registry_mod, "_kinds", dict(registry_mod._kinds))

    @register_encoder
    def _tmp_vision(**kw):
        return torch.nn.Identity()

    @register_encoder(kind="text")
    def _tmp_text(**kw):
        return torch.nn.Linear(kw.get("width", 2), 2)

    assert encoder_kind("_tmp_vision") == "vision" and encoder_kind("_tmp_text") == "text"
    assert create_encoder("_tmp_text", width=3).in_features == 3
    with pytest.raises(ValueError, match="kind"):
        register_encoder(kind="audio")(lambda: None)


def test_variant_table_is_the_vision_registry():
    import dataclasses

    from medvl.encoders import vision

    assert sorted(vision._VARIANTS) == ALL_VISION
    for name, (fixed, summary) in vision._VARIANTS.items():
        factory = registry_mod._factories[name]
        assert getattr(vision, name) is factory and factory.__name__ == name
        assert factory.__module__ == "medvl.encoders.vision" and encoder_kind(name) == "vision"
        assert factory.__doc__.startswith(summary)
        with torch.device("meta"):
            cfg = create_encoder(name).config
            assert cfg == VisionConfig(**fixed)
            # An override wins over a fixed field and leaves the others as they were.
            other = create_encoder(name, depth=1, in_chans=3).config
        assert other == dataclasses.replace(cfg, depth=1, in_chans=3)


def test_overrides_reach_config():
    m = create_encoder("test_vit_tiny_patch8", in_chans=3, img_size=48, num_classes=5)
    assert isinstance(m, PatchEncoder)
    assert m.config.in_chans == 3 and m.grid_size == (6, 6) and m.num_classes == 5
    assert m(torch.randn(1, 3, 48, 48)).shape == (1, 5)


def test_config_validation():
    with pytest.raises(ValueError, match="class_token"):
        VisionConfig(class_token=False, global_pool="token")
    with pytest.raises(ValueError, match="divisible"):
        VisionConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="patch_dropout"):
        VisionConfig(patch_dropout=1.0)


# ------------------------------------------------------- registry-wide checks
@pytest.mark.parametrize("name", TEST_VISION)
def test_test_encoders_forward_backward(name):
    torch.manual_seed(0)
    m = create_encoder(name, drop_path_rate=0.1, patch_dropout=0.25).train()
    x = torch.randn(2, m.in_chans, *m.img_size)
    tokens = m.forward_features(x)
    assert tokens.shape[0] == 2 and tokens.shape[-1] == m.embed_dim
    out = m.forward_head(tokens)
    assert out.shape == (2, m.num_features)
    (out.square().mean() + tokens.mean()).backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert torch.isfinite(out).all()


def _vit_param_count(cfg: VisionConfig) -> int:
    import math

    D, C, dims = cfg.embed_dim, cfg.in_chans, cfg.spatial_dims
    patch = (cfg.patch_size,) * dims if isinstance(cfg.patch_size, int) else tuple(cfg.patch_size)
    img = (cfg.img_size,) * dims if isinstance(cfg.img_size, int) else tuple(cfg.img_size)
    n = math.prod(s // q for s, q in zip(img, patch))
    hidden = int(D * cfg.mlp_ratio)
    fc1 = 2 * hidden if cfg.mlp_type == "swiglu" else hidden  # SwiGLU: gate and value in one packed fc1
    block = (
        2 * 2 * D  # norm1, norm2
        + (D * 3 * D + (3 * D if cfg.k_bias else 2 * D) * cfg.qkv_bias)  # qkv (q/v biases only without k_bias)
        + (2 * 2 * (D // cfg.num_heads) if cfg.qk_norm else 0)  # q_norm, k_norm
        + (2 * D if cfg.attn_norm else 0)  # norm before attn.proj
        + (D * D + D)  # proj
        + (D * fc1 + fc1) + (hidden * D + D)  # mlp
        + (2 * hidden if cfg.mlp_norm else 0)  # the MLP's sub-LN
        + (2 * D if cfg.init_values is not None else 0)  # LayerScale
    )
    map_hidden = int(D * cfg.mlp_ratio)
    attn_pool = (  # latent, q, kv, proj, norm, mlp
        D + (D * D + D) + (2 * D * D + 2 * D) + (D * D + D) + 2 * D + (D * map_hidden + map_hidden)
        + (map_hidden * D + D)
    ) if cfg.global_pool == "map" else 0
    prefix = 1 if cfg.class_token else 0
    return (
        C * math.prod(patch) * D + D  # patch_embed.proj
        + prefix * D  # cls_token
        + cfg.reg_tokens * D  # reg_token
        + (prefix + n) * D  # pos_embed
        + cfg.depth * block
        + 2 * D  # final norm
        + attn_pool
    )


@pytest.mark.parametrize("name", ALL_VISION)
def test_every_encoder_builds_on_meta_with_expected_params(name):
    with torch.device("meta"):
        m = create_encoder(name)
    count = sum(p.numel() for p in m.parameters())
    if m.config.stem == "patch":
        assert count == _vit_param_count(m.config)
    else:  # the transformer part is the same; only the stem differs
        stem = sum(p.numel() for p in m.patch_embed.parameters())
        C, p, D = m.config.in_chans, m.config.patch_size, m.config.embed_dim
        assert count - stem == _vit_param_count(m.config) - (C * p * p * D + D)
    assert m.no_weight_decay() <= dict(m.named_parameters()).keys()


def test_known_param_counts():
    # ViT-B/16 with RGB input and no head: 85.8M, as reported by timm (vit_base_patch16_224).
    with torch.device("meta"):
        m = create_encoder("vit_base_patch16", in_chans=3)
    assert sum(p.numel() for p in m.parameters()) == 85_798_656


# ---------------------------------------------------------------- interface
def test_forward_intermediates_shapes():
    m = create_encoder("test_vit_tiny_patch8", depth=3).eval()
    x = torch.randn(2, 1, 32, 40)
    final, inter = m.forward_intermediates(x)
    assert final.shape == (2, 1 + 4 * 5, 32) and len(inter) == 3
    assert all(t.shape == (2, 32, 4, 5) for t in inter)
    torch.testing.assert_close(final, m.forward_features(x))
    only = m.forward_intermediates(x, indices=[0, -1], output_fmt="NLC", intermediates_only=True)
    assert [t.shape for t in only] == [(2, 20, 32), (2, 20, 32)]
    torch.testing.assert_close(only[1], inter[2].flatten(2).transpose(1, 2))
    last = m.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
    torch.testing.assert_close(last[0].flatten(2).transpose(1, 2), final[:, 1:])
    pairs = m.forward_intermediates(x, indices=1, return_prefix_tokens=True, intermediates_only=True)
    assert pairs[0][1].shape == (2, 1, 32)
    with pytest.raises(ValueError):
        m.forward_intermediates(x, indices=4)


def test_pos_embed_interpolation_at_other_sizes():
    m = create_encoder("test_vit_tiny_patch8").eval()
    for size in [(32, 32), (48, 48), (24, 40)]:
        gh, gw = size[0] // 8, size[1] // 8
        assert m.forward_features(torch.randn(1, 1, *size)).shape == (1, 1 + gh * gw, 32)
    with pytest.raises(ValueError, match="divisible"):
        m(torch.randn(1, 1, 30, 32))


def test_grad_checkpointing_identical():
    torch.manual_seed(0)
    m = create_encoder("test_vit_tiny_patch8", depth=3).train()  # no dropouts configured
    x = torch.randn(2, 1, 32, 32)
    m(x).sum().backward()
    ref_out = m(x).detach()
    ref_grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.set_grad_checkpointing(True)
    out = m(x)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), ref_out)
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], msg=n)


def test_patch_dropout_only_in_training():
    m = create_encoder("test_vit_tiny_patch8", patch_dropout=0.5)
    x = torch.randn(2, 1, 32, 32)
    m.train()
    assert m.forward_features(x).shape == (2, 1 + 8, 32)  # cls kept + half of 16 patches
    m.eval()
    assert m.forward_features(x).shape == (2, 1 + 16, 32)
    m.train()
    with pytest.raises(ValueError, match="NLC"):
        m.forward_intermediates(x)
    assert m.forward_intermediates(x, output_fmt="NLC")[1][0].shape == (2, 8, 32)


def test_patch_dropout_keeps_cls_token_first():
    m = create_encoder("test_vit_tiny_patch8", patch_dropout=0.5, depth=1).train()
    x = m.patch_embed(torch.randn(2, 1, 32, 32))
    x = m._pos_embed(x, m.grid_size)
    kept = m._patch_dropout(x)
    torch.testing.assert_close(kept[:, 0], x[:, 0])
    # every kept patch token is one of the sample's original patch tokens
    for b in range(2):
        d = torch.cdist(kept[b, 1:], x[b, 1:])
        assert (d.min(dim=1).values < 1e-6).all()


def test_pooling_and_head():
    m = create_encoder("test_vit_tiny_gap_patch8").eval()
    x = torch.randn(2, 1, 32, 32)
    tokens = m.forward_features(x)
    assert tokens.shape == (2, 16, 32)  # no class token
    torch.testing.assert_close(m(x), tokens.mean(1))
    assert m.no_weight_decay() == {"pos_embed"}
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)
    assert m.forward_head(tokens, pre_logits=True).shape == (2, 32)


def test_init_like_timm():
    torch.manual_seed(0)
    m = create_encoder("vit_nano_patch16", img_size=64)
    assert m.blocks[0].attn.qkv.bias.abs().sum() == 0
    assert abs(m.blocks[0].mlp.fc1.weight.std().item() - 0.02) < 0.003
    assert abs(m.pos_embed.std().item() - 0.02) < 0.003
    assert m.cls_token.abs().max() < 1e-4
    assert torch.equal(m.norm.weight, torch.ones_like(m.norm.weight))


# ------------------------------------------------------------------ timm parity
@pytest.mark.parametrize("init_values", [None, 1e-2])
def test_timm_parity(init_values):
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=2, num_heads=2,
              init_values=init_values)
    ref = timm_vit.VisionTransformer(
        num_classes=0, class_token=True, global_pool="token", dynamic_img_size=True, **kw
    ).eval()
    ours = PatchEncoder(VisionConfig(**kw)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    for size in [(32, 32), (48, 40)]:
        x = torch.randn(2, 1, *size)
        feats = ours.forward_features(x)
        torch.testing.assert_close(feats, ref.forward_features(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            ours.forward_head(feats, pre_logits=True),
            ref.forward_head(feats, pre_logits=True), rtol=1e-5, atol=1e-5,
        )
    x = torch.randn(2, 1, 32, 32)
    _, ours_int = ours.forward_intermediates(x, indices=[0, 1])
    _, ref_int = ref.forward_intermediates(x, indices=[0, 1])
    for a, b in zip(ours_int, ref_int):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert set(ours.no_weight_decay()) <= set(ref.no_weight_decay())


def test_conv_stem_keeps_the_token_grid():
    patch = create_encoder("test_vit_tiny_patch8")
    conv = create_encoder("test_vitc_tiny_patch8")
    assert isinstance(conv.patch_embed.proj, torch.nn.Sequential)
    strided = [m for m in conv.patch_embed.proj if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3  # 8 = 2 ** 3
    for size in (32, 48):
        x = torch.randn(2, 1, size, size)
        assert conv.forward_features(x).shape == patch.forward_features(x).shape
    with pytest.raises(ValueError, match="power-of-two"):
        create_encoder("test_vitc_tiny_patch8", patch_size=6, img_size=36)


# ---------------------------------------------------------- token reduction
def test_background_patches_are_padding_and_air_not_anatomy():
    m = create_encoder("test_vit_tiny_patch8", img_size=64)
    img = torch.zeros(1, 1, 64, 64)
    img[:, :, 16:, 8:56] = 0.5 + 0.2 * torch.rand(1, 1, 48, 48)  # textured "body"; zero pad around
    bg = m.background_patches(img).view(8, 8)
    assert bg[:2].all() and bg[:, 0].all() and bg[:, 7].all()  # the padding
    assert not bg[2:, 1:7].any()  # the body
    # Relative thresholds: the same image after normalisation gives the same mask.
    assert torch.equal(m.background_patches((img - 0.5) / 0.25).view(8, 8), bg)


def test_background_dropout_drops_background_first():
    torch.manual_seed(0)
    m = create_encoder("test_vit_tiny_patch8", img_size=64, patch_dropout=0.25,
                       patch_dropout_mode="background").train()
    img = torch.zeros(4, 1, 64, 64)
    img[:, :, 16:, :] = torch.rand(4, 1, 48, 64)  # 16 of 64 patches (25%) are empty padding
    captured = {}
    m.blocks[0].register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0]))
    m.forward_features(img)
    kept = captured["x"]
    assert kept.shape[1] == 1 + 48
    # With patch_dropout equal to the background share, exactly the foreground survives:
    # compare the kept tokens with the full-input tokens of the foreground rows.
    full = m.patch_embed(img) + m.pos_embed[:, 1:]
    torch.testing.assert_close(kept[:, 1:], full[:, 16:])
    # At inference nothing is dropped.
    m.eval()
    captured.clear()
    m.forward_features(img)
    assert captured["x"].shape[1] == 1 + 64


def test_random_dropout_keeps_raster_order_subset():
    torch.manual_seed(1)
    m = create_encoder("test_vit_tiny_patch8", patch_dropout=0.5).train()
    x = torch.randn(2, 1, 32, 32)
    tokens = m._embed(x)
    full = m._pos_embed(m.patch_embed(x), m.grid_size)
    assert tokens.shape[1] == 1 + 8
    for b in range(2):  # every kept token is one of the sample's own tokens, in order
        dist = torch.cdist(tokens[b, 1:], full[b, 1:])
        idx = dist.argmin(1)
        assert torch.all(dist.min(1).values < 1e-5) and torch.all(idx[1:] > idx[:-1])


# ----------------------------------------------------------------------- 3-D
def test_volume_encoder_shapes_resampling_and_intermediates():
    m = create_encoder("test_vit3d_tiny_patch8").eval()
    x = torch.randn(2, 1, 32, 32, 32)
    assert m.forward_features(x).shape == (2, 1 + 64, 32)
    assert m(x).shape == (2, 32)
    # Another volume size resamples the position embedding (trilinearly).
    assert m.forward_features(torch.randn(1, 1, 16, 32, 48)).shape == (1, 1 + 2 * 4 * 6, 32)
    _, inter = m.forward_intermediates(x, indices=1)
    assert inter[0].shape == (2, 32, 4, 4, 4)
    aniso = create_encoder("test_vit3d_tiny_patch8", img_size=(8, 32, 32), patch_size=(2, 8, 8))
    assert aniso.forward_features(torch.randn(1, 1, 8, 32, 32)).shape == (1, 1 + 4 * 4 * 4, 32)
    with pytest.raises(ValueError, match="volume"):
        m(torch.randn(1, 1, 32, 32))


def test_volume_encoder_patch_embedding_is_a_cuboid_projection():
    m = create_encoder("test_vit3d_tiny_patch8", class_token=False, global_pool="avg").eval()
    x = torch.randn(1, 1, 32, 32, 32)
    tokens = m.patch_embed(x)  # (1, 64, 32)
    # Token (d=1, h=2, w=3) is the projection of the voxel cube at that grid cell.
    cube = x[0, 0, 8:16, 16:24, 24:32].reshape(-1)
    w = m.patch_embed.proj.weight.view(32, -1)
    torch.testing.assert_close(tokens[0, 1 * 16 + 2 * 4 + 3], w @ cube + m.patch_embed.proj.bias)
