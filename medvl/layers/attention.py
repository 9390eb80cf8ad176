"""Multi-head self-attention and the pre-norm Transformer block built on it.

``Attention`` is the scaled dot-product multi-head self-attention of Vaswani et al.,
"Attention Is All You Need" (NeurIPS 2017, arXiv:1706.03762). ``Block`` is the pre-norm
ViT encoder block of Dosovitskiy et al. (ICLR 2021, arXiv:2010.11929, Eq. 2-3), with
optional LayerScale (Touvron et al., "Going deeper with Image Transformers", CaiT,
ICCV 2021, arXiv:2103.17239) and stochastic depth / DropPath (Huang et al., ECCV 2016,
arXiv:1603.09382) on each residual branch.

Options the families medvl loads need: q/k normalisation (a LayerNorm per head on
queries and keys; Dehghani et al., "Scaling Vision Transformers to 22 Billion
Parameters", arXiv:2302.05442; timm ``qk_norm``), q and v biases without a key bias
(BEiT/EVA), a LayerNorm on the attention output before its projection (EVA-CLIP's
``inner_attn_ln``, timm ``scale_attn_norm``), 2-D rotary position embeddings
(:mod:`medvl.layers.rope`, EVA-02), and a gated (SwiGLU) or sub-LN MLP
(:mod:`medvl.layers.mlp`).

Two paths compute attention, as in timm's ``fused_attn``: the fused path calls
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels); the reference
path spells the maths out. ``MEDVL_FUSED=0`` in the environment selects the reference
path for modules built afterwards; ``module.fused_attn = False`` switches one module.
Module and parameter names follow timm's ``VisionTransformer`` (``norm1``, ``attn.qkv``,
``attn.proj``, ``ls1.gamma``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) so that timm weights
load with a straight state-dict copy.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from medvl.layers.mlp import GluMlp, Mlp
from medvl.layers.rope import apply_rope

__all__ = ["Attention", "Block", "DropPath", "LayerScale", "drop_path", "fused_attn_default"]

# Largest attention matrix (B * heads * N * N elements) for which half-precision training on
# the CPU spells the maths out instead of calling SDPA (see ``_sdpa``); 2**26
# elements are 256 MB of fp32 scores per block.
CPU_MATH_ATTN_MAX_ELEMENTS = 2**26


def fused_attn_default() -> bool:
    """Whether new ``Attention`` modules use the fused SDPA path.

    The one switch of :mod:`medvl.kernels` (``set_fused`` / ``MEDVL_FUSED``) governs it.
    """
    from medvl.kernels import fused_enabled

    return fused_enabled()


def _sdpa(q: torch.Tensor, fused: bool) -> bool:
    """Whether the fused SDPA path runs for queries ``q`` ``(B, nh, N, hd)``.

    Off when ``fused`` is off, and for half-precision training on the CPU: there
    PyTorch's flash-attention backward is several times slower than the spelled-out
    maths (ViT-S/16 at 112 px, batch 32, bf16 autocast: a whole training step 1.36x
    faster with the reference path; 1.12x at 224 px) while the fp32 statistics of the
    reference softmax lose nothing. Large attention matrices keep SDPA for memory.
    """
    if not fused:
        return False
    slow_backward = (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.requires_grad
        and q.shape[0] * q.shape[1] * q.shape[2] ** 2 <= CPU_MATH_ATTN_MAX_ELEMENTS
    )
    return not slow_backward


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    fused: bool,
    attn_mask: torch.Tensor | None = None,
    attn_drop: nn.Dropout | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention of ``(B, nh, Nq, hd)`` queries over ``(B, nh, N, hd)`` keys/values.

    The fused SDPA path or the readable reference (softmax statistics in fp32), chosen by
    :func:`_sdpa`; shared by :class:`Attention` and the attention-pool head.

    Args:
        attn_mask: Broadcastable to ``(B, nh, Nq, N)``; boolean (True = may attend) or additive float.
        attn_drop: Dropout on the attention probabilities (active in training mode).

    Returns:
        ``(B, nh, Nq, hd)``.
    """
    drop = attn_drop is not None and attn_drop.training
    if _sdpa(q, fused):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=attn_drop.p if drop else 0.0)
    attn = (q * scale) @ k.transpose(-2, -1)  # (B, nh, Nq, N)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    # fp32 island: softmax statistics in fp32 so bf16/fp16 logits do not lose
    # mass in the normaliser; probabilities go back to the compute dtype.
    attn = attn.float().softmax(dim=-1).to(v.dtype)
    if attn_drop is not None:
        attn = attn_drop(attn)
    return attn @ v


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence.

    Args:
        dim: Token width ``D``; must be divisible by ``num_heads``.
        num_heads: Number of attention heads.
        qkv_bias: Whether the q/k/v projection has a bias.
        attn_drop: Dropout on the attention probabilities (training only).
        proj_drop: Dropout after the output projection.
        qk_norm: LayerNorm (``norm_layer``) on each head's queries and keys.
        k_bias: With ``qkv_bias``, whether keys have a bias too. False gives BEiT/EVA's
            layout: ``qkv`` without bias plus ``q_bias`` and ``v_bias`` parameters, the key
            bias a fixed zero buffer.
        attn_norm: ``norm_layer`` on the attention output before ``proj`` (EVA-CLIP).
        norm_layer: Norm class for ``qk_norm`` and ``attn_norm``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qk_norm: bool = False,
        k_bias: bool = True,
        attn_norm: bool = False,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn_default()

        split_bias = qkv_bias and not k_bias
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias and not split_bias)
        if split_bias:  # names as BEiT/EVA (timm ``EvaAttention``)
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = norm_layer(dim) if attn_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rope: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attends every token to every token.

        Args:
            x: Tokens, ``(B, N, D)``.
            attn_mask: Optional mask broadcastable to ``(B, heads, N, N)``; boolean
                (True = may attend) or additive float, as ``F.scaled_dot_product_attention``.
            rope: Optional rotary embedding, one row per token, ``(N, 2 * head_dim)`` or
                ``(B, N, 2 * head_dim)`` (:func:`medvl.layers.rope.rope_2d` with identity
                rows for prefix tokens, :func:`medvl.layers.rope.pad_rope`).

        Returns:
            Updated tokens, ``(B, N, D)``.
        """
        B, N, D = x.shape
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            qkv = F.linear(x, self.qkv.weight, torch.cat([self.q_bias, self.k_bias, self.v_bias]))
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, N, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)

        x = attend(q, k, v, scale=self.scale, fused=self.fused_attn, attn_mask=attn_mask,
                   attn_drop=self.attn_drop)  # (B, nh, N, hd)

        x = self.norm(x.transpose(1, 2).reshape(B, N, D))  # (B, N, D)
        return self.proj_drop(self.proj(x))


class LayerScale(nn.Module):
    """Per-channel learnt scaling of a residual branch (CaiT, arXiv:2103.17239).

    Args:
        dim: Channel width.
        init_values: Initial value of every scale (small, e.g. 1e-5, so a deep block
            starts close to identity).
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scales the last dimension: ``(..., D) -> (..., D)``."""
        return x * self.gamma


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zeros whole samples of a residual branch with probability ``drop_prob``.

    Surviving samples are scaled by ``1 / (1 - drop_prob)`` so the expectation is kept.
    Identity when not training or when ``drop_prob == 0``.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # (B, 1, 1, ...): one draw per sample
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al., arXiv:1603.09382) as a module."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drops the branch for random samples in training mode."""
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Block(nn.Module):
    """Pre-norm Transformer encoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        dim: Token width ``D``.
        num_heads: Number of attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim`` (for ``mlp_type="swiglu"``
            the width of the gated product).
        qkv_bias: Whether the q/k/v projection has a bias.
        proj_drop: Dropout after the attention projection and in the MLP.
        attn_drop: Dropout on attention probabilities.
        init_values: LayerScale initial value; None disables LayerScale.
        drop_path: Stochastic depth probability for both residual branches.
        act_layer: MLP activation class (the gate's SiLU for ``mlp_type="swiglu"``).
        norm_layer: Norm class, called with ``dim``. Default LayerNorm(eps=1e-6) as in
            timm/big_vision ViTs. Under CUDA autocast ``layer_norm`` already computes its
            statistics in fp32.
        qk_norm: Normalise queries and keys per head (see :class:`Attention`).
        k_bias: Key bias besides the q/v biases (see :class:`Attention`).
        attn_norm: Norm on the attention output before its projection.
        mlp_type: ``"mlp"`` (GELU MLP) or ``"swiglu"`` (:class:`~medvl.layers.mlp.GluMlp`).
        mlp_norm: Norm on the MLP's hidden activations (EVA-02's sub-LN).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] | None = None,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        qk_norm: bool = False,
        k_bias: bool = True,
        attn_norm: bool = False,
        mlp_type: str = "mlp",
        mlp_norm: bool = False,
    ) -> None:
        super().__init__()
        if mlp_type not in ("mlp", "swiglu"):
            raise ValueError(f"mlp_type must be 'mlp' or 'swiglu', got {mlp_type!r}")
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
            qk_norm=qk_norm, k_bias=k_bias, attn_norm=attn_norm, norm_layer=norm_layer,
        )
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

        self.norm2 = norm_layer(dim)
        mlp_cls = GluMlp if mlp_type == "swiglu" else Mlp
        act = act_layer or (nn.SiLU if mlp_type == "swiglu" else nn.GELU)
        self.mlp = mlp_cls(dim, int(dim * mlp_ratio), act_layer=act, drop=proj_drop,
                           norm_layer=norm_layer if mlp_norm else None)
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rope: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Applies the block: ``(B, N, D) -> (B, N, D)``.

        ``rope`` is the rotary embedding of the patch tokens (see :class:`Attention`).
        Where a Triton kernel can run (CUDA, or the interpreter; see
        :func:`medvl.kernels.use_triton`), the first residual add and ``norm2`` are one
        fused kernel with fp32 statistics; elsewhere the two plain ops below run.
        """
        from medvl.kernels import fused_add_layernorm, use_triton

        branch = self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, rope=rope)))
        # Under torch.compile, Inductor fuses these itself; the Triton path is for eager mode.
        if not torch.compiler.is_compiling() and isinstance(self.norm2, nn.LayerNorm) and use_triton(x, branch):
            x, normed = fused_add_layernorm(x, branch, self.norm2.weight, self.norm2.bias, self.norm2.eps)
        else:
            x = x + branch
            normed = self.norm2(x)
        return x + self.drop_path2(self.ls2(self.mlp(normed)))
