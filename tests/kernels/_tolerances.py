"""Per-dtype tolerances for fused-vs-reference parity, and the comparison helper.

Both paths compute in fp32 and round once to the storage dtype, so they differ by at
most a rounding step of that dtype, plus fp32 summation-order noise. Triton's
interpreter converts fp32 to bf16 by truncation (GPUs round to nearest), so a bf16
result can be one unit in the last place (2**-7 relative) off on the CPU; the bf16
tolerance allows two.
"""

from __future__ import annotations

import torch

TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),  # 2 ulp of fp16 (2**-10 relative)
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),  # 2 ulp of bf16 (2**-7 relative)
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Same dtype and shape, values within the tolerance of ``dtype``."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual, expected, **TOL[dtype], msg=lambda m: f"{what}: {m}")
