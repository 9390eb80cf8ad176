"""A non-finite loss skips its optimiser step (weights untouched, counted); too many in a row stop the run."""

from __future__ import annotations

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
