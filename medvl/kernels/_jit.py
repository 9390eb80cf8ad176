"""Lazy ``triton.jit``: kernels are compiled for the mode Triton is in when they launch.

``triton.jit`` decides at decoration time whether a function becomes a compiled
``JITFunction`` or an ``InterpretedFunction`` (``TRITON_INTERPRET=1``). Decorating at
import time would freeze that choice, so a test that turns the interpreter on after
Triton was imported would still get GPU-only kernels. :func:`lazy_jit` keeps the plain
Python function and wraps it on first launch, once per mode.

Kernels written for this wrapper must not call ``@triton.jit`` helpers, which are
frozen in the mode Triton was imported in. That includes ``tl.sum``, ``tl.max``,
``tl.zeros`` and ``tl.sigmoid`` from ``triton.language.standard``: kernels use
``tl.reduce(x, axis, SUM)`` / ``tl.reduce(x, axis, MAX)`` with Triton's own combine
functions (the interpreter recognises them by identity, so they run in either mode),
``tl.full`` and inline maths. One case stays unsupported: Triton imported with
``TRITON_INTERPRET=1`` and compiled kernels wanted later in the same process.

Importing this module imports Triton; only the kernel modules import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import triton.language as tl

__all__ = ["lazy_jit", "cdiv", "next_power_of_2", "SUM", "MAX"]

SUM = tl.standard._sum_combine  # combine function of tl.sum
MAX = tl.standard._elementwise_max  # combine function of tl.max on floats


class _LazyKernel:
    """A Triton kernel that is jitted on first launch, separately per interpreter mode."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._compiled: dict[bool, Any] = {}

    def _kernel(self) -> Any:
        import triton

        from medvl.kernels._switch import triton_interpret

        mode = triton_interpret()
        kernel = self._compiled.get(mode)
        if kernel is None:
            kernel = self._compiled[mode] = triton.jit(self.fn)
        return kernel

    def __getitem__(self, grid: Any) -> Any:
        """``kernel[grid](*args)``, as with a ``@triton.jit`` function."""
        return self._kernel()[grid]


def lazy_jit(fn: Callable[..., Any]) -> _LazyKernel:
    """Decorator: a Triton kernel jitted on first launch (see the module docstring)."""
    return _LazyKernel(fn)


def cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
