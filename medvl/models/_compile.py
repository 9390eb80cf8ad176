"""``compile:`` of the task YAMLs: torch.compile a network, or its encoder, in place."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# On the CPU, inductor's GEMM templates (AMX/AVX-512 micro-kernels with fused epilogues)
# are what make bf16 training faster than eager; plain "default" mode keeps oneDNN GEMMs.
CPU_FAST_MODE = "max-autotune-no-cudagraphs"

# The encoder methods the networks call (they need the tokens, not only ``encoder(x)``):
# compiling ``__call__`` alone would leave every task's training forward eager.
ENCODER_METHODS = ("forward_features",)


def compile_in_place(module: nn.Module, compile: bool | str | None, methods: Sequence[str] = ()) -> None:
    """``torch.compile`` ``module`` in place, so parameter names and checkpoints are unchanged.

    ``module(...)`` runs compiled (:meth:`nn.Module.compile`), and so does each method
    named in ``methods`` that the module has (an instance attribute wrapping the bound
    method: the state dict does not see it). A compiled call inside another compiled
    region is traced into the outer graph, so compiling both levels costs nothing.

    Args:
        module: The network or encoder.
        compile: False/None: leave it eager; True: torch.compile's default mode; a string:
            that mode (e.g. ``"max-autotune-no-cudagraphs"``, :data:`CPU_FAST_MODE`).
        methods: Further methods that callers use instead of ``forward`` (for an encoder,
            :data:`ENCODER_METHODS`).
    """
    if compile is None or compile is False:
        return
    mode = None if compile is True else str(compile)
    module.compile(mode=mode)
    for name in methods:
        fn = getattr(module, name, None)
        if callable(fn):
            setattr(module, name, torch.compile(fn, mode=mode))
