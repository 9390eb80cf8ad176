"""Per-step wall clock of a ``medvl fit`` run, for ``benchmarks/pretrain.py``.

A Lightning callback given on the command line (``--trainer.callbacks+=_pretrain_timer.StepTimer``
with ``benchmarks/`` on ``PYTHONPATH``). A step's time runs from the end of the previous
step to the end of this one, so it holds the wait for the batch as well as forward,
backward and the optimiser step: what open_clip_train's ``Batch (t)`` measures. The
first step's time runs from its own start. Optionally it profiles one step with
``torch.profiler``: from the start of that step to the start of the next, so the fetch of
the next batch is in it, as in the open_clip launcher's profile.
"""

from __future__ import annotations

import json
import time
from typing import Any

import lightning as L
from pretrain import write_profile  # benchmarks/ is on PYTHONPATH, as for this module


class StepTimer(L.Callback):
    """Writes ``{"start_wall", "step_s", "cpu_s", "losses"}`` to ``out`` at the end of training.

    ``cpu_s[i]`` is the process's CPU time (all threads, ``time.process_time``) at the end of
    step ``i``: less sensitive than wall time to neighbours on a shared machine.

    Args:
        out: JSON file to write.
        profile_step: 0-based index of a step to profile (None: no profile).
        profile_out: Text file for the profile's table (top ops by self CPU time).
        profile_rows: Rows of that table.
    """

    def __init__(self, out: str, profile_step: int | None = None, profile_out: str | None = None,
                 profile_rows: int = 25) -> None:
        self.out, self.profile_step, self.profile_out, self.profile_rows = out, profile_step, profile_out, profile_rows
        self.start_wall: float | None = None
        self.last: float | None = None
        self.step_s: list[float] = []
        self.cpu_s: list[float] = []
        self.losses: list[float] = []
        self._prof: Any = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.last is None:  # the first step: its time starts here
            self.start_wall = time.time()
            self.last = time.perf_counter()
        if self._prof is not None:  # the profiled step and the fetch of this batch are done
            self._stop_profile()
        if self.profile_step is not None and len(self.step_s) == self.profile_step:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU])
            self._prof.__enter__()

    def _stop_profile(self) -> None:
        write_profile(self._prof, self.profile_out, self.profile_rows)
        self._prof = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if len(self.losses) < 3 and loss is not None:
            self.losses.append(float(loss))  # a sync, as open_clip_train's per-step ``loss.item()``
        now = time.perf_counter()
        self.cpu_s.append(time.process_time())
        self.step_s.append(now - self.last)
        self.last = now

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._prof is not None:
            self._stop_profile()
        with open(self.out, "w") as f:
            json.dump({"start_wall": self.start_wall, "step_s": self.step_s, "cpu_s": self.cpu_s,
                       "losses": self.losses, "dynamo": _dynamo_stats()}, f)


def _dynamo_stats() -> dict[str, int]:
    """torch._dynamo's frame counters: ``unique_graphs`` 0 means nothing was compiled."""
    from torch._dynamo.utils import counters

    return {k: int(v) for k, v in counters["stats"].items()}
