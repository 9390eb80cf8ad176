"""The global fused switch, MEDVL_FUSED, availability detection and dispatch."""

from __future__ import annotations

import pytest
import torch

import medvl.kernels as K
from medvl.layers.attention import fused_attn_default
from tests._multiprocess import run_python


@pytest.mark.parametrize("value", ["0", "false", "No", " off ", "1", "true", "yes", ""])
def test_env_var_parsing_agrees_with_attention(monkeypatch, value):
    monkeypatch.setenv("MEDVL_FUSED", value)
    expected = value.strip().lower() not in ("0", "false", "no", "off")
    assert K.env_fused() is expected
    assert K.fused_enabled() is expected
    # One switch for every fused path: attention's default reads the same variable.
    assert fused_attn_default() is expected


def test_unset_env_means_enabled(monkeypatch):
    monkeypatch.delenv("MEDVL_FUSED", raising=False)
    assert K.fused_enabled() is True


def test_set_fused_overrides_env_and_none_restores_it(monkeypatch):
    monkeypatch.setenv("MEDVL_FUSED", "0")
    K.set_fused(True)
    assert K.fused_enabled() is True
    K.set_fused(None)
    assert K.fused_enabled() is False
    monkeypatch.setenv("MEDVL_FUSED", "1")
    K.set_fused(False)
    assert K.fused_enabled() is False


def test_use_fused_restores_previous_setting():
    K.set_fused(True)
    with K.use_fused(False):
        assert not K.fused_enabled()
    assert K.fused_enabled()


def test_set_fused_rejects_non_bool():
    with pytest.raises(TypeError, match="bool"):
        K.set_fused("0")  # type: ignore[arg-type]


def test_use_triton_needs_cuda_or_interpreter(monkeypatch):
    if not K.triton_available():
        pytest.skip("triton is not installed")
    x = torch.zeros(2)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    K.set_fused(True)
    assert not K.triton_interpret()
    assert not K.use_triton(x)  # CPU tensor, no interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert K.triton_interpret()
    assert K.use_triton(x)
    K.set_fused(False)
    assert not K.use_triton(x)  # the switch wins over availability


def _graph(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes that produced ``t``."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or type(node).__name__ in seen:
            continue
        seen.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return seen


def test_dispatch_follows_the_switch(interpret):
    x = torch.randn(2, 3, 16, requires_grad=True)
    y = torch.randn(2, 3, 16)
    w, b = torch.ones(16), torch.zeros(16)
    assert "_FusedAddLayerNormBackward" in _graph(K.fused_add_layernorm(x, y, w, b)[1])
    with K.use_fused(False):
        assert "_FusedAddLayerNormBackward" not in _graph(K.fused_add_layernorm(x, y, w, b)[1])

    p = torch.randn(2, 4, 12, requires_grad=True)
    wp, pos = torch.randn(16, 12), torch.randn(4, 16)
    assert "_PatchEmbedPosBackward" in _graph(K.patch_embed_pos(p, wp, None, pos))
    with K.use_fused(False):
        assert "_PatchEmbedPosBackward" not in _graph(K.patch_embed_pos(p, wp, None, pos))

    img = torch.randn(4, 8, requires_grad=True)
    assert "_ClipTritonBackward" in _graph(K.blockwise_clip_loss(img, img, 2.0))
    assert "_SigLipTritonBackward" in _graph(K.blockwise_siglip_loss(img, img, 2.0, -1.0))
    with K.use_fused(False):
        assert "_ClipTorchBackward" in _graph(K.blockwise_clip_loss(img, img, 2.0))
        assert "_SigLipTorchBackward" in _graph(K.blockwise_siglip_loss(img, img, 2.0, -1.0))


def test_cpu_without_interpreter_takes_the_reference(monkeypatch):
    if not K.triton_available():
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    K.set_fused(True)
    x = torch.randn(3, 16, requires_grad=True)
    assert "_FusedAddLayerNormBackward" not in _graph(K.fused_add_layernorm(x, x, None, None)[1])


def test_import_is_light():
    # Importing medvl.kernels must not import Triton (it loads lazily, on first use).
    probe = "import sys, medvl.kernels; print('triton' in sys.modules)"
    res = run_python(["-c", probe], timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False", f"stdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-2000:]}"
