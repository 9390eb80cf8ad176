"""What every task does for a run's health: count skipped samples, refuse non-finite losses.

A loader drops an unreadable sample (``{"skipped": reason}``) and :class:`medvl.data.dataset.Collate`
counts it in ``batch["n_skipped"]``; :meth:`RunHealth.count` adds it up per stage and
:meth:`RunHealth.report` logs ``<stage>/skipped_samples`` once per epoch, summed over all
ranks, with a warning when there were any. Each stage has its own counter: Lightning runs
the validation epoch's end before the training epoch's, so one shared counter would
report the training split's skips as validation's.

A non-finite loss (NaN or infinity, from a bad sample or a diverging step) would corrupt
every weight through AdamW's moments. :meth:`RunHealth.guard` turns it into a skipped
optimiser step instead: Lightning skips the step when ``training_step`` returns None.
Under DDP every rank must skip together (a rank that steps alone waits forever in the
gradient all-reduce), so the decision is reduced over ranks first. ``train/nonfinite_steps``
counts them; ``max_nonfinite_in_row`` in a row stop the run with a clear message, since
by then the run has diverged rather than met one bad batch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["NonFiniteLossError", "RunHealth"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run diverged."""


class RunHealth:
    """Skip counting and the non-finite loss guard of one task (see the module docstring).

    Args:
        max_nonfinite_in_row: Consecutive non-finite training losses that stop the run.
    """

    def __init__(self, max_nonfinite_in_row: int = 20) -> None:
        if max_nonfinite_in_row < 1:
            raise ValueError(f"max_nonfinite_in_row must be at least 1, got {max_nonfinite_in_row}")
        self.max_nonfinite_in_row = max_nonfinite_in_row
        self.skipped: dict[str, int] = {}
        self.nonfinite_steps = 0
        self.nonfinite_in_row = 0

    @staticmethod
    def stage(module) -> str:
        """``train``, ``val``, ``test`` or ``predict``: what ``module``'s trainer is running."""
        trainer = module._trainer
        if trainer is None or trainer.training:
            return "train"
        return "test" if trainer.testing else "predict" if trainer.predicting else "val"

    def count(self, module, batch: dict[str, Any]) -> None:
        """Add the batch's skipped samples to the counter of the stage ``module`` is in."""
        stage = self.stage(module)
        self.skipped[stage] = self.skipped.get(stage, 0) + int(batch.get("n_skipped", 0))

    def report(self, module, stage: str) -> int:
        """Log ``<stage>/skipped_samples`` (all ranks' sum) and reset that stage; return the sum."""
        local = self.skipped.pop(stage, 0)
        trainer = module._trainer
        total = local
        if trainer is not None and trainer.world_size > 1:
            total = int(trainer.strategy.reduce(torch.tensor(float(local), device=module.device), reduce_op="sum"))
        if trainer is not None:
            module.log(f"{stage}/skipped_samples", float(total), rank_zero_only=True)
        if total and (trainer is None or trainer.is_global_zero):
            log.warning("%s: skipped %d unreadable sample(s) this epoch", stage, total)
        return total

    def guard(self, module, loss: torch.Tensor) -> torch.Tensor | None:
        """``loss`` when finite on every rank, else None (the optimiser step is skipped).

        Raises:
            NonFiniteLossError: ``max_nonfinite_in_row`` non-finite losses in a row.
        """
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = module._trainer
        if trainer is not None and trainer.world_size > 1:
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        if finite:
            self.nonfinite_in_row = 0
            return loss
        self.nonfinite_steps += 1
        self.nonfinite_in_row += 1
        step = trainer.global_step if trainer is not None else -1
        log.warning("non-finite training loss at step %d (%s); optimiser step skipped (%d so far)", step,
                    loss.detach().float().item() if loss.numel() == 1 else "tensor", self.nonfinite_steps)
        if trainer is not None:
            module.log("train/nonfinite_steps", float(self.nonfinite_steps), rank_zero_only=True)
        if self.nonfinite_in_row >= self.max_nonfinite_in_row:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite training losses in a row (step {step}): the run diverged; "
                "lower the learning rate, check the inputs, or resume from an earlier checkpoint")
        return None
