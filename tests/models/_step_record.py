"""A callback that records what each rank trained on, for tests that run ``medvl fit`` in fresh processes.

Given on the command line (``--trainer.callbacks '[{"class_path": "tests.models._step_record.StepRecord",
"init_args": {"out": DIR}}]'``), it writes ``DIR/rank<r>.json`` when training ends:
the rank, the world size, the strategy, the cluster environment (who launched the
processes), the train sampler's class, and per optimiser step the loss
this rank's ``training_step`` returned and the study ids of its batch. After each step
listed in ``save_after`` it writes ``DIR/step<n>.ckpt`` through ``trainer.save_checkpoint``
(called on every rank, as that collective needs under FSDP; rank 0 writes the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L


class StepRecord(L.Callback):
    """Per-rank record of the losses and batches of a fit.

    Args:
        out: Folder for ``rank<r>.json`` and the ``step<n>.ckpt`` files.
        save_after: Optimiser steps after which the full checkpoint is written.
    """

    def __init__(self, out: str, save_after: list[int] | None = None) -> None:
        self.out = Path(out)
        self.save_after = set(save_after or [])
        self.steps: list[dict[str, Any]] = []
        self.sampler = ""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler = type(trainer.train_dataloader.sampler).__name__

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.steps.append({"step": trainer.global_step, "loss": float(loss.detach().double().item()),
                           "study_id": [str(s) for s in batch.get("study_id", [])],  # none: all unreadable
                           "n_skipped": int(batch.get("n_skipped", 0))})
        if trainer.global_step in self.save_after:
            trainer.save_checkpoint(str(self.out / f"step{trainer.global_step}.ckpt"))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "sampler": self.sampler,
                  "strategy": type(trainer.strategy).__name__,
                  "environment": type(getattr(trainer.strategy, "cluster_environment", None)).__name__,
                  "steps": self.steps}
        path = self.out / f"rank{trainer.global_rank}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
