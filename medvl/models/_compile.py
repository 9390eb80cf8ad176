"""``compile:`` of the task YAMLs: torch.compile an encoder in place."""

from __future__ import annotations

from torch import nn

# On the CPU, inductor's GEMM templates (AMX/AVX-512 micro-kernels with fused epilogues)
# are what make bf16 training faster than eager; plain "default" mode keeps oneDNN GEMMs.
CPU_FAST_MODE = "max-autotune-no-cudagraphs"


def compile_in_place(module: nn.Module, compile: bool | str | None) -> None:
    """``torch.compile`` ``module`` in place, so parameter names and checkpoints are unchanged.

    Args:
        module: The encoder.
        compile: False/None: leave it eager; True: torch.compile's default mode; a string:
            that mode (e.g. ``"max-autotune-no-cudagraphs"``, :data:`CPU_FAST_MODE`).
    """
    if compile is None or compile is False:
        return
    module.compile(mode=None if compile is True else str(compile))
