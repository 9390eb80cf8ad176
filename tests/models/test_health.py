"""A non-finite loss skips its optimiser step (weights untouched, counted); too many in a row stop the run.
Skipped samples are counted by reason, their files named once and summarised at the end of the run; a run
resumed from a checkpoint counts the whole run."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from medvl.datamodules import SyntheticCXR
from medvl.models import ContrastivePretraining
from medvl.models._health import CHECKPOINT_KEY, NonFiniteLossError, RunHealth


def _setup(make_synthetic, poisoned: set[int]):
    data = SyntheticCXR(root=str(make_synthetic(40, 3)), img_size=32, batch_size=8)
    task = ContrastivePretraining(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny", embed_dim=16,
                                  img_size=32)
    task.loss_fn = _Poisoned(task.loss_fn, poisoned)
    return task, data


class _Poisoned(torch.nn.Module):
    """The task's loss, NaN at the given call indices."""

    def __init__(self, loss: torch.nn.Module, poisoned: set[int]) -> None:
        super().__init__()
        self.loss, self.poisoned, self.calls = loss, poisoned, 0

    def forward(self, **kw):
        value = self.loss(**kw)
        self.calls += 1
        return value * float("nan") if self.calls - 1 in self.poisoned else value


def _trainer(tmp_path, batches: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=batches, limit_val_batches=0, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)


def test_a_nan_loss_skips_its_step_and_is_counted(make_synthetic, tmp_path):
    torch.manual_seed(0)
    task, data = _setup(make_synthetic, poisoned={1})
    trainer = _trainer(tmp_path, 3)
    trainer.fit(task, datamodule=data)
    assert task.health.nonfinite_steps == 1 and task.health.nonfinite_in_row == 0
    assert all(torch.isfinite(p).all() for p in task.parameters())
    assert trainer.callback_metrics["train/nonfinite_steps"] == 1.0


def test_skipped_steps_leave_the_weights_untouched(make_synthetic, tmp_path):
    torch.manual_seed(0)
    task, data = _setup(make_synthetic, poisoned={0, 1, 2})
    before = {k: v.clone() for k, v in task.state_dict().items()}
    _trainer(tmp_path, 3).fit(task, datamodule=data)
    assert task.health.nonfinite_steps == 3
    after = task.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # AdamW never saw a gradient


def test_too_many_in_a_row_stop_the_run(make_synthetic, tmp_path):
    torch.manual_seed(0)
    task, data = _setup(make_synthetic, poisoned={0, 1, 2})
    task.health = RunHealth(max_nonfinite_in_row=3)
    with pytest.raises(NonFiniteLossError, match="3 non-finite training losses in a row"):
        _trainer(tmp_path, 3).fit(task, datamodule=data)
    with pytest.raises(ValueError, match="at least 1"):
        RunHealth(0)


def test_skips_are_counted_by_reason_named_once_and_summarised_per_file(caplog):
    from types import SimpleNamespace

    from medvl.models._health import NAMED_FILES, UNKNOWN_REASON

    health, module = RunHealth(), SimpleNamespace(_trainer=None)  # no trainer: the training stage
    empty, codec = "not a DICOM file (empty file)", "no decoder for transfer syntax 1.2.3"
    bad = [{"file": "/d/a.dcm", "reason": empty}, {"file": "/d/b.dcm", "reason": codec}]
    with caplog.at_level(logging.WARNING, logger="medvl"):
        for _ in range(2):  # two epochs meet the same two files
            health.count(module, {"n_skipped": 2, "skipped": bad})
            health.count(module, {"n_skipped": 0})
            assert health.report(module, "train") == 2
        health.count(module, {"n_skipped": 1})  # a collate function that lists no file
        out = health.summary(module, "fit")
    assert caplog.text.count(f"train: skipping /d/a.dcm: {empty}") == 1
    per_epoch = f"train: skipped 2 unreadable sample(s) this epoch; by reason: 1 x {empty}; 1 x {codec}"
    assert caplog.text.count(per_epoch) == 2
    train = out["stages"]["train"]
    assert train["files"] == {"/d/a.dcm": empty, "/d/b.dcm": codec}
    assert (train["unreadable_files"], train["skipped_samples"], train["dropped_at_setup"]) == (2, 5, 0)
    assert train["by_reason"] == {empty: 1, codec: 1, UNKNOWN_REASON: 1}
    assert out["stages"]["val"]["unreadable_files"] == 0 and out["nonfinite_steps"] == 0
    assert "run health (fit): unreadable files and skipped samples, by stage" in caplog.text
    assert f"    first: /d/a.dcm, /d/b.dcm\n  val: none" in caplog.text

    caplog.clear()
    many = [{"file": f"/d/{i}.dcm", "reason": empty} for i in range(NAMED_FILES + 5)]
    with caplog.at_level(logging.WARNING, logger="medvl"):
        health.begin(["train"])
        health.count(module, {"n_skipped": len(many), "skipped": many})
        out = health.summary(module, "fit")
    assert caplog.text.count("train: skipping ") == NAMED_FILES  # the rest are counted, not named
    assert out["stages"]["train"]["by_reason"] == {empty: NAMED_FILES + 5}
    assert "(+20 more)" in caplog.text


def test_a_clean_run_says_so_in_one_line(caplog):
    from types import SimpleNamespace

    with caplog.at_level(logging.INFO, logger="medvl"):
        RunHealth().summary(SimpleNamespace(_trainer=None), "test")
    assert "run health (test): no sample skipped (test)" in caplog.text


class _KillAt(L.Callback):
    """Stops the run (an exception: nothing after it runs, as after a kill) when training reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise _Killed


class _Killed(Exception):
    pass


def test_a_resumed_run_counts_the_skips_of_the_whole_run(make_synthetic, tmp_path):
    """A run stopped after a mid-epoch checkpoint and resumed from it ends with the uninterrupted run's counts.

    24 studies (21 training: 5 batches of 4 an epoch), 2 epochs, a checkpoint every 2 steps,
    stopped before step 8: the last checkpoint is step 6, one batch into epoch 1, and step 7
    (met by the stopped run, lost with it) is replayed once. Two training files and one
    validation file are unreadable: each is met in both epochs, before and after the checkpoint.
    """
    import json
    import shutil

    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from medvl.data.dataset import read_manifest
    from medvl.models._checkpoint import ResumeRecord

    root = tmp_path / "data"
    shutil.copytree(make_synthetic(24, 5), root)
    rows = read_manifest(root / "manifest.jsonl")
    bad = [r for r in rows if r["split"] == "train"][3:5] + [r for r in rows if r["split"] == "val"][:1]
    for row in bad:
        (root / row["image"]).write_bytes(b"")  # "not a DICOM file (empty file)"

    def fit(out: Path, *callbacks: L.Callback, ckpt_path: str | None = None) -> dict:
        torch.manual_seed(0)
        task = ContrastivePretraining(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny",
                                      embed_dim=16, img_size=32)
        data = SyntheticCXR(root=str(root), n=24, seed=5, img_size=32, batch_size=4, preload=False, augment=False)
        trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_val_batches=1, num_sanity_val_steps=0,
                            logger=CSVLogger(out, name="", version=0), enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=out, callbacks=[
                                ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=2, save_last=True,
                                                save_top_k=0),
                                ResumeRecord(), *callbacks])  # as the CLI: the loader resumes mid-epoch
        trainer.fit(task, datamodule=data, ckpt_path=ckpt_path)
        return json.loads((out / "version_0" / "run_health_fit.json").read_text())

    whole = fit(tmp_path / "whole")
    stopped = tmp_path / "stopped"
    with pytest.raises(_Killed):
        fit(stopped, _KillAt(7))
    last = torch.load(stopped / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6
    saved = last[CHECKPOINT_KEY]["stages"]
    assert saved["train"]["samples"] >= 2 and saved["val"]["samples"] == 1  # epoch 0, and step 6
    assert not [f for s in saved.values() for f in s["files"] if "/" in f]  # digests, no paths
    resumed = fit(stopped, ckpt_path=str(stopped / "ckpt" / "last.ckpt"))

    train = whole["stages"]["train"]
    # 2 files, met again in epoch 1 (the batch drop_last leaves out of an epoch is not read)
    assert train["unreadable_files"] == 2 and train["skipped_samples"] > 2
    assert whole["stages"]["val"]["skipped_samples"] == 2
    for stage in ("train", "val"):
        a, b = whole["stages"][stage], resumed["stages"][stage]
        for key in ("unreadable_files", "skipped_samples", "by_reason", "dropped_at_setup"):
            assert b[key] == a[key], f"{stage} {key}: resumed {b[key]}, uninterrupted {a[key]}"
        # named when the resumed run met them, counted by digest when only the stopped run did
        assert set(b["files"]) <= set(a["files"]) and len(b["files"]) + b["unnamed_files"] == a["unreadable_files"]
    assert resumed["nonfinite_steps"] == whole["nonfinite_steps"] == 0


def test_the_counters_round_trip_through_a_state_dict():
    from types import SimpleNamespace

    module = SimpleNamespace(_trainer=None)
    health = RunHealth()
    empty = "not a DICOM file (empty file)"
    health.count(module, {"n_skipped": 2, "skipped": [{"file": "/d/a.dcm", "reason": empty},
                                                      {"file": "/d/b.dcm", "reason": "codec"}]})
    health.count(module, {"n_skipped": 1})
    health.nonfinite_steps = 3
    state = health.state_dict(module)
    assert "/d/a.dcm" not in str(state)
    back = RunHealth()
    back.load_state_dict(state)
    assert back.nonfinite_steps == 3 and back.samples == {"train": 3} and back.skipped == {"train": 3}
    back.count(module, {"n_skipped": 1, "skipped": [{"file": "/d/a.dcm", "reason": empty}]})  # met again
    train = back.summary(module, "fit")["stages"]["train"]
    assert train["files"] == {"/d/a.dcm": empty} and train["unnamed_files"] == 1  # b: before the resume only
    assert (train["unreadable_files"], train["skipped_samples"]) == (2, 4)
    assert train["by_reason"] == {empty: 1, "codec": 1, "unreadable (the loader named no file or reason)": 1}
    other = RunHealth()
    other.load_state_dict(state, rank=1)  # the other ranks start empty: rank 0 holds every rank's counts
    assert other.samples == {} and other.nonfinite_steps == 3
    with pytest.raises(ValueError, match="format"):
        RunHealth().load_state_dict({"format": 99})


def test_an_all_unreadable_batch_joins_the_step_under_ddp_with_a_zero_gradient():
    from types import SimpleNamespace

    from medvl.models import Classifier

    task = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a"], mode="finetune")
    assert task.training_step({"n_skipped": 2, "skipped": []}, 0) is None  # one process: Lightning skips it
    votes = []
    strategy = SimpleNamespace(reduce_boolean_decision=lambda ok, all: votes.append(ok) or ok)
    task._trainer = SimpleNamespace(world_size=2, strategy=strategy, global_step=0, training=True)
    task.health.count = lambda *a, **k: None  # counting is tested above; here only the step
    loss = task.training_step({"n_skipped": 2, "skipped": []}, 0)
    assert votes == [True] and float(loss) == 0.0  # it took part in the finite-loss vote
    loss.backward()
    trained = [p for p in task.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and not p.grad.any() for p in trained)
