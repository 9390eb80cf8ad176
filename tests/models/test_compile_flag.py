"""``compile:`` of the task YAMLs: in place, mode passed through, checkpoint keys unchanged."""

from __future__ import annotations

import pytest
from torch import nn

from medvl.encoders import create_encoder
from medvl.models._compile import CPU_FAST_MODE, compile_in_place


@pytest.mark.parametrize("flag,mode", [(True, None), (CPU_FAST_MODE, CPU_FAST_MODE), ("reduce-overhead", "reduce-overhead")])
def test_mode_reaches_torch_compile(monkeypatch, flag, mode):
    seen = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: seen.append((a, k)))
    compile_in_place(nn.Linear(2, 2), flag)
    assert seen == [((), {"mode": mode})]


@pytest.mark.parametrize("flag", [False, None])
def test_off_leaves_the_module_eager(monkeypatch, flag):
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: pytest.fail("compiled"))
    compile_in_place(nn.Linear(2, 2), flag)


def test_in_place_keeps_parameter_names():
    enc = create_encoder("test_vit_tiny_patch8", img_size=32, in_chans=1)
    keys = list(enc.state_dict())
    compile_in_place(enc, True)  # compilation itself is lazy: nothing runs until the first call
    assert list(enc.state_dict()) == keys and enc._compiled_call_impl is not None
