"""Parity of medvl.encoders.interop against timm and open_clip models with random weights."""

from __future__ import annotations

import pytest
import torch

from medvl.encoders import PatchEncoder
from medvl.encoders.interop import (
    adapt_input_conv,
    load_open_clip_visual,
    load_timm_vit,
    read_state_dict,
)

timm = pytest.importorskip("timm")

TINY = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturbs every parameter so norms, biases and LayerScale are not at their init values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _save(state: dict, path, layout: str):
    """Writes ``state`` the way real checkpoints come: safetensors, nested .pth, prefixed .bin."""
    state = {k: v.contiguous() for k, v in state.items()}
    if layout == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path.with_suffix(".safetensors")))
        return path.with_suffix(".safetensors")
    if layout == "nested":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path.with_suffix(".pth"))
        return path.with_suffix(".pth")
    torch.save({"model": {f"visual.trunk.{k}": v for k, v in state.items()}}, path.with_suffix(".bin"))
    return path.with_suffix(".bin")


def _features(model, x):
    with torch.no_grad():
        tokens = model.forward_features(x)
        return tokens, model.forward_head(tokens, pre_logits=True)


TIMM_CASES = [
    # (timm kwargs, load_timm_vit kwargs, file layout, expected (pre_norm, fc_norm))
    (dict(), dict(), "safetensors", (False, False)),
    (dict(class_token=False, global_pool="avg"), dict(), "nested", (False, True)),  # fc_norm
    (dict(global_pool="avg", fc_norm=False), dict(global_pool="avg"), "prefixed", (False, False)),
    (dict(pre_norm=True, init_values=0.1, no_embed_class=True, qkv_bias=False), dict(), "safetensors",
     (True, False)),
]


@pytest.mark.parametrize("timm_kw,load_kw,layout,norms", TIMM_CASES, ids=["token", "gap_fc_norm", "avg", "clip_like"])
def test_timm_parity(tmp_path, timm_kw, load_kw, layout, norms):
    ref = _randomise(timm.create_model("vit_small_patch16_224", pretrained=False, in_chans=3, num_classes=0,
                                       **TINY, **timm_kw))
    path = _save(ref.state_dict(), tmp_path / "vit", layout)
    enc = load_timm_vit(path, num_heads=2, **load_kw)
    assert type(enc) is PatchEncoder and not enc.training
    assert (enc.config.pre_norm, enc.config.fc_norm) == norms
    assert (enc.config.embed_dim, enc.config.depth, enc.config.in_chans, enc.img_size) == (64, 2, 3, (32, 32))
    x = torch.randn(2, 3, 32, 32)
    (t_ref, p_ref), (t_got, p_got) = _features(ref, x), _features(enc, x)
    torch.testing.assert_close(t_got, t_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(p_got, p_ref, atol=1e-5, rtol=0)


def test_timm_base_config_heads_from_name(tmp_path):
    # ViT-H has 16 heads whose width is not 64 (80): the name must decide. Narrowed to
    # width 320 to stay tiny; width // 64 would give 5 heads.
    ref = _randomise(timm.create_model("vit_huge_patch14_224", pretrained=False, num_classes=0, img_size=28, depth=1,
                                       embed_dim=320))
    sd = ref.state_dict()
    enc = load_timm_vit(sd, name="vit_huge_patch14_224")
    assert (enc.config.num_heads, enc.config.patch_size, enc.img_size) == (16, 14, (28, 28))
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(_features(enc, x)[1], _features(ref, x)[1], atol=1e-5, rtol=0)
    wrong = load_timm_vit(sd)  # 320 // 64 = 5 heads: loads, but computes something else
    assert wrong.config.num_heads == 5
    assert (_features(wrong, x)[1] - _features(ref, x)[1]).abs().max() > 1e-3


def test_rgb_weights_into_one_channel_encoder():
    ref = _randomise(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **TINY))
    enc = load_timm_vit(ref.state_dict(), num_heads=2, in_chans=1)
    assert enc.in_chans == 1
    grey = torch.rand(2, 1, 32, 32)
    # Summed filters on a grey image = the RGB model on that grey replicated to three channels.
    torch.testing.assert_close(_features(enc, grey)[1], _features(ref, grey.expand(-1, 3, -1, -1))[1],
                               atol=1e-5, rtol=0)
    w = torch.randn(8, 3, 4, 4)
    assert adapt_input_conv(1, w).shape == (8, 1, 4, 4)
    two = adapt_input_conv(2, w)  # tiled and rescaled: a constant image gives the same response
    torch.testing.assert_close(two.sum(dim=(1, 2, 3)), w[:, :2].sum(dim=(1, 2, 3)) * 1.5)


def test_img_size_override_resamples_position_embedding():
    ref = _randomise(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **TINY))
    enc = load_timm_vit(ref.state_dict(), num_heads=2, img_size=48)
    assert enc.pos_embed.shape == (1, 1 + 36, 64)
    assert torch.equal(enc.pos_embed[:, 0], ref.pos_embed[:, 0].detach())  # class position kept


def _open_clip_model(**vision):
    open_clip = pytest.importorskip("open_clip")
    vision_cfg = dict(image_size=32, patch_size=8, width=64, layers=2, **vision)
    text_cfg = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    return _randomise(open_clip.model.CLIP(embed_dim=16, vision_cfg=vision_cfg, text_cfg=text_cfg))


@pytest.mark.parametrize("vision,load_kw", [
    (dict(), dict()),
    (dict(ls_init_value=0.1, pool_type="avg", final_ln_after_pool=True),
     dict(pool_type="avg", final_ln_after_pool=True)),
], ids=["vit_b16_layout", "layerscale_avg"])
def test_open_clip_parity(tmp_path, vision, load_kw):
    model = _open_clip_model(**vision)
    path = _save(model.state_dict(), tmp_path / "clip", "nested")  # whole CLIP: the text tower is ignored
    enc, proj = load_open_clip_visual(path, **load_kw)
    assert type(enc) is PatchEncoder and enc.config.pre_norm  # ln_pre
    assert enc.config.num_heads == 1  # open_clip: width // head_width 64
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got_tokens, pooled = _features(enc, x)
        torch.testing.assert_close(proj(pooled), model.encode_image(x), atol=1e-5, rtol=0)
        model.visual.output_tokens = True
        embeds, tokens = model.visual(x)
        torch.testing.assert_close(proj(pooled), embeds, atol=1e-5, rtol=0)
    if not load_kw:  # with ln_post on every token, the patch tokens match too
        torch.testing.assert_close(got_tokens[:, 1:], tokens, atol=1e-5, rtol=0)


def test_open_clip_bare_visual_and_one_channel():
    model = _open_clip_model()
    enc, proj = load_open_clip_visual(model.visual.state_dict(), in_chans=1)
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(proj(_features(enc, grey)[1]), model.visual(grey.expand(-1, 3, -1, -1)),
                                   atol=1e-5, rtol=0)


def test_open_clip_timm_trunk_biomedclip_layout(tmp_path):
    # open_clip's TimmModel: visual.trunk.* (a timm ViT) + visual.head.proj (Linear, no bias).
    trunk = _randomise(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **TINY))
    head = torch.nn.Linear(64, 16, bias=False)
    state = {**{f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()},
             "visual.head.proj.weight": head.weight.detach(), "text.token_embedding.weight": torch.zeros(4, 2)}
    path = _save(state, tmp_path / "biomedclip", "safetensors")
    enc, proj = load_open_clip_visual(path, num_heads=2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(proj(_features(enc, x)[1]), head(trunk(x)), atol=1e-5, rtol=0)


def test_unsupported_and_unreadable_inputs_name_the_file(tmp_path):
    # register tokens, MAP heads and q/k norm load now (tests/encoders/test_families.py); a ViT without a
    # learnt position embedding still cannot
    nopos = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, pos_embed="none", **TINY)
    path = _save(nopos.state_dict(), tmp_path / "nopos", "safetensors")
    with pytest.raises(ValueError, match=rf"{path.name}.*pos_embed"):
        load_timm_vit(path, num_heads=2)
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth: cannot read"):
        read_state_dict(bad)
    with pytest.raises(ValueError, match="no timm ViT weights"):
        load_timm_vit({"foo.weight": torch.zeros(2)})
    model = _open_clip_model()
    sd = dict(model.visual.state_dict())
    sd["attn_pool.query"] = torch.zeros(4, 64)
    with pytest.raises(ValueError, match="attn_pool.query"):
        load_open_clip_visual(sd)
