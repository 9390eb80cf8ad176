"""medvl.optim: the weight-decay groups, as built and as an FSDP wrap leaves the parameters.

The wrap itself (2 gloo processes, torch's FSDP and FSDP2) is in tests/models/test_fsdp_cpu.py;
here what it does to the parameters is done by hand: FSDP (v1, ``use_orig_params=True``)
keeps the parameter objects, marks them ``_fsdp_flattened``, turns their data into flat 1-D
shards (some empty) and puts ``_fsdp_wrapped_module.`` into the names.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medvl.optim import param_groups, record_shapes


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))  # 3-D, but exempt by name
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.scale = nn.Parameter(torch.ones(1))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


class _Wrapper(nn.Module):
    """What FSDP v1 makes of a unit: the module under ``_fsdp_wrapped_module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._fsdp_wrapped_module = module

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._fsdp_wrapped_module, name)


def _split(groups: list[dict], names: dict[int, str]) -> tuple[list[str], list[str]]:
    decay = [names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    exempt = [names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    return sorted(decay), sorted(exempt)


def _shard_like_fsdp(root: nn.Module) -> None:
    for i, p in enumerate(root.parameters()):
        p._fsdp_flattened = True
        p.data = p.data.flatten()[: p.numel() // 2] if i % 2 else p.data.new_empty(0)  # this rank's piece


def test_groups_as_built():
    torch.manual_seed(0)
    net = nn.Sequential(_Net())
    names = {id(p): n for n, p in net.named_parameters()}
    decay, exempt = _split(param_groups(net, weight_decay=0.1, lr=1e-3), names)
    assert decay == ["0.fc.weight"]
    assert exempt == ["0.fc.bias", "0.norm.bias", "0.norm.weight", "0.pos_embed", "0.scale"]
    assert all(g["lr"] == 1e-3 for g in param_groups(net, weight_decay=0.1, lr=1e-3))


def test_groups_under_a_wrap_are_those_of_the_unwrapped_module():
    torch.manual_seed(0)
    net = nn.Sequential(_Net())
    names = {id(p): n for n, p in net.named_parameters()}
    want = _split(param_groups(net, weight_decay=0.1), names)
    record_shapes(net)  # before the wrap, as the tasks' configure_model does
    net[0] = _Wrapper(net[0])
    assert [n for n, _ in net.named_parameters()][0].startswith("0._fsdp_wrapped_module.")
    _shard_like_fsdp(net)
    assert all(p.ndim == 1 for p in net.parameters())  # shape alone would exempt everything
    assert _split(param_groups(net, weight_decay=0.1), names) == want
    record_shapes(net)  # again after the wrap (a second fit): the notes stay those of the parameters as built
    assert _split(param_groups(net, weight_decay=0.1), names) == want


def test_a_sharded_parameter_without_a_note_is_refused():
    net = _Net()
    _shard_like_fsdp(net)
    with pytest.raises(ValueError, match=r"record_shapes\(model\) before wrapping"):
        param_groups(net, weight_decay=0.1)


def test_the_tasks_note_the_shapes_in_configure_model():
    from medvl.models import ContrastivePretraining

    task = ContrastivePretraining(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny", embed_dim=16,
                                  img_size=32)
    task.configure_model()
    assert all(getattr(p, "_medvl_shape") == tuple(p.shape) for p in task.parameters())


def test_adamw_takes_the_fused_kernel_and_matches_the_loop():
    from medvl.optim import adamw

    torch.manual_seed(0)
    nets = [_Net(), _Net()]
    nets[1].load_state_dict(nets[0].state_dict())
    before = {k: v.clone() for k, v in nets[0].state_dict().items()}
    fast = adamw(param_groups(nets[0], weight_decay=0.1), lr=1e-2, betas=(0.9, 0.98))
    loop = torch.optim.AdamW(param_groups(nets[1], weight_decay=0.1), lr=1e-2, betas=(0.9, 0.98),
                             foreach=False, fused=False)
    assert fast.defaults["fused"] is True
    x = torch.randn(3, 4, 8)
    for _ in range(5):
        for net, opt in zip(nets, (fast, loop)):
            opt.zero_grad()
            (net.fc(net.norm(x + net.pos_embed)) * net.scale).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(v, before[k]) for k, v in nets[0].state_dict().items())  # every parameter moved


def test_adamw_falls_back_to_foreach_and_respects_an_explicit_choice():
    from medvl.optim import adamw

    meta = [nn.Parameter(torch.zeros(2, 2, device="meta"))]  # a device without a fused kernel
    opt = adamw(meta, lr=1e-3)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    assert adamw(list(_Net().parameters()), lr=1e-3, fused=False).defaults["fused"] is False
