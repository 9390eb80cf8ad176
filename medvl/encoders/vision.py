"""PatchEncoder: the shared Vision Transformer image encoder of medvl.

A ViT (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021,
arXiv:2010.11929) built from ``medvl.layers`` with timm's backbone interface
(``forward_features``, ``forward_head``, ``forward_intermediates``,
``set_grad_checkpointing``, ``no_weight_decay``) and timm's ``VisionTransformer``
parameter names, so a timm state dict loads with ``load_state_dict(strict=True)``.
Additions for vision-language pretraining:

* token reduction in training, the class token always kept: random patch dropout
  (FLIP: Li et al., "Scaling Language-Image Pre-training via Masking", CVPR 2023,
  arXiv:2212.00794) or a medical variant that drops background patches first
  (near-constant, dark patches: the zero padding, collimation and air outside the body
  that fill a large part of every radiograph) and only then random foreground ones;
* 3-D inputs (``spatial_dims=3``): a cuboid patch embedding for CT/MR volumes feeding
  the same blocks (:class:`medvl.layers.PatchEmbed3d`);
* position embeddings resampled on the fly (bicubic) when the input size differs from
  ``img_size``;
* LayerScale (CaiT, arXiv:2103.17239) and stochastic depth (arXiv:1603.09382).

The families users bring are ``VisionConfig`` fields of this one class, each loading
from timm/open_clip (:mod:`medvl.encoders.interop`) and writing back to timm:

* register tokens (``reg_tokens``; Darcet et al., "Vision Transformers Need Registers",
  ICLR 2024, arXiv:2309.16588; DINOv2-with-registers): learnt prefix tokens after the
  class token, without a position embedding, never dropped by token reduction;
* the SigLIP attention-pool head (``global_pool="map"``; Zhai et al., arXiv:2303.15343)
  and SigLIP without it (``"avg"``, or ``"none"`` for all tokens);
* EVA-02 (Fang et al., arXiv:2303.11331): 2-D axial rotary position embeddings
  (``rope``) on top of the absolute ones, SwiGLU MLPs (``mlp_type="swiglu"``), the
  MLP's sub-LN (``mlp_norm``), q/v biases without a key bias (``k_bias=False``);
* q/k normalisation (``qk_norm``; ViT-22B, arXiv:2302.05442) and an attention-output
  norm (``attn_norm``; EVA-CLIP).

Variants are registered by name; build them with
``medvl.encoders.create_encoder("vit_small_patch16", in_chans=1, img_size=224)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medvl.encoders.registry import register_encoder
import torch.nn.functional as F

from medvl.layers import (
    AttentionPoolLatent,
    Block,
    ConvStem,
    PatchEmbed,
    PatchEmbed3d,
    pad_rope,
    resample_abs_pos_embed,
    rope_2d,
    to_2tuple,
    to_3tuple,
)

__all__ = ["PatchEncoder", "VisionConfig"]

_POOLS = ("token", "avg", "map", "none")


@dataclass
class VisionConfig:
    """Hyper-parameters of a :class:`PatchEncoder`; each field says why it exists."""

    img_size: int | tuple[int, ...] = 224  # size the position embedding is learnt at; other sizes are resampled
    patch_size: int | tuple[int, ...] = 16  # patch side; sets the token count (img/patch)^2 and so the compute
    spatial_dims: Literal[2, 3] = 2  # 3: CT/MR volumes (B, C, D, H, W) with cuboid patches, same blocks
    stem: Literal["patch", "conv"] = "patch"  # "conv": ViT_C stem (Xiao et al. 2021), trains far faster from scratch
    in_chans: int = 1  # radiographs are single-channel; no need to triplicate into RGB
    embed_dim: int = 384  # token width D; the main capacity knob together with depth
    depth: int = 12  # number of Transformer blocks
    num_heads: int = 6  # attention heads; head_dim = embed_dim / num_heads (64 in standard ViTs)
    mlp_ratio: float = 4.0  # MLP hidden width / D, 4 as in the original Transformer
    qkv_bias: bool = True  # bias on q/k/v as in ViT/timm; needed to load their weights
    # image feature: class token, mean of patch tokens, SigLIP's attention-pool (MAP) head over the patch
    # tokens, or "none": every token unpooled (timm's global_pool="", for dense use of a pooled family)
    global_pool: Literal["token", "avg", "map", "none"] = "token"
    class_token: bool = True  # prepend a learnt [CLS] token (required by global_pool="token")
    drop_rate: float = 0.0  # dropout on the pooled feature before the head
    proj_drop_rate: float = 0.0  # dropout after attention projection and in the MLP; 0 for pretraining
    attn_drop_rate: float = 0.0  # dropout on attention probabilities; 0 for pretraining
    drop_path_rate: float = 0.0  # stochastic depth, rising linearly to this over depth; regularises deep ViTs
    patch_dropout: float = 0.0  # fraction of patch tokens dropped in training (FLIP), a cheap speed-up
    patch_dropout_mode: Literal["random", "background"] = "random"  # "background": drop empty border/air patches first
    init_values: float | None = None  # LayerScale init (e.g. 1e-5); None disables LayerScale
    norm_eps: float = 1e-6  # LayerNorm epsilon used by timm/big_vision ViTs
    pre_norm: bool = False  # LayerNorm before the blocks (CLIP's ln_pre, timm's norm_pre); for CLIP towers
    fc_norm: bool = False  # final LayerNorm on the pooled feature instead of every token (timm's mean-pool ViTs)
    num_classes: int = 0  # >0 adds a linear head (probing/fine-tuning); 0 returns pooled features
    reg_tokens: int = 0  # DINOv2-with-registers: learnt tokens after [CLS], no position, soak up attention artefacts
    qk_norm: bool = False  # LayerNorm on each head's q and k (ViT-22B, timm qk_norm=True): stable large-scale training
    k_bias: bool = True  # False: q and v biases only, the key bias fixed at 0 (EVA-02/BEiT, whose weights lack it)
    attn_norm: bool = False  # LayerNorm on the attention output before its projection (EVA-CLIP's inner_attn_ln)
    # "swiglu": gated SiLU MLP (EVA-02, DINOv2-giant); mlp_ratio is then the width of the gated product / D
    mlp_type: Literal["mlp", "swiglu"] = "mlp"
    mlp_norm: bool = False  # LayerNorm on the MLP's hidden activations before fc2 (EVA-02's sub-LN, timm scale_mlp)
    rope: bool = False  # 2-D axial rotary position embedding on the patch tokens' q/k (EVA-02), besides pos_embed
    # grid RoPE positions are scaled to at any input size (EVA's ref_feat_shape; 16 for EVA-02); None: patch indices
    rope_ref_grid: int | tuple[int, int] | None = None
    rope_temperature: float = 10000.0  # RoPE frequency base (EVA-02: 10000)

    def __post_init__(self) -> None:
        if self.global_pool not in _POOLS:
            raise ValueError(f"global_pool must be one of {_POOLS}, got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1), got {self.patch_dropout}")
        if isinstance(self.img_size, list):  # YAML gives lists
            self.img_size = tuple(self.img_size)
        if isinstance(self.patch_size, list):
            self.patch_size = tuple(self.patch_size)
        if self.patch_dropout_mode not in ("random", "background"):
            raise ValueError(f"patch_dropout_mode must be 'random' or 'background', got {self.patch_dropout_mode!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.spatial_dims == 3 and self.stem != "patch":
            raise ValueError("3-D encoders use the patch stem (stem='patch')")
        if self.reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.mlp_type not in ("mlp", "swiglu"):
            raise ValueError(f"mlp_type must be 'mlp' or 'swiglu', got {self.mlp_type!r}")
        if isinstance(self.rope_ref_grid, list):
            self.rope_ref_grid = tuple(self.rope_ref_grid)
        if self.rope:
            if self.spatial_dims != 2:
                raise ValueError("rope is 2-D axial; volume encoders (spatial_dims=3) use pos_embed only")
            if (self.embed_dim // self.num_heads) % 4:
                raise ValueError(f"rope needs a head width divisible by 4, got {self.embed_dim // self.num_heads}")


def _take_indices(num_blocks: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """Absolute block indices: None -> all, int n -> last n, list -> those (negatives from end)."""
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"last-n indices {indices} out of range 1..{num_blocks}")
        return list(range(num_blocks - indices, num_blocks))
    take = []
    for i in indices:
        idx = num_blocks + i if i < 0 else i
        if not 0 <= idx < num_blocks:
            raise ValueError(f"block index {i} out of range for {num_blocks} blocks")
        take.append(idx)
    return take


def _init_weights(module: nn.Module) -> None:
    """timm's ``init_weights_vit_timm``: Linear trunc_normal(.02) with zero bias.

    The patch-embedding convolution keeps PyTorch's default init and LayerNorm its
    ones/zeros, as in timm.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class PatchEncoder(nn.Module):
    """Vision Transformer image encoder with timm's backbone interface.

    Args:
        config: Hyper-parameters; defaults to ``VisionConfig()``.
        **overrides: Fields replacing those of ``config``.

    Attributes:
        config: The resolved :class:`VisionConfig`.
        num_features: Width of the pooled feature (= ``embed_dim``).
        embed_dim: Token width ``D``.
        patch_size: Patch side length.
        grid_size: Patch grid ``(gh, gw)`` at ``img_size``.
        num_prefix_tokens: Tokens before the patches: the class token (if any), then
            ``reg_tokens`` registers.
        num_pos_prefix_tokens: Prefix tokens with a position embedding (the class
            token); ``pos_embed`` is ``(1, num_pos_prefix_tokens + N, D)``.
    """

    def __init__(self, config: VisionConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or VisionConfig(), **overrides)
        self.config = config
        self.spatial_dims = config.spatial_dims
        self.img_size = to_3tuple(config.img_size) if config.spatial_dims == 3 else to_2tuple(config.img_size)
        self.patch_size = config.patch_size
        self.in_chans = config.in_chans
        self.num_features = self.embed_dim = config.embed_dim
        self.num_classes = config.num_classes
        self.global_pool = config.global_pool
        self.has_class_token = config.class_token
        self.num_pos_prefix_tokens = 1 if config.class_token else 0
        self.num_reg_tokens = config.reg_tokens
        self.num_prefix_tokens = self.num_pos_prefix_tokens + config.reg_tokens
        self.grad_checkpointing = False
        norm_layer = partial(nn.LayerNorm, eps=config.norm_eps)
        D = config.embed_dim

        stem_cls = PatchEmbed3d if config.spatial_dims == 3 else ConvStem if config.stem == "conv" else PatchEmbed
        self.patch_embed = stem_cls(
            img_size=self.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            embed_dim=D,
            dynamic_img_size=True,  # any multiple of the patch size; pos_embed is resampled
        )
        self.grid_size = self.patch_embed.grid_size
        num_patches = self.patch_embed.num_patches

        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if config.class_token else None
        # registers carry no position (DINOv2): they are not part of the image
        self.reg_token = nn.Parameter(torch.zeros(1, config.reg_tokens, D)) if config.reg_tokens else None
        # one position for the class token and one per patch, as in the original ViT/timm
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_pos_prefix_tokens + num_patches, D))
        ref = config.rope_ref_grid
        self.rope_ref_grid = None if ref is None else to_2tuple(ref)

        # stochastic depth rises linearly from 0 to drop_path_rate (plain Python, so
        # building on the meta device needs no tensor data)
        dpr = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.Sequential(
            *[
                Block(
                    dim=D,
                    num_heads=config.num_heads,
                    mlp_ratio=config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    proj_drop=config.proj_drop_rate,
                    attn_drop=config.attn_drop_rate,
                    init_values=config.init_values,
                    drop_path=dpr[i],
                    norm_layer=norm_layer,
                    qk_norm=config.qk_norm,
                    k_bias=config.k_bias,
                    attn_norm=config.attn_norm,
                    mlp_type=config.mlp_type,
                    mlp_norm=config.mlp_norm,
                )
                for i in range(config.depth)
            ]
        )
        self.norm_pre = norm_layer(D) if config.pre_norm else nn.Identity()
        self.norm = nn.Identity() if config.fc_norm else norm_layer(D)
        self.attn_pool = (
            AttentionPoolLatent(D, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, norm_layer=norm_layer)
            if config.global_pool == "map" else None
        )
        self.fc_norm = norm_layer(D) if config.fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(D, config.num_classes) if config.num_classes > 0 else nn.Identity()
        self.init_weights()

    # ------------------------------------------------------------------ setup
    def init_weights(self) -> None:
        """Re-initialises all weights as timm does (see ``_init_weights``)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        self.apply(_init_weights)
        if self.attn_pool is not None:
            self.attn_pool.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay (embeddings, as in timm)."""
        names = {"pos_embed"}
        if self.cls_token is not None:
            names.add("cls_token")
        if self.reg_token is not None:
            names.add("reg_token")
        return names

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward to save memory."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The classification head (``Identity`` when ``num_classes == 0``)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replaces the head, e.g. for linear probing on a new label set."""
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ValueError(f"global_pool must be one of {_POOLS}, got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs a class token")
            if global_pool == "map" and self.attn_pool is None:
                raise ValueError("global_pool='map' needs the attention-pool head; build with global_pool='map'")
            if global_pool != "map":
                self.attn_pool = None  # as timm: leaving the MAP head drops it
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    # ---------------------------------------------------------------- forward
    def _pos_embed(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Adds (resampled) position embeddings to patch tokens ``(B, N, D)`` and prepends the prefix tokens."""
        P0 = self.num_pos_prefix_tokens
        pos_embed = resample_abs_pos_embed(
            self.pos_embed, new_grid=grid, old_grid=self.grid_size, num_prefix_tokens=P0,
        )  # (1, P0 + N, D)
        x = x + pos_embed[:, P0:]  # (B, N, D)
        cls = None if self.cls_token is None else self.cls_token + pos_embed[:, :P0]  # (1, 1, D)
        return self._prepend_prefix(x, cls)  # (B, P + N, D)

    def _prepend_prefix(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        """``[cls, registers, patches]``: the order of timm's ViT and DINOv2."""
        prefix = [t.expand(x.shape[0], -1, -1).to(x.dtype) for t in (cls, self.reg_token) if t is not None]
        return torch.cat([*prefix, x], dim=1) if prefix else x

    def background_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Marks the patches of each image that hold no anatomy.

        A patch is background when it is nearly constant (standard deviation under 2%
        of the image's intensity range) and dark (mean in the lowest 10% of that range):
        the zero padding of a letterboxed image, collimated borders and air. Works on
        raw or normalised input, since both thresholds are relative to each image.

        Args:
            images: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.

        Returns:
            ``(B, N)`` bool, in the patch order of :meth:`forward_features`.
        """
        pool = F.avg_pool3d if self.spatial_dims == 3 else F.avg_pool2d
        ps = self.patch_embed.patch_size
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            # fp32 island: variances of nearly constant patches cancel catastrophically in half.
            x = images.float().mean(dim=1, keepdim=True)  # (B, 1, *S)
            mean = pool(x, ps, ps)  # (B, 1, *grid)
            std = (pool(x * x, ps, ps) - mean * mean).clamp_min(0).sqrt()
            flat = x.flatten(1)
            lo, hi = flat.amin(1), flat.amax(1)  # (B,)
            span = (hi - lo).clamp_min(1e-6).view(-1, *[1] * (x.ndim - 1))
            lo = lo.view(-1, *[1] * (x.ndim - 1))
            bg = (std < 0.02 * span) & (mean - lo < 0.10 * span)
        return bg.flatten(1)  # (B, N)

    def _patch_dropout(self, x: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Keeps a subset of patch tokens per sample (training only); prefix tokens stay.

        ``random`` (FLIP) keeps a uniformly random subset. ``background`` drops the
        background patches (:meth:`background_patches`) first, in random order, and
        random foreground patches only when there are too few of them; the kept set is
        still random, so the model sees every kind of patch over an epoch. The class
        token and the registers are never dropped.
        """
        return self._keep(x, self._keep_indices(x, images))

    def _keep_indices(self, x: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor | None:
        """Indices ``(B, keep)`` (raster order) of the patch tokens of ``x`` that :meth:`_patch_dropout` keeps.

        None when nothing is dropped (evaluation, or ``patch_dropout == 0``).
        """
        p = self.config.patch_dropout
        if not self.training or p == 0.0:
            return None
        B, N = x.shape[0], x.shape[1] - self.num_prefix_tokens
        keep = max(1, int(N * (1.0 - p)))
        score = torch.rand(B, N, device=x.device)  # in [0, 1): uniform order
        if self.config.patch_dropout_mode == "background" and images is not None:
            score = score + self.background_patches(images).to(score.dtype)  # background sorts last
        idx = torch.argsort(score, dim=-1)[:, :keep]  # (B, keep), lowest scores kept
        return idx.sort(dim=-1).values  # keep raster order

    def _keep(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """The prefix tokens of ``x`` and its patch tokens at ``idx`` ``(B, keep)``."""
        if idx is None:
            return x
        P = self.num_prefix_tokens
        prefix, patches = x[:, :P], x[:, P:]  # (B, P, D), (B, N, D)
        patches = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))  # (B, keep, D)
        return torch.cat([prefix, patches], dim=1)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed_with_rope(x)[0]

    def _embed_with_rope(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens ``(B, P + N', D)`` entering the blocks and the rotary embedding of their patches.

        The rotary embedding is None without ``rope``; else one row per token,
        ``(P + N, 2 * head_dim)``, or ``(B, P + N', 2 * head_dim)`` for the patches that
        patch dropout kept; prefix tokens get identity rotations (:func:`~medvl.layers.pad_rope`).
        """
        grid = self.patch_embed.dynamic_feat_size(x.shape[2:])
        if self._fused_patch_embed(x):
            tokens = self._embed_fused(x, grid)  # (B, P + N, D)
        else:
            tokens = self.patch_embed(x)  # (B, N, D)
            tokens = self._pos_embed(tokens, grid)  # (B, P + N, D)
        idx = self._keep_indices(tokens, x)
        tokens = self._keep(tokens, idx)
        rope = self.rope_embed(grid, device=tokens.device) if self.config.rope else None
        if rope is not None:
            if idx is not None:
                rope = rope[idx]  # (B, N', 2 * hd): the kept patches' rows
            rope = pad_rope(rope, self.num_prefix_tokens)  # prefix tokens: identity rotations
        # norm_pre is per-token, so applying it after patch dropout changes nothing but the cost
        return self.norm_pre(tokens), rope  # (B, P + N', D), N' <= N in training

    def rope_embed(self, grid: tuple[int, ...], device: torch.device | str | None = None) -> torch.Tensor:
        """Rotary embedding ``(gh * gw, 2 * head_dim)`` of a patch grid (``rope=True``; see :func:`~medvl.layers.rope_2d`)."""
        return rope_2d(tuple(grid), self.embed_dim // self.config.num_heads, ref_grid=self.rope_ref_grid,
                       temperature=self.config.rope_temperature, device=device)

    def _fused_patch_embed(self, x: torch.Tensor) -> bool:
        """The Triton patch GEMM + bias + position add applies: plain 2-D patchify stem, eager."""
        if torch.compiler.is_compiling() or type(self.patch_embed) is not PatchEmbed:
            return False
        from medvl.kernels import use_triton

        return isinstance(self.patch_embed.norm, nn.Identity) and use_triton(x, self.pos_embed)

    def _embed_fused(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Same result as ``_pos_embed(patch_embed(x))`` with the patch embedding in one kernel."""
        from medvl.kernels import patch_embed_pos, patchify

        self.patch_embed._check_input(x)
        pos = resample_abs_pos_embed(self.pos_embed, new_grid=grid, old_grid=self.grid_size,
                                     num_prefix_tokens=self.num_pos_prefix_tokens)  # (1, P0 + N, D)
        P0 = self.num_pos_prefix_tokens
        proj = self.patch_embed.proj
        patches = patchify(x, self.patch_embed.patch_size)  # (B, N, C * ph * pw)
        tokens = patch_embed_pos(patches, proj.weight, proj.bias, pos[:, P0:])  # (B, N, D)
        cls = None if self.cls_token is None else self.cls_token + pos[:, :P0]  # (1, 1, D)
        return self._prepend_prefix(tokens, cls)  # (B, P + N, D)

    def _run_block(self, blk: nn.Module, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(blk, x, rope=rope, use_reentrant=False)
        return blk(x, rope=rope)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes images into normalised tokens.

        Args:
            x: Images, ``(B, C, H, W)`` with H and W multiples of the patch size
                (volumes ``(B, C, D, H, W)`` when ``spatial_dims=3``).

        Returns:
            Tokens after the final norm, ``(B, P + N, D)``: the class token first (if
            any), then patch tokens in row-major order (a random subset in training
            when ``patch_dropout > 0``).
        """
        x, rope = self._embed_with_rope(x)
        for blk in self.blocks:
            x = self._run_block(blk, x, rope)
        return self.norm(x)

    def forward_trunk(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        """Tokens after the embedding and the first ``stop`` blocks, before the final norm.

        With :meth:`forward_rest`, ``forward_rest(forward_trunk(x, k), k, x.shape[2:])``
        equals ``forward_features(x)`` (without patch dropout): a partly frozen encoder's
        feature cache keeps the frozen trunk's output and runs only the trained blocks.
        """
        x, rope = self._embed_with_rope(x)
        for blk in list(self.blocks)[:stop]:
            x = self._run_block(blk, x, rope)
        return x

    def forward_rest(self, x: torch.Tensor, start: int, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        """Blocks ``start:`` and the final norm on :meth:`forward_trunk`'s tokens of an input of ``spatial_shape``."""
        rope = None
        if self.config.rope:
            grid = self.patch_embed.dynamic_feat_size(tuple(spatial_shape))
            rope = pad_rope(self.rope_embed(grid, device=x.device), self.num_prefix_tokens)
        for blk in list(self.blocks)[start:]:
            x = self._run_block(blk, x, rope)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Pools tokens ``(B, P + N, D)`` to ``(B, D)``, then ``fc_norm``.

        Class token, mean of the patch tokens, or the attention-pool head over the patch
        tokens (prefix tokens excluded, as timm's ViT); ``"none"`` returns all tokens.
        """
        if self.attn_pool is not None:
            return self.fc_norm(self.attn_pool(x[:, self.num_prefix_tokens :]))
        if self.global_pool == "avg":
            return self.fc_norm(x[:, self.num_prefix_tokens :].mean(dim=1))
        if self.global_pool == "none":
            return self.fc_norm(x)
        return self.fc_norm(x[:, 0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pools tokens and applies the head.

        Args:
            x: Output of :meth:`forward_features`, ``(B, P + N, D)``.
            pre_logits: Return the pooled feature ``(B, D)`` without the head.

        Returns:
            ``(B, num_classes)``, or ``(B, D)`` when ``pre_logits`` or ``num_classes == 0``.
        """
        x = self.head_drop(self.pool(x))  # (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``forward_head(forward_features(x))``: ``(B, C, H, W) -> (B, num_classes or D)``."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        output_fmt: Literal["NCHW", "NLC"] = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """Runs the encoder and returns the outputs of selected blocks (timm interface).

        Args:
            x: Images, ``(B, C, H, W)``.
            indices: Blocks to take: None for all, an int ``n`` for the last ``n``, or a
                list of block indices (negative counts from the end).
            norm: Apply the final norm to each intermediate.
            output_fmt: ``"NCHW"`` for ``(B, D, gh, gw)`` feature maps (``(B, D, gd, gh, gw)``
                for volumes), ``"NLC"`` for
                ``(B, N, D)`` patch tokens.
            intermediates_only: Return only the intermediates list.
            return_prefix_tokens: Return ``(patch_features, prefix_tokens (B, P, D))``
                pairs instead of patch features alone.

        Returns:
            ``(final_tokens (B, P + N, D), intermediates)``, or ``intermediates`` alone.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = _take_indices(len(self.blocks), indices)
        B = x.shape[0]
        grid = self.patch_embed.dynamic_feat_size(x.shape[2:])
        x, rope = self._embed_with_rope(x)  # (B, P + N, D)
        if output_fmt == "NCHW" and x.shape[1] != self.num_prefix_tokens + math.prod(grid):
            raise ValueError("output_fmt='NCHW' needs all patches; patch dropout is active (use NLC)")

        intermediates = []
        # with intermediates_only, blocks after the last taken one need not run
        blocks = self.blocks[: max(take) + 1] if intermediates_only else self.blocks
        for i, blk in enumerate(blocks):
            x = self._run_block(blk, x, rope)
            if i in take:
                intermediates.append(self.norm(x) if norm else x)

        P = self.num_prefix_tokens
        prefix = [y[:, :P] for y in intermediates]  # each (B, P, D)
        feats = [y[:, P:] for y in intermediates]  # each (B, N, D)
        if output_fmt == "NCHW":
            feats = [y.reshape(B, *grid, -1).movedim(-1, 1).contiguous() for y in feats]  # (B, D, *grid)
        out: list[Any] = list(zip(feats, prefix)) if return_prefix_tokens else feats
        if intermediates_only:
            return out
        return self.norm(x), out


# ------------------------------------------------------------------ variants
# One row per registered variant: the VisionConfig fields it fixes and what it is for.
# Each row becomes a factory ``name(**overrides)`` (overrides win over the fixed fields)
# registered under ``name`` and bound as a module attribute of the same name.
_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "test_vit_tiny_patch8": (
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
        "Test-only ViT: 32 px, 4x4 patches, D=32, 2 blocks. Runs in milliseconds on CPU.",
    ),
    "test_vit_tiny_gap_patch8": (
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
             class_token=False, global_pool="avg", init_values=1e-5),
        "Test-only ViT exercising the other paths: no class token, mean pool, LayerScale.",
    ),
    "vit_nano_patch16": (
        dict(patch_size=16, embed_dim=128, depth=4, num_heads=4),
        "ViT-Nano/16 (D=128, 4 blocks, 4 heads): a quick CPU demo model.",
    ),
    "vit_micro_patch8": (
        dict(img_size=112, patch_size=8, embed_dim=192, depth=6, num_heads=3),
        "ViT-Micro/8 at 112 px (D=192, 6 blocks, 3 heads): small but fine-grained.",
    ),
    "vit_tiny_patch16": (
        dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
        "ViT-Ti/16 (D=192, 12 blocks, 3 heads; DeiT, arXiv:2012.12877).",
    ),
    "vit_small_patch16": (
        dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
        "ViT-S/16 (D=384, 12 blocks, 6 heads; DeiT, arXiv:2012.12877).",
    ),
    "vit_small_patch14": (
        dict(patch_size=14, embed_dim=384, depth=12, num_heads=6),
        "ViT-S/14 (D=384, 12 blocks, 6 heads; the DINOv2 small geometry).",
    ),
    "vit_base_patch16": (
        dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
        "ViT-B/16 (D=768, 12 blocks, 12 heads; arXiv:2010.11929).",
    ),
    "vit_base_patch14": (
        dict(patch_size=14, embed_dim=768, depth=12, num_heads=12),
        "ViT-B/14 (D=768, 12 blocks, 12 heads; the DINOv2 base geometry).",
    ),
    "vit_large_patch16": (
        dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
        "ViT-L/16 (D=1024, 24 blocks, 16 heads; arXiv:2010.11929).",
    ),
    "vit_large_patch14": (
        dict(patch_size=14, embed_dim=1024, depth=24, num_heads=16),
        "ViT-L/14 (D=1024, 24 blocks, 16 heads; the CLIP/DINOv2 large geometry).",
    ),
    "test_vitc_tiny_patch8": (
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, stem="conv"),
        "Test-only ViT with the convolutional stem.",
    ),
    "vitc_nano_patch16": (
        dict(patch_size=16, embed_dim=128, depth=4, num_heads=4, stem="conv"),
        "ViT_C-Nano/16: ViT-Nano with a convolutional stem (Xiao et al. 2021); the CPU demo encoder.",
    ),
    "vitc_small_patch16": (
        dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, stem="conv"),
        "ViT_C-S/16: ViT-S with a convolutional stem, for training from scratch on small datasets.",
    ),
    # ---- the families users bring (timm / open_clip names in the summaries)
    "test_vit_tiny_reg4_patch8": (
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reg_tokens=4, init_values=1e-5),
        "Test-only DINOv2-style ViT: 4 register tokens and LayerScale.",
    ),
    "test_vit_tiny_siglip_patch8": (
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, class_token=False, global_pool="map"),
        "Test-only SigLIP-style ViT: no class token, attention-pool (MAP) head.",
    ),
    "test_vit_tiny_qknorm_patch8": (
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, qk_norm=True),
        "Test-only ViT with q/k normalisation.",
    ),
    "test_eva02_tiny_patch8": (
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4 * 2 / 3, mlp_type="swiglu",
             mlp_norm=True, k_bias=False, rope=True, rope_ref_grid=4, global_pool="avg", fc_norm=True),
        "Test-only EVA-02-style ViT: RoPE, SwiGLU with sub-LN, no key bias, mean pool + fc_norm.",
    ),
    "vit_small_patch14_reg4_dinov2": (
        dict(img_size=518, patch_size=14, embed_dim=384, depth=12, num_heads=6, init_values=1e-5, reg_tokens=4),
        "DINOv2 ViT-S/14 with 4 registers at 518 px (timm vit_small_patch14_reg4_dinov2; arXiv:2309.16588).",
    ),
    "vit_base_patch14_reg4_dinov2": (
        dict(img_size=518, patch_size=14, embed_dim=768, depth=12, num_heads=12, init_values=1e-5, reg_tokens=4),
        "DINOv2 ViT-B/14 with 4 registers at 518 px (timm vit_base_patch14_reg4_dinov2).",
    ),
    "vit_base_patch16_siglip": (
        dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, class_token=False, global_pool="map"),
        "SigLIP / SigLIP 2 ViT-B/16 with the MAP head (timm vit_base_patch16_siglip_224[.v2_webli]).",
    ),
    "vit_base_patch16_siglip_gap": (
        dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, class_token=False, global_pool="avg"),
        "SigLIP ViT-B/16 mean-pooled instead of the MAP head (timm vit_base_patch16_siglip_gap_224).",
    ),
    "vit_so400m_patch14_siglip": (
        dict(patch_size=14, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362, class_token=False,
             global_pool="map"),
        "SigLIP / SigLIP 2 SoViT-400m/14 with the MAP head (timm vit_so400m_patch14_siglip_224).",
    ),
    "eva02_tiny_patch14": (
        dict(patch_size=14, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4 * 2 / 3, mlp_type="swiglu",
             k_bias=False, rope=True, rope_ref_grid=16, global_pool="avg", fc_norm=True),
        "EVA-02 Ti/14: RoPE + SwiGLU, q/v biases, mean pool (timm eva02_tiny_patch14_224; arXiv:2303.11331).",
    ),
    "eva02_small_patch14": (
        dict(patch_size=14, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4 * 2 / 3, mlp_type="swiglu",
             k_bias=False, rope=True, rope_ref_grid=16, global_pool="avg", fc_norm=True),
        "EVA-02 S/14 (timm eva02_small_patch14_224).",
    ),
    "eva02_base_patch14": (
        dict(patch_size=14, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4 * 2 / 3, mlp_type="swiglu",
             mlp_norm=True, k_bias=False, rope=True, rope_ref_grid=16, global_pool="avg", fc_norm=True),
        "EVA-02 B/14 with the MLP sub-LN (timm eva02_base_patch14_224).",
    ),
    "test_vit3d_tiny_patch8": (
        dict(spatial_dims=3, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
        "Test-only volume ViT: 32^3 input, 8^3 patches.",
    ),
    "vit3d_small_patch16": (
        dict(spatial_dims=3, img_size=96, patch_size=16, embed_dim=384, depth=12, num_heads=6),
        "Volume ViT-S with 16^3 patches on 96^3 crops (the UNETR/Swin-UNETR CT crop size).",
    ),
    "vit3d_small_patch4x16": (
        dict(spatial_dims=3, img_size=(32, 224, 224), patch_size=(4, 16, 16), embed_dim=384,
             depth=12, num_heads=6),
        "Volume ViT-S with anisotropic 4x16x16 patches for thick-slice series (32 x 224 x 224).",
    ),
    "vit3d_base_patch16": (
        dict(spatial_dims=3, img_size=96, patch_size=16, embed_dim=768, depth=12, num_heads=12),
        "Volume ViT-B with 16^3 patches on 96^3 crops.",
    ),
}


def _variant_factory(name: str, fixed: dict[str, Any], summary: str) -> Callable[..., PatchEncoder]:
    """The registrable factory of one ``_VARIANTS`` row, named ``name``."""

    def factory(**overrides: Any) -> PatchEncoder:
        return PatchEncoder(VisionConfig(**{**fixed, **overrides}))

    factory.__name__ = factory.__qualname__ = name
    fields = ", ".join(f"{k}={v!r}" for k, v in fixed.items())
    factory.__doc__ = (
        f"{summary}\n\nFixes ``{fields}``; keyword overrides replace any "
        ":class:`VisionConfig` field, these included."
    )
    return factory


for _name, (_fixed, _summary) in _VARIANTS.items():
    globals()[_name] = register_encoder(_variant_factory(_name, _fixed, _summary))
del _name, _fixed, _summary
