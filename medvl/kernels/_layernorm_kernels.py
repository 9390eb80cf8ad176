"""Triton kernels for residual-add + LayerNorm (forward and backward), fp32 statistics.

Forward: one program normalises ``BLOCK_M`` rows held whole in registers
(``BLOCK_D >= D``), after adding the branch output to the residual stream. Backward:
each program walks a strided set of row tiles, writes the input gradient row by row and
keeps per-program partial sums of ``dweight`` / ``dbias`` that the host reduces (the
two-stage reduction of Triton's LayerNorm tutorial, without locks, so deterministic).
Statistics and every reduction run in fp32 whatever the storage dtype.

Importing this module imports Triton; :mod:`medvl.kernels.layernorm` does so lazily.
"""

from __future__ import annotations

import torch
import triton.language as tl

from medvl.kernels._jit import SUM, cdiv, lazy_jit, next_power_of_2

__all__ = ["MAX_D", "add_layernorm_fwd", "add_layernorm_bwd"]

MAX_D = 16384  # a row must fit one tile; wider rows take the reference path


@lazy_jit
def _add_ln_fwd_kernel(
    X, Y, W, B, S, OUT, MEAN, RSTD,
    M, D, eps,
    HAS_Y: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    cols = tl.arange(0, BLOCK_D)  # (BD,)
    rmask = rows < M
    cmask = cols < D
    mask = rmask[:, None] & cmask[None, :]  # (BM, BD)
    offs = rows.to(tl.int64)[:, None] * D + cols[None, :]  # contiguous rows

    # fp32 island: the residual sum is formed in fp32, rounded once to the stream's
    # dtype (exactly what ``x + y`` stores), and the statistics are taken in fp32.
    s = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_Y:
        s += tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32)
        s_store = s.to(S.dtype.element_ty)
        tl.store(S + offs, s_store, mask=mask)
        s = s_store.to(tl.float32)
    mean = tl.reduce(s, 1, SUM) / D  # (BM,)
    xc = tl.where(mask, s - mean[:, None], 0.0)
    var = tl.reduce(xc * xc, 1, SUM) / D  # biased variance, as F.layer_norm
    rstd = 1.0 / tl.sqrt(var + eps)  # (BM,)
    y = xc * rstd[:, None]
    if HAS_W:
        y = y * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + offs, y.to(OUT.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=rmask)
    tl.store(RSTD + rows, rstd, mask=rmask)


@lazy_jit
def _add_ln_bwd_kernel(
    S, DOUT, DS_IN, W, MEAN, RSTD, DS, DW_PART, DB_PART,
    M, D, num_tiles,
    HAS_DS_IN: tl.constexpr, HAS_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw_acc = tl.full((BLOCK_D,), 0.0, dtype=tl.float32)
    db_acc = tl.full((BLOCK_D,), 0.0, dtype=tl.float32)
    for tile in range(pid, num_tiles, nprog):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < M
        mask = rmask[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
        # fp32 island: recompute xhat from the saved residual and fp32 statistics.
        s = tl.load(S + offs, mask=mask, other=0.0).to(tl.float32)
        dout = tl.load(DOUT + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=rmask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
        xhat = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_W:
            wdy = dout * w[None, :]
        else:
            wdy = dout
        c1 = tl.reduce(xhat * wdy, 1, SUM) / D  # (BM,)
        c2 = tl.reduce(wdy, 1, SUM) / D  # (BM,)
        ds = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DS_IN:  # gradient reaching the residual stream directly
            ds += tl.load(DS_IN + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(DS + offs, ds.to(DS.dtype.element_ty), mask=mask)
        dw_acc += tl.reduce(dout * xhat, 0, SUM)
        db_acc += tl.reduce(dout, 0, SUM)
    tl.store(DW_PART + pid * D + cols, dw_acc, mask=cmask)
    tl.store(DB_PART + pid * D + cols, db_acc, mask=cmask)


def _tiles(D: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_D, num_warps)`` for rows of width ``D``: about 4k elements a tile."""
    block_d = max(16, next_power_of_2(D))
    block_m = max(1, min(64, 4096 // block_d))
    num_warps = 4 if block_d <= 1024 else (8 if block_d <= 4096 else 16)
    return block_m, block_d, num_warps


def add_layernorm_fwd(
    x: torch.Tensor,
    y: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    s_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the forward kernel on contiguous ``(M, D)`` inputs.

    Returns:
        ``(s, out, mean, rstd)``: the residual sum ``(M, D)`` in ``s_dtype`` (``x``
        itself when ``y`` is None), the normalised rows in ``s_dtype``, and fp32
        per-row mean and reciprocal standard deviation ``(M,)``.
    """
    M, D = x.shape
    s = x if y is None else torch.empty((M, D), dtype=s_dtype, device=x.device)
    out = torch.empty((M, D), dtype=s_dtype, device=x.device)
    mean = torch.empty((M,), dtype=torch.float32, device=x.device)
    rstd = torch.empty((M,), dtype=torch.float32, device=x.device)
    block_m, block_d, num_warps = _tiles(D)
    _add_ln_fwd_kernel[(cdiv(M, block_m),)](
        x, y if y is not None else x, weight if weight is not None else x,
        bias if bias is not None else x, s, out, mean, rstd,
        M, D, float(eps),
        HAS_Y=y is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps,
    )
    return s, out, mean, rstd


def add_layernorm_bwd(
    s: torch.Tensor,
    dout: torch.Tensor,
    ds_in: torch.Tensor | None,
    weight: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    max_programs: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the backward kernel on contiguous ``(M, D)`` tensors.

    Returns:
        ``(ds, dweight, dbias)``: the gradient reaching the residual sum ``(M, D)`` in
        ``s.dtype`` (the LayerNorm backward plus ``ds_in``), and fp32 ``(D,)`` sums
        over all rows of ``dout * xhat`` and ``dout``.
    """
    M, D = s.shape
    block_m, block_d, num_warps = _tiles(D)
    num_tiles = cdiv(M, block_m)
    if max_programs is None:
        if s.is_cuda:
            max_programs = 4 * torch.cuda.get_device_properties(s.device).multi_processor_count
        else:  # interpreter: programs run one after another, few is as fast as many
            max_programs = 4
    grid = max(1, min(num_tiles, max_programs))
    ds = torch.empty_like(s)
    dw_part = torch.empty((grid, D), dtype=torch.float32, device=s.device)
    db_part = torch.empty((grid, D), dtype=torch.float32, device=s.device)
    _add_ln_bwd_kernel[(grid,)](
        s, dout, ds_in if ds_in is not None else dout, weight if weight is not None else s,
        mean, rstd, ds, dw_part, db_part,
        M, D, num_tiles,
        HAS_DS_IN=ds_in is not None, HAS_W=weight is not None,
        BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps,
    )
    return ds, dw_part.sum(0), db_part.sum(0)
