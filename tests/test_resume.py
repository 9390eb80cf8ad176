"""A run killed with SIGKILL mid-epoch and resumed with ``--ckpt_path last`` ends as if never interrupted.

One configuration, three ``medvl fit`` runs: an uninterrupted one, one in a fresh process
that kills itself (SIGKILL: no clean-up, no flush, no atexit) one step after a mid-epoch
checkpoint, and its resumption from ``last.ckpt``. The resumed run ends with bitwise the
uninterrupted run's weights, optimiser state and schedule, logs into the killed run's
version folder, and that folder's metrics.csv holds exactly the uninterrupted run's rows.
The model draws from the global generator (patch dropout) and the loader augments in
two worker processes, so the data order, the augmentation and the generators' states
all have to be restored for the weights to agree. The uninterrupted and the resumed run
run in this process (a fresh interpreter costs ~15 s of CPU in imports), one thread
each like the killed one, so that the three compute alike.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
KILL_ENV = "MEDVL_TEST_SIGKILL_AT_STEP"
TIMEOUT = 240.0


class SigkillAt(L.Callback):
    """Sends SIGKILL to its own process when training reaches global step ``$MEDVL_TEST_SIGKILL_AT_STEP``."""

    def on_train_batch_start(self, trainer, *args) -> None:
        step = os.environ.get(KILL_ENV)
        if step and trainer.global_step == int(step):
            os.kill(os.getpid(), signal.SIGKILL)


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``python -m medvl.cli *args`` in a fresh session, output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "medvl.cli", *args], cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env})


def _finish(proc: subprocess.Popen, log: Path) -> int:
    """The exit code; the process group (loader workers a killed run leaves behind) is killed in any case."""
    try:
        code = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    if code is None:
        pytest.fail(f"the killed run did not end in {TIMEOUT:g} s:\n{log.read_text()[-4000:]}")
    return code


def _config(tmp_path: Path, dataset: Path, num_workers: int) -> Path:
    config = {
        "seed_everything": 3,
        "model": {"class_path": "medvl.models.ContrastivePretraining", "init_args": {
            "vision_encoder": "test_vit_tiny_patch8", "text_encoder": "test_text_tiny", "embed_dim": 16,
            "vision_kwargs": {"patch_dropout": 0.25}}},  # draws from the global torch generator
        "data": {"class_path": "medvl.datamodules.SyntheticCXR", "init_args": {
            "root": str(dataset), "n": 24, "img_size": 32, "batch_size": 4, "augment": True,
            "num_workers": num_workers}},  # 21 training studies: 5 batches per epoch
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0,
            "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"every_n_train_steps": 2, "save_last": True, "save_top_k": 0}},
                {"class_path": "tests.test_resume.SigkillAt"},
            ]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(root: Path) -> list[dict[str, str]]:
    versions = sorted((root / "logs").iterdir())
    assert [v.name for v in versions] == ["version_0"], f"{root}: one run, one log folder: {versions}"
    with open(versions[0] / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _leaves(obj, prefix=""):
    """(key path, tensor or number) of everything in a nested checkpoint entry."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread here as in the killed process (reductions split their work by the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for var in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them; undone after the test
        monkeypatch.delenv(var, raising=False)
    yield
    torch.set_num_threads(before)


def test_sigkill_mid_epoch_then_resume_last_equals_an_uninterrupted_run(make_synthetic, tmp_path, one_thread):
    from medvl.cli import main

    dataset = make_synthetic(24, 5)
    config = _config(tmp_path, dataset, num_workers=2)
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    def args(root: Path, *extra: str) -> list[str]:
        return ["fit", "--config", str(config), "--trainer.default_root_dir", str(root), *extra]

    # Checkpoints at steps 2, 4, 6, ... (5 batches per epoch): killed before step 8, the last is step 6, one
    # batch into epoch 1. The killed run starts first and runs beside the uninterrupted one.
    proc = _start(args(killed), tmp_path / "killed.log", env={KILL_ENV: "7"})
    assert main(args(whole)) == 0
    code = _finish(proc, tmp_path / "killed.log")
    assert code == -signal.SIGKILL, f"exit {code}\n{(tmp_path / 'killed.log').read_text()[-4000:]}"

    last = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6
    (position,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert position["epoch"] == 1 and 0 < position["batches"] < position["num_batches"], position
    # One row per training step so far, the killed run's last one after its last checkpoint (step 6)
    logged = [r for r in _rows(killed) if r["train/loss"]]
    assert len(logged) == 7, "the killed run's rows up to the kill (replayed rows are dropped on resume)"

    assert main(args(killed, "--ckpt_path", "last", "--weights_only", "true")) == 0

    a = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 10
    for part in ("state_dict", "optimizer_states", "lr_schedulers"):
        ours, theirs = dict(_leaves(a[part])), dict(_leaves(b[part]))
        assert ours.keys() == theirs.keys(), part
        differ = [k for k in ours if not (torch.equal(ours[k], theirs[k]) if isinstance(ours[k], torch.Tensor)
                                          else ours[k] == theirs[k])]
        assert not differ, f"{part} differs after the resume: {differ[:5]}"
    assert _rows(killed) == _rows(whole)  # every row once, the killed run's and the resumed run's


def test_the_cli_installs_the_resume_machinery_and_keeps_a_checkpoint_io_of_ones_own(make_synthetic, tmp_path):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from medvl.cli import _lightning_cli
    from medvl.models._checkpoint import AtomicCheckpointIO, ResumableCSVLogger, ResumeRecord

    config = _config(tmp_path, make_synthetic(24, 5), num_workers=0)
    cli = _lightning_cli(["--config", str(config), "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert isinstance(cli.trainer.logger, ResumableCSVLogger)
    assert sum(isinstance(c, ResumeRecord) for c in cli.trainer.callbacks) == 1
    own = ["--trainer.plugins", "lightning.pytorch.plugins.io.TorchCheckpointIO"]
    cli = _lightning_cli(["--config", str(config), "--trainer.default_root_dir", str(tmp_path), *own], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is TorchCheckpointIO
