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


@pytest.mark.parametrize("task", ["contrastive", "report"])
def test_tasks_compile_the_networks_image_encoder(monkeypatch, task):
    from medvl.models import ContrastivePretraining, ReportGeneration

    compiled = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append((self, k)))
    if task == "contrastive":
        module = ContrastivePretraining(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny",
                                        img_size=32, embed_dim=16, compile=CPU_FAST_MODE)
    else:
        module = ReportGeneration(vision_encoder="test_vit_tiny_patch8", img_size=32, compile=CPU_FAST_MODE,
                                  vocab=["<pad>", "<bos>", "<eos>", "<unk>"], decoder_kwargs={"dim": 32, "depth": 1,
                                                                                              "num_heads": 2})
    assert compiled == [(module.model.visual, {"mode": CPU_FAST_MODE})]
    assert any(k.startswith("model.visual.") for k in module.state_dict())
