"""The one on/off switch for medvl's fused paths, and Triton availability detection.

Every fast path in medvl has a slow twin (timm's ``fused_attn``, dinov2's
``XFORMERS_DISABLED``): this module is the single source of truth that chooses between
them. The environment variable ``MEDVL_FUSED`` sets the default (``0``, ``false``,
``no`` or ``off`` disable; anything else, or unset, enables), and
:func:`set_fused` overrides it for the whole process.

A Triton kernel runs only when all of the following hold:

* fused paths are enabled (:func:`fused_enabled`);
* ``triton`` imports;
* the tensors live on a CUDA device, or Triton's interpreter is on
  (``TRITON_INTERPRET=1``), in which case CPU tensors are allowed as well. (A process
  that imported Triton with the interpreter on cannot compile GPU kernels any more;
  with the interpreter off again it takes the reference.)

Otherwise the plain-PyTorch reference runs. Triton is imported lazily, on the first
question that needs it, so ``import medvl`` stays light.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator

import torch

__all__ = [
    "env_fused",
    "fused_enabled",
    "set_fused",
    "use_fused",
    "triton_available",
    "triton_interpret",
    "use_triton",
]

ENV_VAR = "MEDVL_FUSED"
_FALSE = ("0", "false", "no", "off")

# None: follow the environment; True/False: set_fused() override.
_override: bool | None = None


def env_fused() -> bool:
    """Whether ``MEDVL_FUSED`` enables fused paths (unset counts as enabled)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in _FALSE


def fused_enabled() -> bool:
    """Whether fused paths are enabled: the :func:`set_fused` override, else the environment."""
    return env_fused() if _override is None else _override


def set_fused(enabled: bool | None) -> None:
    """Enables or disables every fused path in the process.

    Args:
        enabled: True or False to override ``MEDVL_FUSED``; None to follow the
            environment variable again.
    """
    global _override
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_fused expects a bool or None, got {type(enabled).__name__}")
    _override = enabled


@contextlib.contextmanager
def use_fused(enabled: bool | None) -> Iterator[None]:
    """Context manager form of :func:`set_fused`; restores the previous setting on exit."""
    global _override
    previous = _override
    set_fused(enabled)
    try:
        yield
    finally:
        _override = previous


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the ``triton`` package imports (checked once per process)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising at import time
        return False
    return True


def triton_interpret() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET``, read as Triton reads it)."""
    if not triton_available():
        return False
    import triton

    knobs = getattr(triton, "knobs", None)  # triton >= 3.3 reads its env vars through knobs
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


@functools.lru_cache(maxsize=1)
def _imported_in_interpreter_mode() -> bool:
    """Whether ``triton.language`` was imported with the interpreter on.

    Triton's own ``@triton.jit`` helpers are then interpreter functions for the life of
    the process, and compiled (GPU) kernels cannot be built.
    """
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    return not isinstance(tl.standard._sum_combine, JITFunction)


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether a Triton kernel should run on ``tensors`` (None entries are ignored).

    True when fused paths are enabled, Triton imports, and either the Triton
    interpreter is on or every tensor is on CUDA (and Triton can still compile in this
    process, see :func:`_imported_in_interpreter_mode`).
    """
    if not fused_enabled():
        return False
    ts = [t for t in tensors if t is not None]
    on_cuda = bool(ts) and all(t.is_cuda for t in ts)
    env_interpret = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")
    if not (on_cuda or env_interpret or "triton" in sys.modules):
        return False  # CPU tensors and no interpreter: decided without importing Triton
    if not triton_available():
        return False
    if triton_interpret():
        return True
    return on_cuda and not _imported_in_interpreter_mode()
