"""Checkpoint machinery: atomic writes under SIGKILL, the format record and its errors, the continued CSV log."""

from __future__ import annotations

import csv
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from medvl.models._checkpoint import (
    CHECKPOINT_FORMAT,
    AtomicCheckpointIO,
    CheckpointMismatchError,
    ResumableCSVLogger,
    _rng_states,
    _set_rng_states,
    check_checkpoint,
    write_atomic,
)


def _killed_while_writing(path: Path) -> int:
    """Fork a child that starts to overwrite ``path`` atomically and SIGKILLs itself half-way; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: no Python clean-up of any kind, as under a real kill
        try:
            def write(f) -> None:
                f.write(b"\0" * 4096)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            write_atomic(path, write)
        finally:
            os._exit(3)  # not reached
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_whole(tmp_path):
    io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.arange(4.0)}, last)
    status = _killed_while_writing(last)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    old = torch.load(last, weights_only=True)
    assert old["step"] == 1 and torch.equal(old["w"], torch.arange(4.0))
    (partial,) = [p for p in last.parent.iterdir() if p != last]
    assert "last" not in partial.name, "Lightning's --ckpt_path last takes any file whose name holds 'last'"
    io.save_checkpoint({"step": 2}, last)  # the next save in the folder clears what the killed one left
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(last, weights_only=True) == {"step": 2}


def test_an_error_during_a_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def fail_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\3\4 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def _record(**over) -> dict:
    return {"medvl": {"format": CHECKPOINT_FORMAT, "version": "0.1.0",
                      "task": "medvl.models.contrastive.ContrastivePretraining", **over}}


def test_a_checkpoint_of_another_format_or_task_is_refused_naming_both():
    from medvl import __version__
    from medvl.models import ContrastivePretraining, ReportGeneration

    check_checkpoint({}, "old.ckpt", task=ReportGeneration)  # no record: written before it existed
    check_checkpoint(_record(), "a.ckpt", task=ContrastivePretraining)
    check_checkpoint(_record(task="medvl.models.ContrastivePretraining"), "a.ckpt", task=ContrastivePretraining)
    with pytest.raises(CheckpointMismatchError) as err:
        check_checkpoint(_record(format=CHECKPOINT_FORMAT + 1, version="9.0.0"), "new.ckpt")
    message = str(err.value)
    assert f"format {CHECKPOINT_FORMAT + 1}" in message and "medvl 9.0.0" in message
    assert f"this medvl {__version__} reads format {CHECKPOINT_FORMAT}" in message and "upgrade medvl" in message
    with pytest.raises(CheckpointMismatchError, match=r"a.ckpt is a medvl.models.contrastive.ContrastivePretraining "
                                                      r"checkpoint, but the configured task is medvl.models.report"):
        check_checkpoint(_record(), "a.ckpt", task=ReportGeneration)


def test_the_cli_refuses_an_incompatible_checkpoint_before_it_builds_anything(tmp_path):
    from medvl.cli import _check_checkpoint_task

    path = tmp_path / "future.ckpt"
    torch.save({**_record(format=99, version="3.0.0"), "hyper_parameters": {}}, path)
    with pytest.raises(SystemExit, match=r"medvl: .*future.ckpt: checkpoint format 99 written by medvl 3.0.0"):
        _check_checkpoint_task(path, "medvl.models.ContrastivePretraining")


def test_the_generators_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.save({"rng": _rng_states()}, tmp_path / "c.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    _set_rng_states(torch.load(tmp_path / "c.ckpt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_a_continued_log_drops_the_rows_the_resumed_run_logs_again(tmp_path):
    first = ResumableCSVLogger(tmp_path, name="logs")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)  # written at once: no finalize needed
    metrics = Path(first.log_dir) / "metrics.csv"
    with open(metrics, "a") as f:
        f.write("0.5,")  # a row the kill cut short
    assert first.version == 0

    resumed = ResumableCSVLogger(tmp_path, name="logs")
    resumed.continue_run(0)
    resumed.log_metrics({"train/loss": 40.0}, step=4)  # the checkpoint was at step 3: rows 4 and 5 go
    header, rows = _csv(metrics)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4"] and rows[-1]["train/loss"] == "40.0"
    resumed.log_metrics({"val/auroc": 0.5}, step=4)  # a new column rewrites the file with every row
    header, rows = _csv(metrics)
    assert header == ["step", "train/loss", "val/auroc"] and len(rows) == 6
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["version_0"]
    with pytest.raises(RuntimeError, match="before anything is logged"):
        resumed.continue_run(0)
