"""Triton kernels for the blockwise CLIP and SigLIP losses: no B x B logit matrix in memory.

Each program owns ``BLOCK_M`` rows of ``A`` and streams over ``BLOCK_N``-row blocks of
``Bm``, forming one ``(BLOCK_M, BLOCK_N)`` tile of ``logits = s * A @ Bm.T (+ bias)`` at a
time in registers (fp32, the contrastive fp32 island). Kernels, all on fp32 features:

* ``_lse_kernel``: row logsumexp of the logits with an online (running max, running
  sum) update -- the flash-attention recurrence. Called on ``(img, txt)`` it gives the
  image->text normalisers, on ``(txt, img)`` the text->image ones.
* ``_siglip_fwd_kernel``: per-program partial sums of ``-logsigmoid(label * logit)``.
* ``_contrastive_bwd_kernel``: recomputes each tile, forms the logit gradient ``G`` and
  accumulates ``dA = s * G @ Bm`` over a ``BLOCK_D`` slice of the feature dimension; the
  programs of slice 0 also write partial sums of ``G * A @ Bm.T`` (for ``d logit_scale``)
  and ``G`` (for ``d logit_bias``). ``dBm`` is the same kernel on swapped arguments,
  because ``G(Bm, A)`` is ``G(A, Bm).T`` for both losses.

Importing this module imports Triton; :mod:`medvl.kernels.contrastive` does so lazily.
"""

from __future__ import annotations

import torch
import triton.language as tl

from medvl.kernels._jit import MAX, SUM, cdiv, lazy_jit, next_power_of_2

__all__ = ["clip_lse", "siglip_loss_sum", "contrastive_grad", "tiles"]

_NEG = tl.constexpr(-1.0e30)  # -inf stand-in on padded columns: exp gives 0, never inf - inf


@lazy_jit
def _lse_kernel(
    A, Bm, LSE, SCALE,
    n, D,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < n
    rk = tl.arange(0, BLOCK_K)
    s = tl.load(SCALE)
    run_max = tl.full((BLOCK_M,), _NEG, dtype=tl.float32)
    run_sum = tl.full((BLOCK_M,), 0.0, dtype=tl.float32)
    for j0 in range(0, n, BLOCK_N):
        rn = j0 + tl.arange(0, BLOCK_N)
        nmask = rn < n
        dot = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            kk = k0 + rk
            kmask = kk < D
            a = tl.load(A + rm[:, None] * D + kk[None, :], mask=mmask[:, None] & kmask[None, :], other=0.0)
            b = tl.load(Bm + rn[None, :] * D + kk[:, None], mask=kmask[:, None] & nmask[None, :], other=0.0)
            dot = tl.dot(a, b, dot, input_precision=INPUT_PRECISION)  # (BM, BN)
        logits = tl.where(nmask[None, :], s * dot, _NEG)
        # fp32 island: online logsumexp, rescaling the running sum to the new maximum.
        new_max = tl.maximum(run_max, tl.reduce(logits, 1, MAX))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.reduce(tl.exp(logits - new_max[:, None]), 1, SUM)
        run_max = new_max
    tl.store(LSE + rm, run_max + tl.log(run_sum), mask=mmask)


@lazy_jit
def _siglip_fwd_kernel(
    A, Bm, PART, SCALE, BIAS,
    n, D,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < n
    rk = tl.arange(0, BLOCK_K)
    s = tl.load(SCALE)
    bias = tl.load(BIAS)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for j0 in range(0, n, BLOCK_N):
        rn = j0 + tl.arange(0, BLOCK_N)
        nmask = rn < n
        dot = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            kk = k0 + rk
            kmask = kk < D
            a = tl.load(A + rm[:, None] * D + kk[None, :], mask=mmask[:, None] & kmask[None, :], other=0.0)
            b = tl.load(Bm + rn[None, :] * D + kk[:, None], mask=kmask[:, None] & nmask[None, :], other=0.0)
            dot = tl.dot(a, b, dot, input_precision=INPUT_PRECISION)
        logits = s * dot + bias
        z = tl.where(rm[:, None] == rn[None, :], logits, -logits)  # label * logit
        # fp32 island: -logsigmoid(z) = max(-z, 0) + log1p(exp(-|z|)), with log1p
        # computed as log(w) * u / (w - 1) (Goldberg) so tiny terms keep their digits.
        u = tl.exp(-tl.abs(z))
        w = 1.0 + u
        log1p_u = tl.where(w == 1.0, u, tl.log(w) * u / (w - 1.0))
        nls = tl.maximum(-z, 0.0) + log1p_u
        valid = mmask[:, None] & nmask[None, :]
        acc += tl.where(valid, nls, 0.0)
    tl.store(PART + pid, tl.reduce(tl.reduce(acc, 1, SUM), 0, SUM))


@lazy_jit
def _contrastive_bwd_kernel(
    A, Bm, LSE_A, LSE_B, SCALE, BIAS, GRAD, DA, DS_PART, DB_PART,
    n, D, inv_n, smoothing,
    IS_CLIP: tl.constexpr, WRITE_SCALARS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_d = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < n
    rk = tl.arange(0, BLOCK_K)
    rd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # the feature slice this program writes
    dmask = rd < D
    s = tl.load(SCALE)
    g = tl.load(GRAD)  # upstream gradient of the scalar loss
    if IS_CLIP:
        lse_a = tl.load(LSE_A + rm, mask=mmask, other=0.0)
    else:
        bias = tl.load(BIAS)
    acc = tl.full((BLOCK_M, BLOCK_D), 0.0, dtype=tl.float32)
    ds_acc = tl.full((BLOCK_M,), 0.0, dtype=tl.float32)
    db_acc = tl.full((BLOCK_M,), 0.0, dtype=tl.float32)
    for j0 in range(0, n, BLOCK_N):
        rn = j0 + tl.arange(0, BLOCK_N)
        nmask = rn < n
        dot = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            kk = k0 + rk
            kmask = kk < D
            a = tl.load(A + rm[:, None] * D + kk[None, :], mask=mmask[:, None] & kmask[None, :], other=0.0)
            b = tl.load(Bm + rn[None, :] * D + kk[:, None], mask=kmask[:, None] & nmask[None, :], other=0.0)
            dot = tl.dot(a, b, dot, input_precision=INPUT_PRECISION)  # (BM, BN), recomputed
        valid = mmask[:, None] & nmask[None, :]
        on_diag = rm[:, None] == rn[None, :]
        if IS_CLIP:
            # d loss / d logit_ij = (softmax_row_ij + softmax_col_ij) / 2n - target_ij / n,
            # target = (1 - smoothing) * [i == j] + smoothing / n.
            lse_b = tl.load(LSE_B + rn, mask=nmask, other=0.0)
            logits = s * dot
            p = tl.exp(logits - lse_a[:, None]) + tl.exp(logits - lse_b[None, :])
            target = tl.where(on_diag, 1.0 - smoothing, 0.0) + smoothing * inv_n
            grad = (0.5 * p - target) * inv_n
        else:
            # d/dz of -logsigmoid(z) is -sigmoid(-z); z = label * logit, so
            # d loss / d logit_ij = -label_ij * sigmoid(-label_ij * logit_ij) / n.
            logits = s * dot + bias
            label = tl.where(on_diag, 1.0, -1.0)
            grad = -label * (1.0 / (1.0 + tl.exp(label * logits))) * inv_n
        grad = tl.where(valid, grad * g, 0.0)  # (BM, BN)
        b_slice = tl.load(Bm + rn[:, None] * D + rd[None, :], mask=nmask[:, None] & dmask[None, :], other=0.0)
        acc = tl.dot(grad, b_slice, acc, input_precision=INPUT_PRECISION)  # (BM, BD)
        if WRITE_SCALARS:
            ds_acc += tl.reduce(grad * dot, 1, SUM)
            db_acc += tl.reduce(grad, 1, SUM)
    tl.store(DA + rm[:, None] * D + rd[None, :], s * acc, mask=mmask[:, None] & dmask[None, :])
    if WRITE_SCALARS:
        if pid_d == 0:
            tl.store(DS_PART + pid_m, tl.reduce(ds_acc, 0, SUM))
            tl.store(DB_PART + pid_m, tl.reduce(db_acc, 0, SUM))


def _input_precision() -> str:
    """fp32 dots follow ``torch.get_float32_matmul_precision`` ("highest" -> IEEE fp32)."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def tiles(block_size: int, D: int) -> tuple[int, int]:
    """``(BLOCK, BLOCK_K)``: the logit tile side (16..64, a power of two) and K chunk."""
    block = min(64, max(16, next_power_of_2(block_size)))
    block_k = min(32, max(16, next_power_of_2(D)))  # 32 keeps shared memory <= 48 KiB
    return block, block_k


def clip_lse(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, block_size: int) -> torch.Tensor:
    """Row logsumexp of ``scale * a @ b.T`` for contiguous fp32 ``(n, D)`` features; ``(n,)`` fp32."""
    n, D = a.shape
    block, block_k = tiles(block_size, D)
    lse = torch.empty((n,), dtype=torch.float32, device=a.device)
    _lse_kernel[(cdiv(n, block),)](
        a, b, lse, scale, n, D,
        INPUT_PRECISION=_input_precision(), BLOCK_M=block, BLOCK_N=block, BLOCK_K=block_k,
        num_warps=4,
    )
    return lse


def siglip_loss_sum(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, block_size: int
) -> torch.Tensor:
    """``-sum_ij logsigmoid(label_ij * (scale * a_i.b_j + bias))`` as a 0-dim fp32 tensor."""
    n, D = a.shape
    block, block_k = tiles(block_size, D)
    grid = cdiv(n, block)
    part = torch.empty((grid,), dtype=torch.float32, device=a.device)
    _siglip_fwd_kernel[(grid,)](
        a, b, part, scale, bias, n, D,
        INPUT_PRECISION=_input_precision(), BLOCK_M=block, BLOCK_N=block, BLOCK_K=block_k,
        num_warps=4,
    )
    return part.sum()


def contrastive_grad(
    a: torch.Tensor,
    b: torch.Tensor,
    lse_a: torch.Tensor | None,
    lse_b: torch.Tensor | None,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    grad: torch.Tensor,
    smoothing: float,
    block_size: int,
    write_scalars: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradient of the loss wrt ``a`` (and optionally the scalar parameters).

    Args:
        a: Contiguous fp32 ``(n, D)`` features whose gradient is wanted.
        b: Contiguous fp32 ``(n, D)`` features they are contrasted with.
        lse_a: CLIP: row logsumexps of ``a`` against ``b``; None selects SigLIP.
        lse_b: CLIP: row logsumexps of ``b`` against ``a``.
        scale: 1-element fp32 logit scale.
        bias: SigLIP: 1-element fp32 logit bias.
        grad: 1-element fp32 upstream gradient of the loss.
        smoothing: CLIP label smoothing.
        block_size: Requested logit tile side.
        write_scalars: Whether to also return ``d loss / d scale`` and ``d loss / d bias``.

    Returns:
        ``(da, dscale, dbias)``: ``(n, D)`` fp32 and two 0-dim fp32 tensors (None
        unless ``write_scalars``; ``dbias`` is meaningful for SigLIP only).
    """
    n, D = a.shape
    block, block_k = tiles(block_size, D)
    grid_m = cdiv(n, block)
    da = torch.empty_like(a)
    ds_part = torch.empty((grid_m,), dtype=torch.float32, device=a.device)
    db_part = torch.empty((grid_m,), dtype=torch.float32, device=a.device)
    is_clip = lse_a is not None
    _contrastive_bwd_kernel[(grid_m, cdiv(D, block))](
        a, b, lse_a if is_clip else a, lse_b if is_clip else a, scale,
        bias if bias is not None else scale, grad, da, ds_part, db_part,
        n, D, 1.0 / n, float(smoothing),
        IS_CLIP=is_clip, WRITE_SCALARS=write_scalars, INPUT_PRECISION=_input_precision(),
        BLOCK_M=block, BLOCK_N=block, BLOCK_K=block_k, BLOCK_D=block,
        num_warps=4,
    )
    if not write_scalars:
        return da, None, None
    return da, ds_part.sum(), db_part.sum()
