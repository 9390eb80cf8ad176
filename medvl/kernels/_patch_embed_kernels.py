"""Triton kernel for the patch-embedding GEMM with a fused bias + position-embedding epilogue.

``out[m, :] = (patches[m, :] @ weight.T + bias) + pos_embed[m % N, :]`` over the
``M = B * N`` unfolded patches: a tiled GEMM (fp32 accumulation) whose epilogue adds the
bias, rounds to the GEMM dtype exactly as ``F.linear`` stores its output, then adds the
position embedding and stores once in the output dtype. This saves the write and
re-read of the ``(B, N, D)`` projection that ``conv(x) + pos_embed`` costs.

Importing this module imports Triton; :mod:`medvl.kernels.patch_embed` does so lazily.
"""

from __future__ import annotations

import torch
import triton.language as tl

from medvl.kernels._jit import cdiv, lazy_jit

__all__ = ["patch_embed_pos_fwd"]


@lazy_jit
def _patch_embed_pos_kernel(
    P, W, BIAS, POS, OUT,
    M, N_TOK, D, K,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,) patch rows
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,) output channels
    rk = tl.arange(0, BLOCK_K)
    mmask = rm < M
    nmask = rn < D
    rm64 = rm.to(tl.int64)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        kmask = kk < K
        a = tl.load(P + rm64[:, None] * K + kk[None, :], mask=mmask[:, None] & kmask[None, :], other=0.0)
        # (BK, BN) tile of W.T, read straight from the row-major (D, K) weight
        b = tl.load(W + rn[None, :] * K + kk[:, None], mask=kmask[:, None] & nmask[None, :], other=0.0)
        if UPCAST:  # the interpreter has no bf16 dot; bf16 products are exact in fp32
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)  # fp32 accumulation
    if HAS_BIAS:
        acc += tl.load(BIAS + rn, mask=nmask, other=0.0).to(tl.float32)[None, :]
    # F.linear stores its output in the GEMM dtype; round there before the fp32 pos add.
    acc = acc.to(P.dtype.element_ty).to(tl.float32)
    tok = (rm % N_TOK).to(tl.int64)  # token index within the image
    omask = mmask[:, None] & nmask[None, :]
    pos = tl.load(POS + tok[:, None] * D + rn[None, :], mask=omask, other=0.0).to(tl.float32)
    out = acc + pos
    tl.store(OUT + rm64[:, None] * D + rn[None, :], out.to(OUT.dtype.element_ty), mask=omask)


def _input_precision(dtype: torch.dtype) -> str:
    """fp32 GEMMs follow ``torch.get_float32_matmul_precision`` ("highest" -> IEEE fp32)."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"  # Triton's default; ignored for fp16/bf16 operands


def patch_embed_pos_fwd(
    patches: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos: torch.Tensor,
    out_dtype: torch.dtype,
    interpret: bool,
    block_m: int = 64,
    block_n: int = 64,
    block_k: int = 32,
) -> torch.Tensor:
    """Launches the kernel.

    Args:
        patches: Contiguous unfolded patches ``(B, N, K)`` in the GEMM dtype.
        weight: Contiguous projection ``(D, K)`` in the GEMM dtype.
        bias: ``(D,)`` in the GEMM dtype, or None.
        pos: Contiguous position embeddings ``(N, D)``.
        out_dtype: Dtype of the result.
        interpret: Whether Triton's interpreter runs the kernel (bf16 tiles are then
            upcast before ``tl.dot``).
        block_m: Rows per tile (>= 16 on GPU).
        block_n: Output channels per tile (>= 16 on GPU).
        block_k: Reduction chunk (>= 16 on GPU).

    Returns:
        ``(B, N, D)`` in ``out_dtype``.
    """
    B, N, K = patches.shape
    D = weight.shape[0]
    M = B * N
    out = torch.empty((B, N, D), dtype=out_dtype, device=patches.device)
    grid = (cdiv(M, block_m), cdiv(D, block_n))
    _patch_embed_pos_kernel[grid](
        patches, weight, bias if bias is not None else weight, pos, out,
        M, N, D, K,
        HAS_BIAS=bias is not None,
        UPCAST=interpret and patches.dtype == torch.bfloat16,
        INPUT_PRECISION=_input_precision(patches.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=4,
    )
    return out
