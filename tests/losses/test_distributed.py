"""Global-batch contrastive losses under torch.distributed (2 CPU processes, gloo).

The reference is the single-process loss of the whole batch. Under DDP the optimised
objective is the mean of the ranks' losses and each parameter's gradient is the mean of
the ranks' gradients, so: mean of rank losses == full loss, rank r's feature gradient / P
== the full loss's gradient on rank r's rows, mean of the scale/bias gradients == full.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvl.losses import ClipLoss, SigLipLoss
from tests._multiprocess import run_workers

WORLD = 2


def _inputs(sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    img = F.normalize(torch.randn(n, 8, generator=g), dim=-1)
    txt = F.normalize(img + 0.5 * torch.randn(n, 8, generator=g), dim=-1)  # paired, imperfectly
    return img, txt, torch.tensor(7.0), torch.tensor(-3.0)


def _make(kind: str, gather: bool = True):
    return ClipLoss(label_smoothing=0.1, gather=gather) if kind == "clip" else SigLipLoss(gather=gather)


def _loss(fn, img, txt, scale, bias):
    return fn(image_features=img, text_features=txt, logit_scale=scale, logit_bias=bias)


def _worker(rank: int, world: int, kind: str, sizes: list[int], gather: bool) -> dict:
    # Runs in its own process inside an initialised gloo group (tests/_multiprocess.py).
    img, txt, scale, bias = _inputs(sizes)
    lo = sum(sizes[:rank])
    sl = slice(lo, lo + sizes[rank])
    img, txt = img[sl].clone().requires_grad_(), txt[sl].clone().requires_grad_()
    scale, bias = scale.clone().requires_grad_(), bias.clone().requires_grad_()
    loss = _loss(_make(kind, gather), img, txt, scale, bias)
    loss.backward()
    return {"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad, "bias": bias.grad}


def _run(tmp_path, kind: str, sizes: list[int], gather: bool = True) -> list[dict]:
    return run_workers(_worker, (kind, sizes, gather), world_size=WORLD, tmp_path=tmp_path)


def _reference(kind: str, sizes: list[int]) -> dict:
    img, txt, scale, bias = (t.clone().requires_grad_() for t in _inputs(sizes))
    loss = _loss(_make(kind), img, txt, scale, bias)
    loss.backward()
    return {"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad, "bias": bias.grad}


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("sizes", [[4, 4], [5, 3]], ids=["even", "uneven_last_batch"])
def test_ranks_optimise_the_global_batch_loss(tmp_path, kind, sizes):
    ranks, ref = _run(tmp_path, kind, sizes), _reference(kind, sizes)
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, ref["loss"], atol=1e-5, rtol=1e-5)
    for rank, r in enumerate(ranks):
        lo = sum(sizes[:rank])
        rows = slice(lo, lo + sizes[rank])
        torch.testing.assert_close(r["img"] / WORLD, ref["img"][rows], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r["txt"] / WORLD, ref["txt"][rows], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sum(r["scale"] for r in ranks) / WORLD, ref["scale"], atol=1e-5, rtol=1e-4)
    if kind == "siglip":
        torch.testing.assert_close(sum(r["bias"] for r in ranks) / WORLD, ref["bias"], atol=1e-5, rtol=1e-4)


def test_without_gather_each_rank_sees_only_its_batch(tmp_path):
    # the check above can fail: local losses are a different objective
    ranks, ref = _run(tmp_path, "clip", [4, 4], gather=False), _reference("clip", [4, 4])
    assert not torch.allclose(sum(r["loss"] for r in ranks) / WORLD, ref["loss"], atol=1e-3)
