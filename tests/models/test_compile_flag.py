"""``compile:`` of the task YAMLs: in place, mode passed through, checkpoint keys unchanged."""

from __future__ import annotations

import pytest
import torch
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


@pytest.fixture
def counted(monkeypatch):
    """Every torch.compile that medvl asks for runs on a frame-counting backend (no inductor build)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    cnt, real_fn = CompileCounter(), torch.compile
    cnt.modes = []

    def fake(fn, *, mode=None, **kwargs):  # nn.Module.compile calls torch.compile too
        cnt.modes.append(mode)
        return real_fn(fn, backend=cnt)

    monkeypatch.setattr(torch, "compile", fake)
    torch._dynamo.reset()
    yield cnt
    torch._dynamo.reset()


def _task(task: str):
    from medvl.models import Classifier, ContrastivePretraining, ReportGeneration

    if task == "contrastive":
        return ContrastivePretraining(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny",
                                      img_size=32, embed_dim=16, compile=CPU_FAST_MODE)
    if task == "report":
        return ReportGeneration(vision_encoder="test_vit_tiny_patch8", img_size=32, compile=CPU_FAST_MODE,
                                vocab=["<pad>", "<bos>", "<eos>", "<unk>"],
                                decoder_kwargs={"dim": 32, "depth": 1, "num_heads": 2})
    return Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a"], mode="finetune",
                      compile=CPU_FAST_MODE)


@pytest.mark.parametrize("task", ["contrastive", "report", "probe"])
def test_the_training_forward_runs_compiled(counted, task):
    """The forward a training step runs goes through torch.compile (``__call__`` alone would not:
    the networks call ``visual.forward_features``), keys unchanged, outputs those of eager."""
    module = _task(task)
    assert any(k.startswith("model.visual.") for k in module.state_dict())
    torch.manual_seed(0)
    image = torch.randn(2, 1, 32, 32)
    if task == "contrastive":
        out = module.model(image, module.model.tokenizer(["left effusion", "no finding"]))
        loss = module.loss_fn(**out)
    elif task == "report":
        out = module.model.visual_context(image)
        loss = out.square().mean()
    else:
        loss = module.model(image)["logits"].square().mean()
    loss.backward()
    assert counted.frame_count >= 1, "nothing ran compiled"
    assert set(counted.modes) == {CPU_FAST_MODE}
    assert all(p.grad is not None for p in module.model.visual.parameters() if p.requires_grad)
