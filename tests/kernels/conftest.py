"""Fixtures for the kernel tests: Triton's CPU interpreter, switched on per test only.

``TRITON_INTERPRET`` is set with ``monkeypatch`` inside the ``interpret`` fixture, so it
never outlives the test that asked for it and cannot leak into other test modules.
Triton (>= 3.3) reads the variable when a kernel is jitted, and medvl's kernels are
jitted lazily per mode (``medvl.kernels._jit``), so the order of imports does not matter.
"""

from __future__ import annotations

import pytest
import torch

from medvl.kernels import _switch


@pytest.fixture(autouse=True)
def _restore_fused_switch():
    """Every test starts and ends with the process-wide fused switch untouched."""
    before = _switch._override
    yield
    _switch._override = before


@pytest.fixture
def interpret(monkeypatch):
    """Runs the test with Triton's interpreter on and fused paths enabled."""
    if not _switch.triton_available():
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("MEDVL_FUSED", raising=False)
    _switch.set_fused(True)
    yield


@pytest.fixture
def cuda(monkeypatch):
    """Runs the test on a CUDA device with compiled (not interpreted) Triton kernels."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not _switch.triton_available():
        pytest.skip("triton is not installed")
    if _switch._imported_in_interpreter_mode():
        pytest.skip("Triton was imported with TRITON_INTERPRET=1; run GPU tests in a process without it")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("MEDVL_FUSED", raising=False)
    _switch.set_fused(True)
    yield torch.device("cuda")
