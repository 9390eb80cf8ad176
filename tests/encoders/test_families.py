"""The families users bring, as VisionConfig fields of the one PatchEncoder, against timm and open_clip.

Each family is built randomly initialised (and perturbed) by timm itself, or by open_clip
around a timm tower, at toy size; medvl loads it through :mod:`medvl.encoders.interop` and
must give the peer's tokens and pooled features to 1e-4 in fp32, also at another input size
(resampled position embeddings, rescaled RoPE); then back to timm through the exporter.
"""

from __future__ import annotations

import json

import pytest
import torch

from medvl.encoders import PatchEncoder, create_encoder
from medvl.encoders.interop import load_open_clip_visual, load_timm_vit, timm_export
from medvl.kernels import use_fused

timm = pytest.importorskip("timm")

ATOL = 1e-4
VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
P14 = dict(img_size=42, embed_dim=64, depth=2, num_heads=2)  # patch 14: a 3x3 grid

# id: (timm name, timm kwargs, expected VisionConfig fields, another input size)
FAMILIES = {
    "dinov2_reg4": ("vit_small_patch14_reg4_dinov2", P14, dict(reg_tokens=4, init_values=1.0), 56),
    "siglip_map": ("vit_base_patch16_siglip_224", VIT, dict(global_pool="map", class_token=False), 48),
    "siglip2_map": ("vit_base_patch16_siglip_224.v2_webli", VIT, dict(global_pool="map"), 48),
    "siglip_gap": ("vit_base_patch16_siglip_gap_224", VIT, dict(global_pool="avg", fc_norm=False), 48),
    "siglip_no_pool": ("vit_base_patch16_siglip_224", {**VIT, "global_pool": ""}, dict(global_pool="none"), 48),
    "qk_norm": ("vit_small_patch16_224", {**VIT, "qk_norm": True}, dict(qk_norm=True), 48),
    "sub_norms": ("vit_small_patch16_224", {**VIT, "scale_attn_norm": True, "scale_mlp_norm": True},
                  dict(attn_norm=True, mlp_norm=True), 48),
    "eva02_tiny": ("eva02_tiny_patch14_224", P14,
                   dict(rope=True, rope_ref_grid=16, mlp_type="swiglu", k_bias=False, global_pool="avg"), 56),
    "eva02_base_sublm": ("eva02_base_patch14_224", P14,  # split SwiGLU with sub-LN, separate q/k/v
                         dict(rope=True, mlp_type="swiglu", mlp_norm=True, k_bias=False), 56),
    "eva02_clip": ("eva02_base_patch16_clip_224", {**VIT, "patch_size": 16, "img_size": 48},
                   dict(rope=True, attn_norm=True, global_pool="token"), 64),
    "eva02_layerscale_reg": ("eva02_tiny_patch14_224", {**P14, "init_values": 0.1, "num_reg_tokens": 2},
                             dict(rope=True, reg_tokens=2, init_values=1.0), 56),
}
# what the weights cannot say: timm's global_pool="" leaves no trace
LOAD_KW = {"siglip_no_pool": dict(global_pool="none")}


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturbs every parameter so norms, biases, registers and LayerScale are off their init values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _peer(family: str, **extra) -> torch.nn.Module:
    name, kw, _, _ = FAMILIES[family]
    return _randomise(timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True, **kw, **extra))


def _features(model, x):
    with torch.no_grad():
        tokens = model.forward_features(x)
        return tokens, model.forward_head(tokens, pre_logits=True)


def _max_err(a, b) -> float:
    return float((a - b).abs().max())


def _size(family: str) -> int:
    return FAMILIES[family][1]["img_size"]


# ------------------------------------------------------------------ timm parity
@pytest.mark.parametrize("family", FAMILIES)
def test_timm_family_parity_native_and_resampled(family):
    name, _, fields, other = FAMILIES[family]
    ref = _peer(family)
    enc = load_timm_vit(ref.state_dict(), name=name, num_heads=2, **LOAD_KW.get(family, {}))
    assert type(enc) is PatchEncoder and not enc.training
    for key, value in fields.items():
        assert getattr(enc.config, key) == value, key
    for size in (_size(family), other):  # another size: bicubic pos_embed, RoPE rescaled to its reference grid
        x = torch.randn(2, 3, size, size)
        (t_ref, p_ref), (t_got, p_got) = _features(ref, x), _features(enc, x)
        assert _max_err(t_got, t_ref) < ATOL and _max_err(p_got, p_ref) < ATOL, (size, _max_err(p_got, p_ref))
    assert set(enc.no_weight_decay()) <= set(ref.no_weight_decay())


@pytest.mark.parametrize("family", ["dinov2_reg4", "eva02_tiny", "siglip_map"])
def test_one_channel_adaptation(family):
    ref = _peer(family)
    enc = load_timm_vit(ref.state_dict(), name=FAMILIES[family][0], num_heads=2, in_chans=1)
    assert enc.in_chans == 1
    grey = torch.rand(2, 1, _size(family), _size(family))
    # summed filters on a grey image = the RGB model on that grey in all three channels
    assert _max_err(_features(enc, grey)[1], _features(ref, grey.expand(-1, 3, -1, -1))[1]) < ATOL


@pytest.mark.parametrize("family", ["dinov2_reg4", "eva02_tiny", "siglip_map"])
def test_img_size_override_resamples_once(family):
    name, kw, _, other = FAMILIES[family]
    ref = _peer(family)
    enc = load_timm_vit(ref.state_dict(), name=name, num_heads=2, img_size=other)
    g = other // kw.get("patch_size", 14)
    assert enc.pos_embed.shape == (1, enc.num_pos_prefix_tokens + g * g, 64) and enc.grid_size == (g, g)
    x = torch.randn(1, 3, other, other)
    tokens, pooled = _features(enc, x)
    assert tokens.shape == (1, enc.num_prefix_tokens + g * g, 64) and torch.isfinite(pooled).all()
    # the same bicubic resampling timm applies on the fly
    assert _max_err(pooled, _features(ref, x)[1]) < ATOL


def test_register_positions_folded_when_timm_embeds_them():
    """timm's reg_tokens without no_embed_class gives registers positions; they are constants, so fold."""
    ref = _randomise(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, reg_tokens=3,
                                       **VIT))
    enc = load_timm_vit(ref.state_dict(), num_heads=2)
    assert enc.config.reg_tokens == 3 and enc.pos_embed.shape == (1, 1 + 16, 64)
    x = torch.randn(2, 3, 32, 32)
    assert _max_err(_features(enc, x)[0], _features(ref, x)[0]) < ATOL


def test_eva_weights_without_a_name_ask_about_rope():
    sd = _peer("eva02_tiny").state_dict()
    with pytest.raises(ValueError, match="rope"):
        load_timm_vit(sd, num_heads=2)
    assert load_timm_vit(sd, num_heads=2, rope=True, rope_ref_grid=16).config.rope


def test_forward_intermediates_match_timm():
    for family in ("dinov2_reg4", "eva02_tiny"):
        ref = _peer(family)
        enc = load_timm_vit(ref.state_dict(), name=FAMILIES[family][0], num_heads=2)
        x = torch.randn(2, 3, 42, 42)
        with torch.no_grad():
            ours = enc.forward_intermediates(x, indices=[0, 1], return_prefix_tokens=True, norm=True)
            theirs = ref.forward_intermediates(x, indices=[0, 1], return_prefix_tokens=True, norm=True)
        torch.testing.assert_close(ours[0], theirs[0], atol=ATOL, rtol=0)
        for (f, p), (tf, tp) in zip(ours[1], theirs[1]):
            assert f.shape == (2, 64, 3, 3) and p.shape == (2, enc.num_prefix_tokens, 64)
            torch.testing.assert_close(f, tf, atol=ATOL, rtol=0)
            torch.testing.assert_close(p, tp, atol=ATOL, rtol=0)


# ------------------------------------------------------------------ open_clip
@pytest.fixture
def tiny_timm_towers(monkeypatch):
    """open_clip builds its timm towers at full size; shrink them (open_clip calls timm.create_model)."""
    real = timm.create_model
    size = {}

    def create(name, **kw):
        return real(name, **{**size, **kw})

    monkeypatch.setattr(timm, "create_model", create)
    return size


@pytest.mark.parametrize("config,trunk_kw,load_name", [
    ("ViT-B-16-SigLIP", VIT, None),
    ("ViT-B-16-SigLIP2", VIT, None),
    ("EVA02-B-16", {**VIT, "patch_size": 16, "img_size": 48}, "eva02_base_patch16_clip_224"),
], ids=["siglip", "siglip2", "eva02_clip"])
def test_open_clip_timm_towers(tmp_path, tiny_timm_towers, config, trunk_kw, load_name):
    open_clip = pytest.importorskip("open_clip")
    from open_clip.model import CustomTextCLIP

    tiny_timm_towers.update(trunk_kw)
    cfg = open_clip.get_model_config(config)  # the registered open_clip config: timm_model_name, pool, proj
    assert cfg["vision_cfg"]["timm_model_name"]
    text = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    vision = {**cfg["vision_cfg"], "image_size": trunk_kw["img_size"]}
    model = _randomise(CustomTextCLIP(embed_dim=64 if vision["timm_proj"] == "none" else 16, vision_cfg=vision,
                                      text_cfg=text))
    from safetensors.torch import save_file

    path = tmp_path / "open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    enc, proj = load_open_clip_visual(path, name=load_name, num_heads=2)
    x = torch.randn(2, 3, trunk_kw["img_size"], trunk_kw["img_size"])
    with torch.no_grad():
        pooled = _features(enc, x)[1]
        got = pooled if proj is None else proj(pooled)
        assert _max_err(got, model.encode_image(x)) < ATOL
    assert (proj is None) == (vision["timm_proj"] == "none")


# ------------------------------------------------------------------ the encoder's switches
TEST_FAMILIES = ["test_vit_tiny_reg4_patch8", "test_vit_tiny_siglip_patch8", "test_vit_tiny_qknorm_patch8",
                 "test_eva02_tiny_patch8"]


@pytest.mark.parametrize("name", TEST_FAMILIES)
def test_fused_switch_gives_the_reference(name):
    torch.manual_seed(0)
    with use_fused(False):
        slow = create_encoder(name).eval()
    with use_fused(True):
        fast = create_encoder(name).eval()
    fast.load_state_dict(slow.state_dict())
    assert all(not m.fused_attn for m in slow.modules() if hasattr(m, "fused_attn"))
    assert all(m.fused_attn for m in fast.modules() if hasattr(m, "fused_attn"))
    x = torch.randn(2, 1, 40, 32)
    with torch.no_grad():
        assert _max_err(fast(x), slow(x)) < 1e-5


def test_fused_triton_kernels_in_the_interpreter(monkeypatch):
    """With Triton's interpreter the fused patch embedding and add+LayerNorm run (registers, RoPE, MAP)."""
    from medvl.kernels import _switch

    if not _switch.triton_available():
        pytest.skip("triton is not installed")
    torch.manual_seed(0)
    enc = create_encoder("test_eva02_tiny_patch8", reg_tokens=2, depth=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with use_fused(False), torch.no_grad():
        ref = enc(x)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with use_fused(True), torch.no_grad():
        assert enc._fused_patch_embed(x)
        got = enc(x)
    assert _max_err(got, ref) < 1e-4


@pytest.mark.parametrize("name", TEST_FAMILIES)
def test_grad_checkpointing_identical(name):
    torch.manual_seed(0)
    m = create_encoder(name).train()
    x = torch.randn(2, 1, 32, 32)
    m(x).sum().backward()
    ref_out, ref_grads = m(x).detach(), {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.set_grad_checkpointing(True)
    out = m(x)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), ref_out)
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], msg=n)


@pytest.mark.parametrize("name", TEST_FAMILIES)
def test_forward_intermediates_shapes(name):
    m = create_encoder(name, depth=3).eval()
    x = torch.randn(2, 1, 32, 40)
    final, inter = m.forward_intermediates(x)
    P = m.num_prefix_tokens
    assert final.shape == (2, P + 20, 32) and [t.shape for t in inter] == [(2, 32, 4, 5)] * 3
    torch.testing.assert_close(final, m.forward_features(x))
    pairs = m.forward_intermediates(x, indices=1, return_prefix_tokens=True, intermediates_only=True, output_fmt="NLC")
    assert pairs[0][0].shape == (2, 20, 32) and pairs[0][1].shape == (2, P, 32)


@pytest.mark.parametrize("name", TEST_FAMILIES)
def test_other_sizes_and_one_channel(name):
    m = create_encoder(name).eval()
    for size in [(32, 32), (48, 48), (24, 40)]:
        n = size[0] // 8 * (size[1] // 8)
        assert m.forward_features(torch.randn(1, 1, *size)).shape == (1, m.num_prefix_tokens + n, 32)
        assert m(torch.randn(1, 1, *size)).shape == (1, 32)


def test_patch_dropout_keeps_registers_and_rotates_the_kept_patches(monkeypatch):
    """Dropping tokens equals masking them out of attention: the RoPE rows follow the kept patches."""
    torch.manual_seed(0)
    m = create_encoder("test_eva02_tiny_patch8", reg_tokens=2, patch_dropout=0.5).eval()
    x = torch.randn(2, 1, 32, 32)
    full, rope = m._embed_with_rope(x)  # (2, 3 + 16, 32), (3 + 16, 32)
    idx = torch.stack([torch.randperm(16)[:8].sort().values for _ in range(2)])  # (2, 8)
    m.train()
    monkeypatch.setattr(m, "_keep_indices", lambda tokens, images=None: idx)
    kept, rope_kept = m._embed_with_rope(x)
    assert kept.shape == (2, 3 + 8, 32) and rope_kept.shape == (2, 3 + 8, 32)
    torch.testing.assert_close(kept[:, :3], full[:, :3])  # class token and registers are never dropped
    allowed = torch.zeros(2, 3 + 16, dtype=torch.bool)
    allowed[:, :3] = True
    allowed.scatter_(1, idx + 3, True)
    out_kept, out_full = kept, full
    with torch.no_grad():
        for blk in m.blocks:
            out_kept = blk(out_kept, rope=rope_kept)
            out_full = blk(out_full, rope=rope, attn_mask=allowed[:, None, None, :])
    picked = torch.cat([out_full[:, :3], out_full[:, 3:].gather(1, idx[..., None].expand(-1, -1, 32))], dim=1)
    torch.testing.assert_close(out_kept, picked, atol=1e-5, rtol=0)
    assert m.forward_features(x).shape == (2, 3 + 8, 32)


def test_registered_families_have_timm_geometry():
    """Each registered family has the parameters of the timm model it names (registers: + the class position)."""
    pairs = [("vit_base_patch16_siglip", "vit_base_patch16_siglip_224", 0),
             ("vit_base_patch16_siglip_gap", "vit_base_patch16_siglip_gap_224", 0),
             ("vit_small_patch14_reg4_dinov2", "vit_small_patch14_reg4_dinov2", 384),  # timm: no_embed_class
             ("eva02_tiny_patch14", "eva02_tiny_patch14_224", 0),
             ("eva02_base_patch14", "eva02_base_patch14_224", 0)]
    for ours, theirs, extra in pairs:
        with torch.device("meta"):
            a = create_encoder(ours, in_chans=3)
            b = timm.create_model(theirs, pretrained=False, num_classes=0)
        assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters()) + extra, ours


# ------------------------------------------------------------------ back to timm
@pytest.mark.parametrize("family", FAMILIES)
def test_export_writes_a_timm_model(tmp_path, family):
    from safetensors.torch import load_file

    from medvl.export import export_encoder, load_encoder

    name, *_ = FAMILIES[family]
    ref = _peer(family)
    enc = load_timm_vit(ref.state_dict(), name=name, num_heads=2, in_chans=1, **LOAD_KW.get(family, {}))
    with torch.no_grad():  # as after fine-tuning in medvl: off the values the peer had
        for p in enc.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = export_encoder(enc, tmp_path / "export", formats=("timm",))
    spec = json.loads((out / "config.json").read_text())["timm"]
    again = timm.create_model(spec["arch"], pretrained=False, **spec["kwargs"]).eval()
    again.load_state_dict(load_file(str(out / spec["file"])), strict=True)
    x = torch.randn(2, 1, _size(family), _size(family))
    assert _max_err(_features(again, x)[1], _features(enc, x)[1]) < ATOL
    assert _max_err(_features(load_encoder(out), x)[1], _features(enc, x)[1]) < 1e-6  # medvl's own folder


@pytest.mark.parametrize("family", ["dinov2_reg4", "eva02_tiny"])
def test_cli_export_round_trip_through_timm_pretrained_loading(tmp_path, family):
    """timm weights -> ``medvl export --arch timm:<name>`` -> timm's own pretrained loader: the same model."""
    from medvl.cli import main

    name, *_ = FAMILIES[family]
    ref = _peer(family)
    src = tmp_path / "weights.pth"
    torch.save(ref.state_dict(), src)
    out = tmp_path / "out"
    assert main(["export", str(src), "--out", str(out), "--arch", f"timm:{name}", "--num-heads", "2",
                 "--formats", "timm"]) == 0
    spec = json.loads((out / "config.json").read_text())["timm"]
    again = timm.create_model(spec["arch"], pretrained=True, pretrained_cfg_overlay=dict(file=str(out / spec["file"])),
                              **spec["kwargs"]).eval()
    x = torch.randn(2, 3, _size(family), _size(family))
    assert _max_err(_features(again, x)[1], _features(ref, x)[1]) < ATOL


def test_export_refuses_what_eva_cannot_hold():
    enc = create_encoder("test_eva02_tiny_patch8", k_bias=True)
    with torch.no_grad():
        enc.blocks[0].attn.qkv.bias.normal_()
    with pytest.raises(ValueError, match="key bias"):
        timm_export(enc)


def test_torchscript_and_onnx_exports_of_rope_and_registers(tmp_path):
    """The traced graphs hold RoPE (with identity rows for the prefix) and registers; ONNX is checked at export."""
    pytest.importorskip("onnxruntime")
    from medvl.export import export_encoder

    enc = create_encoder("test_eva02_tiny_patch8", reg_tokens=2).eval()
    out = export_encoder(enc, tmp_path / "eva", formats=("torchscript", "onnx"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torchscript"]["max_abs_diff"] < 1e-5 and cfg["onnx"]["max_abs_diff"] < 1e-5
