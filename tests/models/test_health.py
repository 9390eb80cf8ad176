"""A non-finite loss skips its optimiser step (weights untouched, counted); too many in a row stop the run.
Skipped samples are counted by reason, their files named once and summarised at the end of the run."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch

from medvl.datamodules import SyntheticCXR
from medvl.models import ContrastivePretraining
from medvl.models._health import NonFiniteLossError, RunHealth


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
