"""Weight interop: timm and open_clip ViT state dicts into :class:`PatchEncoder`, and back to timm.

Converts the image towers of the two libraries medvl's users come from:

* timm's ``VisionTransformer`` (Wightman, "PyTorch Image Models"; the ViT of Dosovitskiy
  et al., arXiv:2010.11929). ``PatchEncoder`` uses timm's parameter names, so the
  conversion is mostly shape inference: width, depth, patch and image size, channels,
  class token, LayerScale, qkv bias, and the two norm placements timm offers besides the
  default (``pre_norm``: a LayerNorm before the blocks; ``fc_norm``: the final norm
  after pooling instead of on every token). The families built on it load too: register
  tokens (DINOv2-with-registers; positions timm gives them are folded into the tokens),
  the SigLIP / SigLIP 2 attention-pool head (``global_pool="map"``), q/k norm, the
  attention/MLP sub-norms and packed SwiGLU MLPs.
* timm's ``Eva`` (EVA/EVA-02, Fang et al., arXiv:2303.11331): ``q_bias``/``v_bias``
  without a key bias, fused or separate q/k/v, ``gamma_1``/``gamma_2`` LayerScale, split
  (``fc1_g``/``fc1_x``) or packed SwiGLU with the sub-LN, and 2-D rotary embeddings, which
  leave no trace in the weights and are switched on by the model name (or ``rope=``).
* open_clip's ``VisionTransformer`` (Ilharco et al., OpenCLIP; the CLIP image tower of
  Radford et al., arXiv:2103.00020): ``conv1`` (no bias), ``class_embedding``,
  ``positional_embedding``, ``ln_pre``, ``transformer.resblocks.*`` with
  ``nn.MultiheadAttention`` weights, ``ln_post`` and the ``proj`` matrix. The tower
  becomes a ``PatchEncoder`` with a pre-norm plus a separate linear
  :class:`~medvl.heads.ProjectionHead` holding ``proj``. open_clip towers wrapping a
  timm trunk (``visual.trunk.*`` + ``visual.head.proj``, as BiomedCLIP) go through the
  timm path.

Checkpoints are read from ``.safetensors`` or with ``torch.load(weights_only=True)``
(``.pth``/``.pt``/``.bin``), unwrapped from ``state_dict``/``model``/``module``
containers and located by their parameter names, whatever prefix they carry
(``visual.``, ``visual.trunk.``, ``module.``, ...). Three-channel weights load into a
one-channel encoder by summing the RGB filters of the first convolution, as timm's
``adapt_input_conv`` does.

The pre-norm and the after-pool norm are ``VisionConfig`` fields (``pre_norm``,
``fc_norm``; modules ``norm_pre`` and ``fc_norm``, timm's names), as is every family
option, so a converted encoder is a plain ``PatchEncoder`` that round-trips through
``config.json``. :func:`timm_export` writes it back: to timm's ``VisionTransformer``, or
to ``Eva`` when it has RoPE or a SwiGLU MLP.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.encoders.vision import PatchEncoder, VisionConfig
from medvl.layers import PatchEmbed, resample_abs_pos_embed

__all__ = [
    "adapt_input_conv",
    "build_patch_encoder",
    "load_open_clip_visual",
    "load_timm_vit",
    "read_state_dict",
    "timm_export",
    "vision_config_dict",
]

# Containers that checkpoints nest their weights in (Lightning, DeiT/MAE, DDP, ...).
_CONTAINERS = ("state_dict", "model", "module", "model_state_dict", "state_dict_ema")
# Prefixes that wrappers add in front of every key (DDP, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Heads that differ from width // 64, by the size word of a timm/open_clip model name.
_TIMM_HEADS = {"tiny": 3, "small": 6, "medium": 8, "base": 12, "large": 16, "huge": 16, "giant": 16, "gigantic": 16}
_OPEN_CLIP_HEADS = {"S": 6, "M": 8, "B": 12, "L": 16, "H": 16, "g": 16, "bigG": 16}


# ------------------------------------------------------------------ reading
def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Reads a checkpoint into a flat ``{name: tensor}`` dict on the CPU.

    Args:
        source: A ``.safetensors`` file, a ``torch.save`` file (``.pth``, ``.pt``,
            ``.bin``, ``.ckpt``; read with ``weights_only=True``) or an in-memory dict.

    Returns:
        The tensors, unwrapped from ``state_dict``/``model``/``module`` containers and
        stripped of DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: The file cannot be read, or holds no tensors.
    """
    where = "state dict" if isinstance(source, Mapping) else str(source)
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                obj = load_file(str(path))
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle, zip and safetensors errors have no common base
            raise ValueError(f"{path}: cannot read as a checkpoint ({type(err).__name__}: {err})") from err
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{where}: no tensors found")
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _sub_state(
    state: dict[str, torch.Tensor], anchor: str, where: str, kind: str
) -> tuple[str, dict[str, torch.Tensor]]:
    """The sub-dict under the one prefix that ``anchor`` (a key suffix) appears with."""
    prefixes = sorted({k[: -len(anchor)] for k in state if k == anchor or k.endswith("." + anchor)})
    if not prefixes:
        raise ValueError(f"{where}: no {kind} weights found (no key ending in {anchor!r})")
    if len(prefixes) > 1:
        raise ValueError(f"{where}: several {kind} towers found (prefixes {prefixes}); pass the sub-dict to load")
    prefix = prefixes[0]
    return prefix, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """Adapts a first-convolution weight ``(O, I, kh, kw)`` to ``in_chans`` input channels.

    timm's ``adapt_input_conv``: to one channel the filters are summed over the input
    channels (an RGB-trained filter responds to a grey image as to the same grey in all
    three channels); to more channels the filters are tiled and rescaled by
    ``I / in_chans`` so the response to a constant image is kept.
    """
    O, I, kh, kw = weight.shape
    if in_chans == I:
        return weight
    dtype = weight.dtype
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        reps = math.ceil(in_chans / I)
        w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (I / in_chans)
    return w.to(dtype)


def _first_conv_key(state: Mapping[str, torch.Tensor]) -> str:
    return "patch_embed.proj.0.weight" if "patch_embed.proj.0.weight" in state else "patch_embed.proj.weight"


# ------------------------------------------------------------------ encoder
def build_patch_encoder(config: VisionConfig, *, pre_norm: bool = False, fc_norm: bool = False) -> PatchEncoder:
    """A ``PatchEncoder`` of ``config`` with the extra norms switched on where asked.

    ``pre_norm``/``fc_norm`` are also fields of :class:`VisionConfig`; the keywords keep
    ``config.json`` files written before they were (with a separate ``norms`` entry) loading.
    """
    if pre_norm or fc_norm:
        config = dataclasses.replace(config, pre_norm=config.pre_norm or pre_norm, fc_norm=config.fc_norm or fc_norm)
    return PatchEncoder(config)


def _norm_flags(encoder: nn.Module) -> dict[str, bool]:
    cfg = getattr(encoder, "config", None)
    return {"pre_norm": bool(getattr(cfg, "pre_norm", False)), "fc_norm": bool(getattr(cfg, "fc_norm", False))}


def _heads(width: int, name: str | None, table: dict[str, int], sep: str) -> int:
    """Heads from a model name's size word, else CLIP/timm's head width 64."""
    if name:
        for word in re.split(sep, name):
            if word in table and width % table[word] == 0:
                return table[word]
    if width % 64:
        raise ValueError(f"cannot infer the number of heads for width {width}; pass num_heads=")
    return width // 64


def _grid(num_patches: int, where: str) -> int:
    g = math.isqrt(num_patches)
    if g * g != num_patches:
        raise ValueError(f"{where}: {num_patches} position embeddings do not form a square grid")
    return g


def _finish(
    config_kwargs: dict[str, Any],
    state: dict[str, torch.Tensor],
    overrides: dict[str, Any],
    *,
    in_chans: int | None,
    pre_norm: bool,
    fc_norm: bool,
    where: str,
) -> PatchEncoder:
    """Applies channel adaptation and overrides, resamples ``pos_embed``, builds and loads."""
    if in_chans is not None and in_chans != config_kwargs["in_chans"]:
        key = _first_conv_key(state)
        state[key] = adapt_input_conv(in_chans, state[key])
        config_kwargs["in_chans"] = in_chans
    config = VisionConfig(**{**config_kwargs, **overrides})
    encoder = build_patch_encoder(config, pre_norm=pre_norm, fc_norm=fc_norm)
    if tuple(state["pos_embed"].shape) != tuple(encoder.pos_embed.shape):  # img_size override: resample once
        old = _grid(state["pos_embed"].shape[1] - encoder.num_pos_prefix_tokens, where)
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_grid=encoder.grid_size, old_grid=(old, old),
            num_prefix_tokens=encoder.num_pos_prefix_tokens,
        )
    if encoder.attn_pool is None:  # a MAP head the caller pooled away (global_pool=...), as timm's reset_classifier
        state = {k: v for k, v in state.items() if not k.startswith("attn_pool.")}
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{where}: weights do not fit the inferred encoder {config}: {err}") from err
    return encoder.eval()


# ------------------------------------------------------------------ timm
def _base_name(name: str | None) -> str:
    """``"timm/eva02_base_patch14_224.mim_in22k"`` -> ``"eva02_base_patch14_224"``."""
    return (name or "").split("/")[-1].split(".")[0]


def _rope_from_name(name: str | None) -> tuple[bool, int | None]:
    """Whether timm's model ``name`` uses RoPE, and its reference grid (not in the weights).

    EVA-02 and timm's ``vit_*_rope_*`` ViTs build their rotary embedding with
    ``ref_feat_shape=(16, 16)``.
    """
    base = _base_name(name)
    if base.startswith("eva02") or "_rope_" in base:
        return True, 16
    return False, None


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _mlp_ratio(hidden: int, width: int) -> float:
    """``hidden / width``, nudged up where needed so that ``int(width * ratio) == hidden`` (how blocks size it)."""
    ratio = hidden / width
    while int(width * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _eva_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` is a timm ``Eva`` (EVA/EVA-02, BEiT-style) rather than ``VisionTransformer``."""
    return any(k in state for k in ("blocks.0.gamma_1", "blocks.0.attn.q_bias", "blocks.0.attn.q_proj.weight",
                                    "blocks.0.mlp.fc1_g.weight")) or any(k.startswith("rope.") for k in state)


def _from_eva_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``Eva`` parameter names -> PatchEncoder's (timm ViT names plus ``attn.q_bias``/``attn.v_bias``).

    LayerScale ``gamma_1``/``gamma_2`` become ``ls1.gamma``/``ls2.gamma``; separate
    ``q_proj``/``k_proj``/``v_proj`` one ``qkv``; SwiGLU's ``fc1_g``/``fc1_x`` one packed
    ``fc1`` (gate first). The rotary embedding's buffers carry nothing and are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("rope."):
            continue
        key = re.sub(r"\.gamma_([12])$", r".ls\1.gamma", key)
        out[key] = value
    blocks = sorted({int(m.group(1)) for k in out if (m := re.match(r"blocks\.(\d+)\.", k))})
    for i in blocks:
        a, m = f"blocks.{i}.attn.", f"blocks.{i}.mlp."
        if a + "q_proj.weight" in out:
            out[a + "qkv.weight"] = torch.cat([out.pop(a + f"{n}_proj.weight") for n in "qkv"])
            if a + "k_proj.bias" in out:
                raise ValueError("an EVA attention with a key bias; timm's Eva has none")
            if a + "q_proj.bias" in out:
                out[a + "q_bias"], out[a + "v_bias"] = out.pop(a + "q_proj.bias"), out.pop(a + "v_proj.bias")
        for part in ("weight", "bias"):
            if m + f"fc1_g.{part}" in out:
                out[m + f"fc1.{part}"] = torch.cat([out.pop(m + f"fc1_g.{part}"), out.pop(m + f"fc1_x.{part}")])
    return out


def _timm_to_medvl(
    state: dict[str, torch.Tensor], *, name: str | None, num_heads: int | None, norm_eps: float | None,
    global_pool: str | None, where: str, overrides: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], bool, bool]:
    """Infers a VisionConfig from timm ViT/Eva weights; returns (config kwargs, state, pre_norm, fc_norm)."""
    overrides = overrides or {}
    eva = _eva_layout(state)
    if eva:
        state = _from_eva_names(state)
    if "pos_embed" not in state:
        raise ValueError(f"{where}: no learnt absolute 'pos_embed'; PatchEncoder cannot represent this ViT")
    if "patch_embed.proj.weight" not in state:
        raise ValueError(f"{where}: no 'patch_embed.proj.weight'; not a patchify-stem timm ViT")
    for key, what in (("attn_pool.pos_embed", "attention pools with a position embedding"),
                      ("attn_pool.q_norm.weight", "attention pools with q/k norm"),
                      ("blocks.0.attn.gate.weight", "gated attention")):
        if key in state:
            raise ValueError(f"{where}: {what} are not supported by PatchEncoder")
    if any(k.startswith("attn_pool.") for k in state) and "attn_pool.latent" not in state:
        raise ValueError(f"{where}: an attention pool other than SigLIP's MAP head is not supported")
    if "attn_pool.latent" in state and state["attn_pool.latent"].shape[1] != 1:
        raise ValueError(f"{where}: a MAP head with {state['attn_pool.latent'].shape[1]} latents; PatchEncoder has one")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}  # classifier: num_classes=0
    w = state["patch_embed.proj.weight"]
    if w.ndim != 4:
        raise ValueError(f"{where}: patch_embed.proj.weight has shape {tuple(w.shape)}; expected (D, C, ph, pw)")
    D, C, ph, pw = w.shape
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth == 0:
        raise ValueError(f"{where}: no 'blocks.*' weights")
    class_token = "cls_token" in state
    P0 = int(class_token)
    R = state["reg_token"].shape[1] if "reg_token" in state else 0
    pos = state["pos_embed"]  # (1, L, D)
    if P0 + R and _is_square(pos.shape[1]):  # no_embed_class: prefix tokens have no position
        state["pos_embed"] = torch.cat([pos.new_zeros(1, P0, D), pos], dim=1)
    elif R:  # positions for the registers too: constants, folded into the register tokens
        state["reg_token"] = state["reg_token"] + pos[:, P0:P0 + R]
        state["pos_embed"] = torch.cat([pos[:, :P0], pos[:, P0 + R:]], dim=1)
    g = _grid(state["pos_embed"].shape[1] - P0, where)
    if "patch_embed.proj.bias" not in state:  # timm drops it with pre_norm (CLIP style)
        state["patch_embed.proj.bias"] = w.new_zeros(D)
    pre_norm = "norm_pre.weight" in state
    fc_norm = "fc_norm.weight" in state
    if fc_norm and "norm.weight" in state:
        raise ValueError(f"{where}: both 'norm' and 'fc_norm' weights; timm never builds both")
    if not fc_norm and "norm.weight" not in state:
        raise ValueError(f"{where}: no final norm (timm final_norm=False); PatchEncoder always has one")
    if "blocks.0.attn.proj.bias" not in state:
        raise ValueError(f"{where}: attention output projection without bias is not supported")
    has_map = "attn_pool.latent" in state
    if global_pool is None:
        global_pool = "map" if has_map else "token" if class_token and not fc_norm else "avg"
    if eva and has_map and global_pool == "map" and P0 + R:
        raise ValueError(f"{where}: timm's Eva attention-pools its prefix tokens too; PatchEncoder pools patches only")
    if norm_eps is None:
        base = _base_name(name)
        norm_eps = 1e-5 if "clip" in base and "siglip" not in base and not eva and not base.startswith("eva") else 1e-6
    rope, ref_grid = _rope_from_name(name)
    if eva and not name and "rope" not in overrides:
        raise ValueError(
            f"{where}: timm Eva weights, and whether they use rotary position embeddings is not in the weights; "
            "pass name= (the timm model name, e.g. 'eva02_base_patch14_224') or rope=True/False"
        )
    fc1, fc2 = state["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc2.weight"]
    hidden = fc2.shape[1]
    mlp_type = "swiglu" if fc1.shape[0] == 2 * hidden else "mlp"  # timm's SwiGLUPacked / Eva's GluMlp: gate first
    mlp_ratio = _mlp_ratio(hidden, D)
    if has_map and state["attn_pool.mlp.fc1.weight"].shape[0] != int(D * mlp_ratio):
        raise ValueError(f"{where}: the MAP head's MLP width differs from the blocks'; PatchEncoder ties them")
    config = dict(
        img_size=g * ph if ph == pw else (g * ph, g * pw), patch_size=ph if ph == pw else (ph, pw), in_chans=C,
        embed_dim=D, depth=depth, num_heads=num_heads or _heads(D, name, _TIMM_HEADS, r"[_.\-]"),
        mlp_ratio=mlp_ratio, qkv_bias="blocks.0.attn.qkv.bias" in state or "blocks.0.attn.q_bias" in state,
        class_token=class_token, global_pool=global_pool,
        init_values=1.0 if "blocks.0.ls1.gamma" in state else None,  # value irrelevant: gamma is loaded
        norm_eps=norm_eps, reg_tokens=R, qk_norm="blocks.0.attn.q_norm.weight" in state,
        k_bias="blocks.0.attn.q_bias" not in state, attn_norm="blocks.0.attn.norm.weight" in state,
        mlp_type=mlp_type, mlp_norm="blocks.0.mlp.norm.weight" in state, rope=rope, rope_ref_grid=ref_grid,
    )
    return config, state, pre_norm, fc_norm


def load_timm_vit(
    path_or_state_dict: str | Path | Mapping[str, Any],
    *,
    name: str | None = None,
    num_heads: int | None = None,
    in_chans: int | None = None,
    norm_eps: float | None = None,
    global_pool: str | None = None,
    **overrides: Any,
) -> PatchEncoder:
    """Loads a timm ``VisionTransformer`` or ``Eva`` state dict into a :class:`PatchEncoder`.

    The architecture is read off the weights; only the number of heads cannot be, so
    it comes from ``num_heads``, else the size word of ``name`` (``vit_huge_...`` -> 16),
    else width // 64 (true of every standard ViT up to ViT-L). The classifier head is
    dropped. Learnt-position ViTs with or without a class token, ``no_embed_class``,
    LayerScale, ``pre_norm``, ``fc_norm``, register tokens (DINOv2), the MAP head
    (SigLIP, SigLIP 2), q/k norm, ``scale_attn_norm``/``scale_mlp_norm``, SwiGLU MLPs
    (packed, or EVA's split ``fc1_g``/``fc1_x``), and EVA/EVA-02 (q/v biases, fused or
    separate q/k/v, ``gamma_1``/``gamma_2``) load. Rotary embeddings leave no trace in
    the weights: EVA-02 and timm's ``*_rope_*`` names switch them on (reference grid
    16, timm's ``ref_feat_shape``); for other Eva weights pass ``rope=``.

    Args:
        path_or_state_dict: ``.safetensors``/``.pth``/``.bin`` file or a state dict,
            possibly nested (``state_dict``/``model``) and prefixed (``visual.trunk.``).
        name: timm model name, for the heads, RoPE and the norm epsilon (1e-5 for
            ``*_clip_*`` ViTs, otherwise timm's 1e-6).
        num_heads: Attention heads.
        in_chans: Channels of the encoder to build; 3-channel filters are summed into 1.
        norm_eps: LayerNorm epsilon, overriding the guess from ``name``.
        global_pool: ``"token"``, ``"avg"``, ``"map"`` or ``"none"``; default: ``"map"``
            with MAP weights, token with a class token and no ``fc_norm``, else avg
            (timm's defaults). Anything but ``"map"`` drops a MAP head.
        **overrides: Further :class:`VisionConfig` fields (``drop_path_rate``,
            ``patch_dropout``, ``img_size`` to resample the position embedding,
            ``rope``/``rope_ref_grid``, ...).

    Returns:
        The encoder in eval mode; ``forward_features``/``forward_head`` match timm's.
    """
    where = "state dict" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    _, state = _sub_state(read_state_dict(path_or_state_dict), "patch_embed.proj.weight", where, "timm ViT")
    config, state, pre_norm, fc_norm = _timm_to_medvl(
        state, name=name, num_heads=num_heads, norm_eps=norm_eps, global_pool=global_pool, where=where,
        overrides=overrides,
    )
    return _finish(config, state, overrides, in_chans=in_chans, pre_norm=pre_norm, fc_norm=fc_norm, where=where)


# ------------------------------------------------------------------ open_clip
_OC_BLOCK = {
    "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias",
    "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias",
    "ls_1.gamma": "ls1.gamma", "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias", "ls_2.gamma": "ls2.gamma",
}


def _projection(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """``(E, D)`` weight as a linear :class:`ProjectionHead` (or ``nn.Linear`` with a bias)."""
    from medvl.heads import ProjectionHead

    E, D = weight.shape
    if bias is None:
        head = ProjectionHead(D, E, "linear")
        head.proj.weight.data.copy_(weight)
        return head.eval()
    lin = nn.Linear(D, E)
    lin.load_state_dict({"weight": weight, "bias": bias})
    return lin.eval()


def load_open_clip_visual(
    path_or_state_dict: str | Path | Mapping[str, Any],
    *,
    name: str | None = None,
    num_heads: int | None = None,
    in_chans: int | None = None,
    pool_type: str = "tok",
    final_ln_after_pool: bool = False,
    norm_eps: float | None = None,
    **overrides: Any,
) -> tuple[PatchEncoder, nn.Module | None]:
    """Loads an open_clip image tower into a :class:`PatchEncoder` and a projection.

    Accepts a whole CLIP state dict (the ``visual.`` tower is picked out; the text
    tower ignored), a bare ``model.visual`` state dict, or an open_clip ``TimmModel``
    tower (``trunk.*`` + ``head.proj``, as BiomedCLIP; then ``name`` is the timm model
    name and ``norm_eps`` is timm's). ``ln_pre`` becomes the encoder's pre-norm,
    ``ln_post`` its final norm, and ``proj`` (``D x E``) the returned projection, so
    ``projection(encoder(x))`` equals open_clip's ``model.visual(x)``.

    Args:
        path_or_state_dict: Checkpoint file or state dict.
        name: open_clip model name (``"ViT-H-14"`` -> 16 heads) or, for a timm trunk,
            the timm name.
        num_heads: Attention heads (default: from ``name``, else width // 64, open_clip's
            head width).
        in_chans: Channels of the encoder to build; 3-channel filters are summed into 1.
        pool_type: open_clip's ``pool_type``, ``"tok"`` or ``"avg"`` (not in the weights).
        final_ln_after_pool: open_clip's ``final_ln_after_pool`` (not in the weights).
        norm_eps: LayerNorm epsilon; default open_clip's 1e-5 (a timm trunk: as :func:`load_timm_vit`).
        **overrides: Further :class:`VisionConfig` fields.

    Returns:
        ``(encoder in eval mode, projection or None when the tower has no proj)``.
    """
    where = "state dict" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    full = read_state_dict(path_or_state_dict)
    if any(k == "trunk.patch_embed.proj.weight" or k.endswith(".trunk.patch_embed.proj.weight") for k in full):
        prefix, tower = _sub_state(full, "trunk.patch_embed.proj.weight", where, "open_clip timm-trunk")
        if any(k.startswith("head.mlp.") for k in tower):
            raise ValueError(f"{where}: open_clip 'mlp' projection heads are not supported (only 'linear')")
        trunk = {k[len("trunk."):]: v for k, v in tower.items() if k.startswith("trunk.")}
        config, state, pre_norm, fc_norm = _timm_to_medvl(
            trunk, name=name, num_heads=num_heads, norm_eps=norm_eps, global_pool=None, where=where,
            overrides=overrides,
        )
        encoder = _finish(config, state, overrides, in_chans=in_chans, pre_norm=pre_norm, fc_norm=fc_norm, where=where)
        w = tower.get("head.proj.weight")
        if w is not None:
            return encoder, _projection(w, tower.get("head.proj.bias"))
        # timm_proj unset: open_clip asks timm for num_classes=embed_dim, the classifier is the projection
        w = trunk.get("head.weight")
        return encoder, None if w is None else _projection(w, trunk.get("head.bias"))

    _, tower = _sub_state(full, "class_embedding", where, "open_clip VisionTransformer")
    if "conv1.weight" not in tower:
        raise ValueError(f"{where}: 'class_embedding' without 'conv1.weight'; not an open_clip ViT tower")
    if pool_type not in ("tok", "avg"):
        raise ValueError(f"pool_type must be 'tok' or 'avg', got {pool_type!r}")
    w = tower.pop("conv1.weight")
    D, C, ph, pw = w.shape
    state: dict[str, torch.Tensor] = {
        "patch_embed.proj.weight": w,
        "patch_embed.proj.bias": w.new_zeros(D),  # open_clip's conv1 has no bias
        "cls_token": tower.pop("class_embedding").reshape(1, 1, D),
        "pos_embed": tower.pop("positional_embedding").reshape(1, -1, D),
    }
    pre_norm = "ln_pre.weight" in tower
    fc_norm = final_ln_after_pool and pool_type == "avg"  # for 'tok' LN-then-pick equals pick-then-LN
    for part in ("weight", "bias"):
        if pre_norm:
            state[f"norm_pre.{part}"] = tower.pop(f"ln_pre.{part}")
        state[f"{'fc_norm' if fc_norm else 'norm'}.{part}"] = tower.pop(f"ln_post.{part}")
    proj = tower.pop("proj", None)
    unknown = []
    for key, value in tower.items():
        m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", key)
        if m and m.group(2) in _OC_BLOCK:
            state[f"blocks.{m.group(1)}.{_OC_BLOCK[m.group(2)]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{where}: open_clip parameters PatchEncoder cannot represent (attentional pooling, scaled "
            f"cosine attention, head scaling or NormFormer norms): {sorted(unknown)[:6]}"
        )
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    g = _grid(state["pos_embed"].shape[1] - 1, where)
    config = dict(
        img_size=g * ph, patch_size=ph, in_chans=C, embed_dim=D, depth=depth,
        num_heads=num_heads or _heads(D, name, _OPEN_CLIP_HEADS, r"[-_]"),
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / D, qkv_bias=True, class_token=True,
        global_pool="token" if pool_type == "tok" else "avg",
        init_values=1.0 if "blocks.0.ls1.gamma" in state else None, norm_eps=1e-5 if norm_eps is None else norm_eps,
    )
    encoder = _finish(config, state, overrides, in_chans=in_chans, pre_norm=pre_norm, fc_norm=fc_norm, where=where)
    return encoder, None if proj is None else _projection(proj.t().contiguous(), None)


# ------------------------------------------------------------------ back to timm
# timm builds ViTs with LayerNorm eps 1e-6, except the CLIP towers (1e-5); the arch
# name only selects that and a pretrained config, every geometry field is a kwarg.
_TIMM_SIZES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}


def timm_export(encoder: PatchEncoder) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The encoder as a timm state dict and the ``create_model`` call that loads it.

    Plain ViTs, register tokens, the MAP head, q/k norm and the attention/MLP sub-norms
    go to timm's ``VisionTransformer``; RoPE or SwiGLU encoders (EVA-02) to timm's ``Eva``.
    Every geometry field is a keyword argument, so the arch name only picks timm's
    defaults for what is not (and a pretrained config).

    Args:
        encoder: A 2-D patchify-stem :class:`PatchEncoder`.

    Returns:
        ``(state_dict, {"arch": name, "kwargs": {...}})``: ``timm.create_model(arch,
        pretrained=True, pretrained_cfg_overlay=dict(file=<saved state>), **kwargs)``
        (or ``pretrained=False`` and ``load_state_dict(state, strict=True)``) rebuilds
        the encoder with identical features. With a pre-norm, timm's patch embedding has
        no bias; the bias is folded into the patch position embeddings, which it is
        always added together with. With registers, timm's ``no_embed_class`` layout is
        used: the class token's position is folded into the class token.

    Raises:
        ValueError: The encoder has no timm equivalent; the message says why.
    """
    cfg = encoder.config
    if cfg.spatial_dims != 2:
        raise ValueError("3-D encoders have no timm equivalent (timm's ViT is 2-D)")
    if type(encoder.patch_embed) is not PatchEmbed:
        raise ValueError(
            "the convolutional stem (ViT_C) has no timm equivalent; timm's ViT uses a patchify convolution"
        )
    if cfg.norm_eps not in (1e-6, 1e-5):
        raise ValueError(f"norm_eps {cfg.norm_eps} has no timm ViT architecture (1e-6 standard, 1e-5 CLIP)")
    flags = _norm_flags(encoder)
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    P0 = encoder.num_pos_prefix_tokens
    if flags["pre_norm"]:
        bias = state.pop("patch_embed.proj.bias")
        state["pos_embed"][:, P0:] += bias
    no_embed_class = cfg.reg_tokens > 0
    if no_embed_class:  # timm's registers: no positions for any prefix token (DINOv2's layout)
        pos = state["pos_embed"]
        if P0:
            state["cls_token"] = state["cls_token"] + pos[:, :P0]
        state["pos_embed"] = pos[:, P0:].contiguous()
    img = encoder.img_size
    kwargs: dict[str, Any] = dict(
        img_size=list(img) if img[0] != img[1] else img[0],
        patch_size=list(cfg.patch_size) if isinstance(cfg.patch_size, tuple) else cfg.patch_size,
        in_chans=cfg.in_chans, num_classes=0, global_pool={"none": ""}.get(encoder.global_pool, encoder.global_pool),
        embed_dim=encoder.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias, class_token=cfg.class_token, init_values=cfg.init_values,
    )
    if cfg.rope or cfg.mlp_type != "mlp":
        return _eva_export(encoder, state, kwargs, flags, no_embed_class)
    if cfg.qkv_bias and not cfg.k_bias:  # timm's ViT has one qkv bias: the key part is the zero it was
        for i in range(cfg.depth):
            a = f"blocks.{i}.attn."
            q, v = state.pop(a + "q_bias"), state.pop(a + "v_bias")
            state[a + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    kwargs.update(pre_norm=flags["pre_norm"],
                  # PatchEncoder's default keeps the final norm on every token, also when mean pooling
                  fc_norm=flags["fc_norm"])
    # only what differs from timm's defaults, so older timm versions take the plain ViTs
    extra = dict(qk_norm=cfg.qk_norm, scale_attn_norm=cfg.attn_norm, scale_mlp_norm=cfg.mlp_norm,
                 reg_tokens=cfg.reg_tokens, no_embed_class=no_embed_class)
    kwargs.update({k: v for k, v in extra.items() if v})
    D, p = encoder.embed_dim, encoder.patch_embed.patch_size[0]
    size = _TIMM_SIZES.get((D, cfg.depth, cfg.num_heads), "base")
    if cfg.norm_eps == 1e-5:
        candidates = [f"vit_{size}_patch{p}_clip_224"]
    else:
        candidates = [f"vit_{size}_patch{p}_siglip_224"] if cfg.global_pool == "map" else []
        candidates += [f"vit_{size}_patch{p}_reg4_dinov2"] if cfg.reg_tokens else []
        candidates += [f"vit_{size}_patch{p}_224"]
    return state, {"arch": _existing_timm_arch(candidates, cfg.norm_eps), "kwargs": kwargs}


def _eva_export(
    encoder: PatchEncoder, state: dict[str, torch.Tensor], kwargs: dict[str, Any], flags: dict[str, bool],
    no_embed_class: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`timm_export` for timm's ``Eva`` (RoPE / SwiGLU encoders): renames and the Eva keyword arguments."""
    cfg = encoder.config
    if cfg.norm_eps != 1e-6:
        raise ValueError(f"timm's Eva uses LayerNorm eps 1e-6; this encoder has norm_eps {cfg.norm_eps}")
    if cfg.global_pool == "map" and encoder.num_prefix_tokens:
        raise ValueError("timm's Eva attention-pools its prefix tokens too; a MAP head with a class token or "
                         "registers has no Eva equivalent")
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        if cfg.qkv_bias and cfg.k_bias:  # Eva has q and v biases only
            q, k, v = state.pop(b + "attn.qkv.bias").chunk(3)
            if k.abs().max() > 0:
                raise ValueError("timm's Eva has no key bias, and this encoder's is not zero; "
                                 "build it with k_bias=False to train without one")
            state[b + "attn.q_bias"], state[b + "attn.v_bias"] = q, v
        for j in (1, 2):
            if b + f"ls{j}.gamma" in state:
                state[b + f"gamma_{j}"] = state.pop(b + f"ls{j}.gamma")
        if cfg.mlp_type == "swiglu" and cfg.mlp_norm:  # Eva's split SwiGLU: gate first
            for part in ("weight", "bias"):
                gate, value = state.pop(b + f"mlp.fc1.{part}").chunk(2)
                state[b + f"mlp.fc1_g.{part}"], state[b + f"mlp.fc1_x.{part}"] = gate, value
    ref = encoder.rope_ref_grid
    kwargs.update(
        qkv_fused=True, qk_norm=cfg.qk_norm, swiglu_mlp=cfg.mlp_type == "swiglu", scale_mlp=cfg.mlp_norm,
        scale_attn_inner=cfg.attn_norm, num_reg_tokens=cfg.reg_tokens, no_embed_class=no_embed_class,
        use_abs_pos_emb=True, use_rot_pos_emb=cfg.rope, ref_feat_shape=None if ref is None else list(ref),
        rope_temperature=cfg.rope_temperature, use_pre_transformer_norm=flags["pre_norm"],
        use_fc_norm=flags["fc_norm"], use_post_transformer_norm=not flags["fc_norm"],
    )
    if cfg.global_pool == "map":
        kwargs.update(attn_pool_num_heads=cfg.num_heads, attn_pool_mlp_ratio=cfg.mlp_ratio)
    size = {192: "tiny", 384: "small", 768: "base", 1024: "large"}.get(encoder.embed_dim, "base")
    return state, {"arch": _existing_timm_arch([f"eva02_{size}_patch14_224"], 1e-6, "eva02_base_patch14_224"),
                   "kwargs": kwargs}


def _existing_timm_arch(candidates: list[str], eps: float, fallback: str | None = None) -> str:
    """The first of ``candidates`` that timm (when installed) knows, else a generic name timm certainly has."""
    fallback = fallback or ("vit_base_patch16_clip_224" if eps == 1e-5 else "vit_base_patch16_224")
    try:
        import timm
    except ImportError:  # no timm here: a name timm certainly has
        return fallback
    return next((arch for arch in candidates if timm.is_model(arch)), fallback)


def vision_config_dict(config: VisionConfig) -> dict[str, Any]:
    """``VisionConfig`` as JSON-ready values (tuples become lists)."""
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
