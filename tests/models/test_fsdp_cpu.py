"""ContrastivePretraining under torch's FSDP, 2 CPU processes (gloo): it trains as one process on the global batch.

Lightning's ``FSDPStrategy`` refuses ``accelerator: cpu`` ("requires a GPU accelerator") and,
past that, hands torch's FSDP no device on the CPU ("FSDP needs a non-CPU accelerator
device"), so ``trainer/fsdp.yaml`` itself runs on GPUs only. What it does is done here by
hand, as Lightning does it: the task is built on every rank from one seed, its
``configure_model`` runs, the task is wrapped (torch's FSDP v1 as Lightning's strategy
does, ``ModuleWrapPolicy({Block})`` and ``use_orig_params=True``, told the CPU device; and
FSDP2's ``fully_shard`` per ``Block`` and on the task), then ``configure_optimizers`` runs
on the wrapped task and each step is a forward of the wrapper. Each rank takes half of the
global batch (tests/_multiprocess.py: fresh interpreters, a file rendezvous, a hard
timeout). What must hold:

* No 0-d parameter stops the wrap (FSDP refuses them: ``logit_scale``/``logit_bias`` are ``(1,)``).
* The optimiser's weight-decay groups hold as many original parameters, decayed and
  exempt, as the unwrapped task's (FSDP v1 turns every parameter into a flat 1-D shard).
* The mean of the ranks' losses is the single-process loss of the global batch at the first
  step and, after an AdamW step of sharded gradients, at the second (the loss gathers the
  features of both ranks; FSDP averages the gradients).
* The zero-shot prompts, encoded at an evaluation epoch's end outside any step, go through
  the wrapper's forward and give the single-process class embeddings and logit scale.
* A validation step in which one rank's whole batch was unreadable (it holds only the skip
  counts) does not leave the other rank waiting in the forward's all-gathers: the step is
  called through the wrapper as Lightning calls it, the other rank's features are the
  single-process ones, and the skipped rank counts its samples and keeps no outputs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests._multiprocess import run_workers

WORLD, PER_RANK, STEPS, SIZE = 2, 4, 2, 32
TIMEOUT = 150.0  # seconds for both ranks, start-up included
TASK = {"vision_encoder": "test_vit_tiny_patch8", "text_encoder": "test_text_tiny", "embed_dim": 16, "img_size": SIZE}
REPORTS = ["No acute cardiopulmonary process.", "Large right pleural effusion.", "Moderate cardiomegaly.",
           "Endotracheal tube 4 cm above the carina.", "Small left pneumothorax.", "Clear lungs, no effusion.",
           "Bibasilar atelectasis.", "Enlarged cardiac silhouette with mild edema."]


def _task(loss: str):
    from medvl.models import ContrastivePretraining

    torch.manual_seed(0)
    task = ContrastivePretraining(**TASK, loss=loss)
    task.configure_model()  # Lightning runs it before any strategy wraps the model
    return task


def _batches() -> list[tuple[torch.Tensor, list[str]]]:
    """The global batches of the steps: images and reports."""
    g = torch.Generator().manual_seed(1)
    n = PER_RANK * WORLD
    return [(torch.randn(n, 1, SIZE, SIZE, generator=g), [REPORTS[(i + s) % len(REPORTS)] for i in range(n)])
            for s in range(STEPS)]


def _optimizer(task, wrapped) -> torch.optim.Optimizer:
    """The task's own optimiser, built on the wrapped task as Lightning's FSDP strategy builds it."""
    task._trainer = SimpleNamespace(estimated_stepping_batches=STEPS, strategy=SimpleNamespace(model=wrapped))
    try:
        return task.configure_optimizers()["optimizer"]
    finally:
        task._trainer = None


def _groups(opt: torch.optim.Optimizer) -> dict[str, int]:
    """How many parameters the optimiser decays and exempts."""
    counts = {"decayed": 0, "exempt": 0}
    for group in opt.param_groups:
        counts["decayed" if group["weight_decay"] > 0 else "exempt"] += len(group["params"])
    return counts


def _train(task, forward, opt: torch.optim.Optimizer, rows: slice) -> list[torch.Tensor]:
    losses = []
    for image, reports in _batches():
        loss = task.loss_fn(**forward(image[rows], reports[rows]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return losses


def _zero_shot(task, wrapped) -> tuple[torch.Tensor, torch.Tensor]:
    """The class embeddings and scale as an evaluation epoch's end computes them (outside any step)."""
    task._trainer = SimpleNamespace(strategy=SimpleNamespace(model=wrapped))
    try:
        assert task._wrapped() is wrapped
        return task._zero_shot_inputs()
    finally:
        task._trainer = None


def _validation_step(task, wrapped, batch: dict) -> None:
    """``validation_step`` as Lightning's strategies call it: redirected through the wrapper's forward."""
    from lightning.pytorch.strategies.strategy import _ForwardRedirection

    task._trainer = SimpleNamespace(world_size=WORLD, training=False, testing=False, predicting=False)
    try:
        with torch.no_grad():
            _ForwardRedirection()(wrapped, task, "validation_step", batch, 0)
    finally:
        task._trainer = None


def _eval_batch(rank: int) -> dict:
    """Rank 0: the first global batch's first rows; rank 1: a batch whose samples were all unreadable."""
    if rank == 1:
        return {"n_skipped": PER_RANK, "skipped": [{"file": f"bad{i}.dcm", "reason": "truncated"}
                                                   for i in range(PER_RANK)]}
    image, reports = _batches()[0]
    labels = (torch.arange(PER_RANK * 6).reshape(PER_RANK, 6) % 3 == 0).float()  # the task's 6 default label names
    return {"image": image[:PER_RANK], "report": reports[:PER_RANK], "labels": labels}


def _fsdp_worker(rank: int, world: int, kind: str, loss: str) -> dict:
    # Runs in its own process inside an initialised gloo group (tests/_multiprocess.py).
    from medvl.layers import Block

    task = _task(loss)
    assert all(p.ndim > 0 for p in task.parameters())
    if kind == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        # As Lightning's FSDPStrategy wraps (trainer/fsdp.yaml), told the CPU device.
        wrapped = FullyShardedDataParallel(task, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True,
                                           device_id=torch.device("cpu"))
        sharded = sum(bool(getattr(p, "_fsdp_flattened", False)) for p in task.parameters())
        flat = [p.shape for p in task.parameters() if getattr(p, "_fsdp_flattened", False) and p.ndim > 1]
        assert not flat, f"FSDP left unflattened views: the test would not test param_groups ({flat[:3]})"
    else:
        from torch.distributed.fsdp import fully_shard

        for module in task.modules():
            if isinstance(module, Block):
                fully_shard(module)
        wrapped = fully_shard(task)
        from torch.distributed.tensor import DTensor

        sharded = sum(isinstance(p, DTensor) for p in task.parameters())
    opt = _optimizer(task, wrapped)
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    losses = _train(task, wrapped, opt, rows)
    class_emb, scale = _zero_shot(task, wrapped)
    _validation_step(task, wrapped, _eval_batch(rank))
    return {"losses": losses, "groups": _groups(opt), "class_emb": class_emb, "scale": scale, "sharded": sharded,
            "n_params": len(list(task.parameters())), "eval": task._eval_outputs,
            "skipped": dict(task.health.skipped)}


def _refusals_worker(rank: int, world: int) -> dict:
    """param_groups refuses what it cannot decide instead of dropping weight decay."""
    from torch import nn
    from torch.distributed.fsdp import FullyShardedDataParallel

    from medvl.optim import param_groups

    out = {}
    for orig in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))  # no record_shapes before the wrap
        FullyShardedDataParallel(model, use_orig_params=orig, device_id=torch.device("cpu"))
        with pytest.raises(ValueError) as err:
            param_groups(model, weight_decay=0.1)
        out[f"use_orig_params={orig}"] = str(err.value)
    return out


def _reference(loss: str) -> dict:
    """One process, the whole global batch, the unwrapped task."""
    task = _task(loss)
    opt = _optimizer(task, task)
    losses = _train(task, task, opt, slice(None))
    class_emb, scale = _zero_shot(task, task)
    _validation_step(task, task, _eval_batch(0))
    return {"losses": losses, "groups": _groups(opt), "class_emb": class_emb, "scale": scale,
            "n_params": len(list(task.parameters())), "eval": task._eval_outputs}


@pytest.mark.parametrize(("kind", "loss"), [("fsdp", "clip"), ("fully_shard", "siglip")],
                         ids=["FSDP-use_orig_params-clip", "FSDP2-fully_shard-siglip"])
def test_fsdp_on_two_cpu_processes_trains_as_one_process_on_the_global_batch(tmp_path, kind, loss):
    ranks = run_workers(_fsdp_worker, (kind, loss), world_size=WORLD, tmp_path=tmp_path, timeout=TIMEOUT)
    ref = _reference(loss)
    for rank in ranks:
        assert rank["n_params"] == ref["n_params"] and rank["sharded"] == ref["n_params"], "every parameter sharded"
        assert rank["groups"] == ref["groups"], f"{kind}: weight-decay groups {rank['groups']} != {ref['groups']}"
    assert ref["groups"]["decayed"] > 0 and ref["groups"]["exempt"] > 0
    for step in range(STEPS):
        mean = sum(r["losses"][step] for r in ranks) / WORLD
        torch.testing.assert_close(mean, ref["losses"][step], rtol=1e-5, atol=1e-5,
                                   msg=lambda m, s=step: f"{kind}, step {s + 1}: {m}")
    assert ranks[0]["losses"][0] != pytest.approx(float(ranks[1]["losses"][0]), rel=1e-3)  # each rank its own rows
    for rank in ranks:
        assert rank["scale"].shape == ()
        torch.testing.assert_close(rank["scale"], ref["scale"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rank["class_emb"], ref["class_emb"], rtol=1e-4, atol=1e-5)
    (kept,), (ref_kept,) = ranks[0]["eval"], ref["eval"]
    assert ranks[1]["eval"] == [] and ranks[1]["skipped"] == {"val": PER_RANK} and ranks[0]["skipped"] == {}
    for key in ("image_features", "text_features"):
        assert kept[key].shape[0] == PER_RANK
        torch.testing.assert_close(kept[key], ref_kept[key], rtol=1e-4, atol=1e-5)


def test_param_groups_refuse_fsdp_parameters_whose_shapes_were_not_recorded(tmp_path):
    for rank in run_workers(_refusals_worker, (), world_size=WORLD, tmp_path=tmp_path, timeout=TIMEOUT):
        assert "record_shapes" in rank["use_orig_params=True"]
        assert "FlatParameter" in rank["use_orig_params=False"] and "use_orig_params=True" in rank[
            "use_orig_params=False"]
