"""``medvl fit`` under DDP with 2 CPU processes (gloo) trains exactly as one process on the global batch.

Each run is the real console entry (``python -m medvl.cli fit``) in a fresh interpreter,
under a hard timeout (:func:`tests._multiprocess.run_python`: its own session, killed with
whatever it started). A single-process run at batch size 8 is the reference; the DDP run
has 2 ranks at 4 each, same seed, no augmentation and no dropout. The synthetic set has 24
training studies, so the 3 steps are one whole epoch. The callback
:class:`tests.models._step_record.StepRecord` writes what each rank did.

What must hold, and why it is exact:

* **Sampler.** The ranks' batches at step ``b`` are disjoint and together are the
  single-process batch ``b``; over the epoch every training study is seen exactly once.
  That needs the distributed sampler to shard the data module's seeded order by
  interleaving (rank ``r`` takes positions ``r, r + 2, ...``): then step ``b`` of the
  ranks covers positions ``8b .. 8b + 7`` of the order, as the single process does.
* **Loss.** Each rank scores its own rows against the gathered features of both ranks,
  scaled so that the mean of the rank losses is the loss of the global batch
  (``medvl.losses.distributed``; tests/losses/test_distributed.py holds it for the loss
  alone). The contrastive loss does not depend on the order of the pairs, so the mean of
  the ranks' losses equals the single-process loss at every step, to float rounding.
* **Weights.** DDP averages the ranks' gradients, which makes them the single-process
  gradients; equal gradients give equal AdamW steps, so the weights after 1 and 3 steps
  agree. One exception: the key bias of attention (the middle third of ``qkv.bias``) has
  a gradient that is zero in exact arithmetic (a constant added to every key of a
  query's softmax row changes nothing), and AdamW divides that rounding noise by its own
  magnitude. It moves by up to ``lr`` per step in either run, differently; it is held to
  that bound instead.

The last test launches the same run with ``torchrun`` and ``trainer/multi_node.yaml``
(moved to the CPU, 1 node x 2 processes): Lightning must take the ranks from torchrun's
environment and train the same global batches.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests._multiprocess import _default_env, run_python

REPO = Path(__file__).resolve().parents[2]
SYNTH = (28, 6)  # 28 studies, seed 6: 24 in the training split
TRAIN = 24
PER_RANK, WORLD = 4, 2
STEPS = TRAIN // (PER_RANK * WORLD)  # 3: one epoch
LR = 5e-4  # ContrastivePretraining's default
SIZE = 32
TIMEOUT = 180  # seconds for one run, start-up included (each rank imports Lightning)
SAVE_AFTER = (1, STEPS)


def _fit_args(dataset: Path, out: Path, batch_size: int, *extra: str, trainer: str | None = None) -> list[str]:
    """``-m medvl.cli fit ...`` of the tiny run; ``trainer`` a trainer YAML that the flags after it override."""
    record = {"class_path": "tests.models._step_record.StepRecord",
              "init_args": {"out": str(out), "save_after": list(SAVE_AFTER)}}
    return [
        "-m", "medvl.cli", "fit", *(["--trainer", trainer] if trainer else []), "--seed_everything", "3",
        "--model", "medvl.models.ContrastivePretraining",
        "--model.vision_encoder", "test_vit_tiny_patch8", "--model.text_encoder", "test_text_tiny",
        "--model.embed_dim", "16", "--model.lr", str(LR),
        "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(dataset),
        "--data.n", str(SYNTH[0]), "--data.seed", str(SYNTH[1]), "--data.img_size", str(SIZE),
        "--data.batch_size", str(batch_size), "--data.augment", "false", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(out),
        f"--trainer.callbacks={json.dumps([record])}",
        *extra,
    ]


def _run(args: list[str], out: Path, world: int) -> list[dict]:
    """Runs ``python *args`` from the repository root; the ranks' records in rank order."""
    # One thread per process, gloo on loopback; no launcher of the test's own (a CI job under
    # SLURM or torchrun) for Lightning to mistake for this run's.
    launched = ("SLURM_", "TORCHELASTIC_", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "GROUP_RANK",
                "MASTER_", "NODE_RANK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launched)} | _default_env()
    proc = run_python(args, timeout=TIMEOUT, cwd=REPO, env=env)
    assert proc.returncode == 0, f"medvl fit exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    assert [r["rank"] for r in records] == list(range(world))
    assert all(len(r["steps"]) == STEPS for r in records), [len(r["steps"]) for r in records]
    return records


@pytest.fixture(scope="module")
def dataset(make_synthetic) -> Path:
    return make_synthetic(*SYNTH)


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("single")
    (record,) = _run(_fit_args(dataset, out, PER_RANK * WORLD), out, world=1)
    assert record["world_size"] == 1
    return record, out


@pytest.fixture(scope="module")
def ddp(dataset, tmp_path_factory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("ddp")
    args = _fit_args(dataset, out, PER_RANK, "--trainer.strategy", "ddp", "--trainer.devices", str(WORLD))
    return _run(args, out, world=WORLD), out


def _train_ids(dataset: Path) -> set[str]:
    rows = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines() if line.strip()]
    ids = {str(r["study_id"]) for r in rows if r["split"] == "train"}
    assert len(ids) == TRAIN
    return ids


def _check_global_batches(ranks: list[dict], single: dict) -> None:
    for step in range(STEPS):
        batches = [r["steps"][step]["study_id"] for r in ranks]
        assert all(len(b) == PER_RANK for b in batches)
        assert not set(batches[0]) & set(batches[1]), f"step {step + 1}: the ranks share samples"
        assert set(batches[0]) | set(batches[1]) == set(single["steps"][step]["study_id"]), (
            f"step {step + 1}: the ranks' batches {batches} are not the single-process batch "
            f"{single['steps'][step]['study_id']} (the distributed sampler must shard the data module's "
            "order by interleaving, not permute it again)")


def _check_losses(ranks: list[dict], single: dict) -> None:
    for step in range(STEPS):
        mean = sum(r["steps"][step]["loss"] for r in ranks) / len(ranks)
        assert mean == pytest.approx(single["steps"][step]["loss"], rel=1e-5, abs=1e-6), f"step {step + 1}"


def test_ddp_ranks_split_each_global_batch_and_cover_the_epoch(ddp, single, dataset):
    ranks, _ = ddp
    assert {(r["world_size"], r["strategy"]) for r in ranks} == {(WORLD, "DDPStrategy")}
    assert {r["sampler"] for r in ranks} == {"DistributedSamplerWrapper"}
    _check_global_batches(ranks, single[0])
    seen = [sid for r in ranks for s in r["steps"] for sid in s["study_id"]]
    assert len(seen) == len(set(seen)) == TRAIN and set(seen) == _train_ids(dataset)


def test_ddp_losses_are_the_single_process_losses_of_the_global_batch(ddp, single):
    ranks, _ = ddp
    _check_losses(ranks, single[0])
    # the ranks' shares differ: each scored its own rows, against the gathered features of both
    assert ranks[0]["steps"][0]["loss"] != pytest.approx(ranks[1]["steps"][0]["loss"], rel=1e-3)


@pytest.mark.parametrize("step", SAVE_AFTER)
def test_ddp_weights_are_the_single_process_weights(ddp, single, step):
    a = torch.load(single[1] / f"step{step}.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(ddp[1] / f"step{step}.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == step
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    for name, x in sa.items():
        y = sb[name]
        if name.endswith("attn.qkv.bias"):  # the key bias: see the module docstring
            d = x.shape[0] // 3
            key = slice(d, 2 * d)
            assert (x[key] - y[key]).abs().max() <= 2 * LR * step, name
            x, y = torch.cat([x[:d], x[2 * d:]]), torch.cat([y[:d], y[2 * d:]])
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n} after step {step}: {m}")


def test_torchrun_launch_of_the_multi_node_config(single, dataset, tmp_path):
    out = tmp_path / "torchrun"
    # Each worker under its own hard limit: torchrun starts them in sessions of their own,
    # out of reach of the kill that ends a timed-out run_python.
    limit = ["timeout", "-s", "KILL", str(TIMEOUT - 10), sys.executable]
    args = ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", str(WORLD),
            "--no-python", *limit,
            *_fit_args(dataset, out, PER_RANK, "--trainer.devices", str(WORLD), "--trainer.num_nodes", "1",
                       "--trainer.precision", "32-true", trainer=str(REPO / "trainer" / "multi_node.yaml"))]
    ranks = _run(args, out, world=WORLD)
    assert {(r["world_size"], r["environment"]) for r in ranks} == {(WORLD, "TorchElasticEnvironment")}
    _check_global_batches(ranks, single[0])
    _check_losses(ranks, single[0])


def test_a_rank_whose_whole_batch_is_unreadable_still_takes_the_step(ddp, dataset, tmp_path):
    """Rank 1's whole batch of step 2 unreadable: it joins the collectives with no rows, and the run
    trains exactly as one process on the samples that remain (its share of the global loss is 0)."""
    ranks, _ = ddp
    bad = set(ranks[1]["steps"][1]["study_id"])
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        if str(row["study_id"]) in bad:
            path = data / row["image"]
            path.write_bytes(path.read_bytes()[:200])  # a truncated DICOM
    results = []
    for name, batch, extra, world in (("single", PER_RANK * WORLD, (), 1),
                                      ("ddp", PER_RANK, ("--trainer.strategy", "ddp", "--trainer.devices",
                                                         str(WORLD)), WORLD)):
        out = tmp_path / name
        results.append(_run(_fit_args(data, out, batch, "--data.preload", "false", *extra), out, world=world))
    (single,), ddp_ranks = results
    step2 = [r["steps"][1] for r in ddp_ranks]
    assert step2[1]["study_id"] == [] and step2[1]["n_skipped"] == PER_RANK and step2[1]["loss"] == 0.0
    assert len(step2[0]["study_id"]) == PER_RANK
    assert sorted(single["steps"][1]["study_id"]) == sorted(step2[0]["study_id"])
    _check_losses(ddp_ranks, single)  # every step, the skipped one included
    a = torch.load(tmp_path / "single" / f"step{STEPS}.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ddp" / f"step{STEPS}.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for name, x in a.items():
        if not name.endswith("attn.qkv.bias"):  # the key bias: see the module docstring
            torch.testing.assert_close(b[name], x, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
