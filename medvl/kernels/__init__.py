"""Fused kernels (Triton) with plain-PyTorch reference twins, and the global switch.

Every op here dispatches the same way: a Triton kernel when fused paths are enabled
(:func:`set_fused` / ``MEDVL_FUSED``), Triton imports, and the tensors are on CUDA or
Triton's interpreter is on (``TRITON_INTERPRET=1``, CPU tensors allowed); otherwise the
readable reference. Both paths give the same values and gradients to the tolerance of
the dtype (``tests/kernels``).

* :func:`fused_add_layernorm` / :func:`fused_layernorm` -- residual add + LayerNorm,
  fp32 statistics, Triton forward and backward.
* :func:`patch_embed_pos` (with :func:`patchify`) -- patch GEMM with bias and
  position-embedding add fused into the epilogue.
* :func:`blockwise_clip_loss` / :func:`blockwise_siglip_loss` -- memory-lean CLIP and
  SigLIP losses that never hold the B x B logits; the PyTorch reference is itself
  blockwise, so this is also the memory-lean path on the CPU.

Attention needs no kernel of its own: ``F.scaled_dot_product_attention`` already is one.
``medvl.layers.attention`` should read :func:`fused_enabled` as its default so that one
switch governs every fused path.
"""

from medvl.kernels._switch import (
    env_fused,
    fused_enabled,
    set_fused,
    triton_available,
    triton_interpret,
    use_fused,
    use_triton,
)
from medvl.kernels.contrastive import blockwise_clip_loss, blockwise_siglip_loss
from medvl.kernels.layernorm import add_layernorm_reference, fused_add_layernorm, fused_layernorm
from medvl.kernels.patch_embed import patch_embed_pos, patch_embed_pos_reference, patchify

__all__ = [
    "set_fused",
    "fused_enabled",
    "use_fused",
    "env_fused",
    "triton_available",
    "triton_interpret",
    "use_triton",
    "fused_add_layernorm",
    "fused_layernorm",
    "add_layernorm_reference",
    "patchify",
    "patch_embed_pos",
    "patch_embed_pos_reference",
    "blockwise_clip_loss",
    "blockwise_siglip_loss",
]
