"""Every Triton kernel compiles for a real GPU (sm_90) -- checked without one.

The interpreter runs kernels as numpy and accepts code the compiler rejects (non-constexpr
globals, dot tiles under 16, dtype mismatches in ``tl.dot``). Triton can compile ahead of
time for a named target with its bundled ``ptxas``, so the CPU suite catches those too,
and checks the kernels' shared memory fits GPUs with less of it than an H100.
"""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from medvl.kernels import _contrastive_kernels as C  # noqa: E402
from medvl.kernels import _switch  # noqa: E402
from medvl.kernels import _layernorm_kernels as L  # noqa: E402
from medvl.kernels import _patch_embed_kernels as P  # noqa: E402

MAX_SHARED = 99 * 1024  # the smallest opt-in shared memory of sm_80+ parts (sm_86/89)


def _compile(lazy, types: dict[str, str], constexprs: dict[str, object]):
    """AOT-compiles ``lazy``'s kernel for sm_90 with the given argument types."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = triton.jit(lazy.fn)
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in types:
            signature[name] = types[name]
        else:
            raise AssertionError(f"{lazy.__name__}: no type given for argument {name}")
    try:
        return triton.compile(
            ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}
        )
    except FileNotFoundError as err:  # no bundled ptxas on this platform
        pytest.skip(f"cannot compile for CUDA here: {err}")


def _ptrs(dtype: str, *names: str) -> dict[str, str]:
    return {n: f"*{dtype}" for n in names}


CASES = {
    "layernorm_fwd": lambda: _compile(
        L._add_ln_fwd_kernel,
        {**_ptrs("bf16", "X", "Y", "S", "OUT"), **_ptrs("fp32", "W", "B", "MEAN", "RSTD"),
         "M": "i32", "D": "i32", "eps": "fp32"},
        dict(HAS_Y=True, HAS_W=True, HAS_B=True, BLOCK_M=8, BLOCK_D=512),
    ),
    "layernorm_bwd": lambda: _compile(
        L._add_ln_bwd_kernel,
        {**_ptrs("bf16", "S", "DOUT", "DS_IN", "DS"), **_ptrs("fp32", "W", "MEAN", "RSTD", "DW_PART", "DB_PART"),
         "M": "i32", "D": "i32", "num_tiles": "i32"},
        dict(HAS_DS_IN=True, HAS_W=True, BLOCK_M=8, BLOCK_D=512),
    ),
    "patch_embed_pos": lambda: _compile(
        P._patch_embed_pos_kernel,
        {**_ptrs("bf16", "P", "W", "BIAS"), **_ptrs("fp32", "POS", "OUT"),
         "M": "i32", "N_TOK": "i32", "D": "i32", "K": "i32"},
        dict(HAS_BIAS=True, UPCAST=False, INPUT_PRECISION="tf32", BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
    ),
    "clip_lse": lambda: _compile(
        C._lse_kernel,
        {**_ptrs("fp32", "A", "Bm", "LSE", "SCALE"), "n": "i32", "D": "i32"},
        dict(INPUT_PRECISION="ieee", BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
    ),
    "siglip_fwd": lambda: _compile(
        C._siglip_fwd_kernel,
        {**_ptrs("fp32", "A", "Bm", "PART", "SCALE", "BIAS"), "n": "i32", "D": "i32"},
        dict(INPUT_PRECISION="tf32", BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
    ),
    **{
        f"contrastive_bwd_{'clip' if is_clip else 'siglip'}": (lambda is_clip=is_clip: _compile(
            C._contrastive_bwd_kernel,
            {**_ptrs("fp32", "A", "Bm", "LSE_A", "LSE_B", "SCALE", "BIAS", "GRAD", "DA", "DS_PART", "DB_PART"),
             "n": "i32", "D": "i32", "inv_n": "fp32", "smoothing": "fp32"},
            dict(IS_CLIP=is_clip, WRITE_SCALARS=True, INPUT_PRECISION="tf32",
                 BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, BLOCK_D=64),
        ))
        for is_clip in (True, False)
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_compiles_for_sm90(case, monkeypatch):
    if _switch._imported_in_interpreter_mode():
        pytest.skip("Triton was imported with TRITON_INTERPRET=1: its helpers cannot compile")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # triton.jit must build a compilable kernel
    kernel = CASES[case]()
    assert kernel.asm.get("cubin"), f"{case}: no cubin produced"
    assert kernel.metadata.shared <= MAX_SHARED, f"{case}: {kernel.metadata.shared} bytes of shared memory"
