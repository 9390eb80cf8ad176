"""What every task does for a run's health: count skipped samples by reason, summarise them, refuse non-finite losses.

A loader drops an unreadable sample (``{"skipped": reason, "file": path}``) and
:class:`medvl.data.dataset.Collate` counts it in ``batch["n_skipped"]`` and lists it in
``batch["skipped"]`` (``[{"file", "reason"}]``, present only when a sample was dropped).
:meth:`RunHealth.count` adds the batch up per stage and by reason, and names the first
:data:`NAMED_FILES` unreadable files of each stage as it meets them; :meth:`RunHealth.report`
logs ``<stage>/skipped_samples`` once per epoch, summed over all ranks, with a warning
that gives the counts by reason when there were any. Each stage has its own counter:
Lightning runs the validation epoch's end before the training epoch's, so one shared
counter would report the training split's skips as validation's.

At the end of a run (``fit``, ``validate``, ``test``, ``predict``) :meth:`RunHealth.summary`
logs one block: for each stage, how many distinct files were unreadable, by reason, and
the first :data:`SUMMARY_FILES` of them; files that a dataset dropped at set-up
(``preload``: :attr:`medvl.data.dataset.ImageReportDataset.skipped_files`) count in the
stage whose loader they belong to. With a logger, the whole list goes to
``<log_dir>/run_health_<fn>.json``. Files are counted once however many epochs (or, under
DDP, ranks) met them, and only the ones the run met: a file in the batch ``drop_last``
leaves out is not read.
The reasons come from :class:`~medvl.data.dicom.DicomReadError`, which never quotes an
identifying header value; file paths are named (they stay in logs, never in checkpoints).
A task gets the summary by mixing in :class:`RunHealthHooks`.

A run resumed from a checkpoint (``fit --ckpt_path last``) counts the whole run: every
checkpoint holds the training counters as they were when it was written
(:data:`CHECKPOINT_KEY`: all ranks' counts, by stage and reason, and the non-finite steps),
and the resumed run starts from them. The steps between that checkpoint and the kill are
replayed and counted once, by the resumed run. A checkpoint keeps no file names: a file is
kept as the BLAKE2b digest of its path, which dedupes a file met before and after the
resume; files met before it and not since are counted (``unnamed_files``) and by reason,
but not named.

A non-finite loss (NaN or infinity, from a bad sample or a diverging step) would corrupt
every weight through AdamW's moments. :meth:`RunHealth.guard` turns it into a skipped
optimiser step instead: Lightning skips the step when ``training_step`` returns None.
Under DDP every rank must skip together (a rank that steps alone waits forever in the
gradient all-reduce), so the decision is reduced over ranks first. ``train/nonfinite_steps``
counts them; ``max_nonfinite_in_row`` in a row stop the run with a clear message, since
by then the run has diverged rather than met one bad batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

__all__ = ["CHECKPOINT_KEY", "NAMED_FILES", "NonFiniteLossError", "RunHealth", "RunHealthHooks", "SUMMARY_FILES",
           "UNKNOWN_REASON"]

log = logging.getLogger(__name__)

NAMED_FILES = 20
"""Unreadable files of a stage named one by one as they are met; the rest are counted by reason."""

SUMMARY_FILES = 5
"""Unreadable files of a stage named in the end-of-run summary (the JSON file lists all)."""

UNKNOWN_REASON = "unreadable (the loader named no file or reason)"
"""The reason of a skipped sample that a collate function counted without listing it."""

STAGES_OF = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
"""The stages (counters) of each trainer function."""

CHECKPOINT_KEY = "medvl_run_health"
"""The checkpoint entry of the training counters (:meth:`RunHealth.state_dict`); ``torch.load(weights_only=True)`` reads it."""

_STATE_FORMAT = 1

_LOADERS = {"train": "train_dataloader", "val": "val_dataloaders", "test": "test_dataloaders",
            "predict": "predict_dataloaders"}


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run diverged."""


def _by_reason(counts: Counter) -> str:
    return "; ".join(f"{n} x {reason}" for reason, n in counts.most_common())


def _gather(trainer: Any, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (picklable; every rank must call), or ``[obj]`` in one process."""
    if trainer is None:
        return [obj]
    from medvl.models._reporting import gather_rows

    return gather_rows(trainer, [obj])


def _digest(file: str) -> str:
    """What a checkpoint keeps of a file's path: its BLAKE2b digest (the path itself stays in logs only)."""
    return hashlib.blake2b(file.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _loaders(loaders: Any) -> Iterable[Any]:
    """The loaders in what ``trainer.<stage>_dataloader(s)`` returns (one, a sequence or a mapping)."""
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def _dropped_at_setup(trainer: Any, stage: str) -> dict[str, str]:
    """File -> reason of the files the datasets of ``stage``'s loaders dropped before the run (preload)."""
    out: dict[str, str] = {}
    if trainer is None:
        return out
    for loader in _loaders(getattr(trainer, _LOADERS[stage], None)):
        ds = getattr(loader, "dataset", None)
        files = getattr(ds, "skipped_files", None)
        if not isinstance(files, dict):  # a dataset that knows its skipped studies only
            studies = getattr(ds, "skipped", None)
            files = {f"study {sid}": reason for sid, reason in studies.items()} if isinstance(studies, dict) else {}
        out.update({str(f): str(r) for f, r in files.items()})
    return out


class RunHealth:
    """Skip counting, the end-of-run summary and the non-finite loss guard of one task (see the module docstring).

    Args:
        max_nonfinite_in_row: Consecutive non-finite training losses that stop the run.

    Attributes:
        skipped: Stage -> samples skipped in the current epoch (reset by :meth:`report`).
        reasons: Stage -> reason -> samples skipped in the current epoch.
        files: Stage -> file -> reason: every unreadable file this process met in the run.
        samples: Stage -> samples skipped in the run (a file met in two epochs counts twice).
        unlisted: Stage -> reason -> samples of the run skipped without a file named.
        unnamed: Stage -> path digest -> reason: unreadable files met before the run resumed
            from a checkpoint (which keeps digests, not names) and not met again since.
    """

    def __init__(self, max_nonfinite_in_row: int = 20) -> None:
        if max_nonfinite_in_row < 1:
            raise ValueError(f"max_nonfinite_in_row must be at least 1, got {max_nonfinite_in_row}")
        self.max_nonfinite_in_row = max_nonfinite_in_row
        self.skipped: dict[str, int] = {}
        self.reasons: dict[str, Counter] = {}
        self.files: dict[str, dict[str, str]] = {}
        self.samples: dict[str, int] = {}
        self.unlisted: dict[str, Counter] = {}
        self.unnamed: dict[str, dict[str, str]] = {}
        self.nonfinite_steps = 0
        self.nonfinite_in_row = 0
        self.resumed: tuple[dict[str, Any], int] | None = None  # (state, rank) of a checkpoint, until the fit starts

    @staticmethod
    def stage(module) -> str:
        """``train``, ``val``, ``test`` or ``predict``: what ``module``'s trainer is running."""
        trainer = module._trainer
        if trainer is None or trainer.training:
            return "train"
        return "test" if trainer.testing else "predict" if trainer.predicting else "val"

    def begin(self, stages: Sequence[str]) -> None:
        """Forget what earlier runs counted in ``stages`` (a run starts)."""
        for stage in stages:
            for counter in (self.skipped, self.reasons, self.files, self.samples, self.unlisted, self.unnamed):
                counter.pop(stage, None)
        if "train" in stages:
            self.nonfinite_steps = self.nonfinite_in_row = 0

    def count(self, module, batch: dict[str, Any]) -> None:
        """Add the batch's skipped samples to the counters of the stage ``module`` is in."""
        n = int(batch.get("n_skipped", 0))
        if n <= 0:
            return
        stage = self.stage(module)
        self.skipped[stage] = self.skipped.get(stage, 0) + n
        self.samples[stage] = self.samples.get(stage, 0) + n
        reasons = self.reasons.setdefault(stage, Counter())
        seen = self.files.setdefault(stage, {})
        unlisted = self.unlisted.setdefault(stage, Counter())
        listed = list(batch.get("skipped") or ())[:n]
        for entry in listed:
            file, reason = str(entry.get("file") or ""), str(entry.get("reason") or UNKNOWN_REASON)
            reasons[reason] += 1
            if not file:
                unlisted[reason] += 1
            elif file not in seen:
                seen[file] = reason
                earlier = self.unnamed.get(stage)
                if earlier and earlier.pop(_digest(file), None) is not None:
                    continue  # met (and named) before the resume: now known by name
                if len(seen) + len(earlier or ()) <= NAMED_FILES:
                    log.warning("%s: skipping %s: %s%s", stage, file, reason,
                                f" (further unreadable {stage} files are counted, not named)"
                                if len(seen) + len(earlier or ()) == NAMED_FILES else "")
        if n > len(listed):
            reasons[UNKNOWN_REASON] += n - len(listed)
            unlisted[UNKNOWN_REASON] += n - len(listed)

    def report(self, module, stage: str) -> int:
        """Log ``<stage>/skipped_samples`` (all ranks' sum) and reset that stage; return the sum.

        When any sample was skipped, a warning gives the epoch's counts by reason (all ranks').
        """
        local = self.skipped.pop(stage, 0)
        reasons = self.reasons.pop(stage, Counter())
        trainer = module._trainer
        total = local
        if trainer is not None and trainer.world_size > 1:
            total = int(trainer.strategy.reduce(torch.tensor(float(local), device=module.device), reduce_op="sum"))
            if total:  # every rank sees the same total, so every rank joins the gather
                reasons = sum((Counter(r) for r in _gather(trainer, dict(reasons))), Counter())
        if trainer is not None:
            module.log(f"{stage}/skipped_samples", float(total), rank_zero_only=True)
        if total and (trainer is None or trainer.is_global_zero):
            log.warning("%s: skipped %d unreadable sample(s) this epoch; by reason: %s", stage, total,
                        _by_reason(reasons))
        return total

    def summary(self, module, fn: str) -> dict[str, Any]:
        """Log the end-of-run block of trainer function ``fn`` and return it (every rank's counts).

        Returns:
            ``{"fn", "stages": {stage: {"unreadable_files", "skipped_samples", "dropped_at_setup",
            "by_reason" (reason -> files), "files" (file -> reason, in the order met),
            "unnamed_files" (counted, met only before a resume: not in "files")}},
            "nonfinite_steps"}``. With a logger it is also written to
            ``<log_dir>/run_health_<fn>.json`` (rank zero).
        """
        trainer = module._trainer
        stages = STAGES_OF.get(fn, (fn,))
        local = {stage: {"files": self.files.get(stage, {}), "samples": self.samples.get(stage, 0),
                         "unlisted": dict(self.unlisted.get(stage, {})), "setup": _dropped_at_setup(trainer, stage),
                         "unnamed": dict(self.unnamed.get(stage, {}))}
                 for stage in stages}
        ranks = _gather(trainer, local)
        out: dict[str, Any] = {"fn": fn, "stages": {}}
        for stage in stages:
            files: dict[str, str] = {}  # dropped at set-up first, then in the order met
            for rank in ranks:
                files.update(rank[stage]["setup"])
            n_setup = len(files)
            unlisted: Counter = Counter()
            for rank in ranks:
                for file, reason in rank[stage]["files"].items():
                    files.setdefault(file, reason)
                unlisted.update(rank[stage]["unlisted"])
            named = {_digest(file) for file in files}
            unnamed: dict[str, str] = {}  # met before a resume and by no rank since
            for rank in ranks:
                for digest, reason in rank[stage]["unnamed"].items():
                    if digest not in named:
                        unnamed.setdefault(digest, reason)
            by_reason = Counter(files.values()) + Counter(unnamed.values()) + unlisted
            samples = sum(rank[stage]["samples"] for rank in ranks)
            out["stages"][stage] = {"unreadable_files": len(files) + len(unnamed), "skipped_samples": samples,
                                    "dropped_at_setup": n_setup, "by_reason": dict(by_reason.most_common()),
                                    "files": files, "unnamed_files": len(unnamed)}
        if fn == "fit":
            out["nonfinite_steps"] = self.nonfinite_steps
        log_dir = trainer.log_dir if trainer is not None and trainer.loggers else None
        if trainer is None or trainer.is_global_zero:
            bad = any(s["unreadable_files"] or s["skipped_samples"] for s in out["stages"].values())
            log.log(logging.WARNING if bad or out.get("nonfinite_steps") else logging.INFO, "%s",
                    self._format(out, log_dir))
            if log_dir is not None:
                path = Path(log_dir) / f"run_health_{fn}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return out

    @staticmethod
    def _format(out: dict[str, Any], log_dir: str | None) -> str:
        if not any(s["unreadable_files"] or s["skipped_samples"] for s in out["stages"].values()) \
                and not out.get("nonfinite_steps"):
            return f"run health ({out['fn']}): no sample skipped ({', '.join(out['stages'])})"
        lines = [f"run health ({out['fn']}): unreadable files and skipped samples, by stage"]
        for stage, s in out["stages"].items():
            if not (s["unreadable_files"] or s["skipped_samples"]):
                lines.append(f"  {stage}: none")
                continue
            setup = f", {s['dropped_at_setup']} dropped at set-up" if s["dropped_at_setup"] else ""
            lines.append(f"  {stage}: {s['unreadable_files']} unreadable file(s){setup}, "
                         f"{s['skipped_samples']} sample(s) skipped while loading")
            lines += [f"    {n} x {reason}" for reason, n in s["by_reason"].items()]
            names = list(s["files"])
            if names:
                more = f" (+{len(names) - SUMMARY_FILES} more)" if len(names) > SUMMARY_FILES else ""
                lines.append(f"    first: {', '.join(names[:SUMMARY_FILES])}{more}")
            if s.get("unnamed_files"):
                lines.append(f"    {s['unnamed_files']} of them met only before the run resumed from a checkpoint "
                             "(which keeps no file names)")
        if out.get("nonfinite_steps"):
            lines.append(f"  train: {out['nonfinite_steps']} non-finite loss(es) skipped their optimiser step")
        if log_dir is not None:
            lines.append(f"  all files: {Path(log_dir) / ('run_health_' + out['fn'] + '.json')}")
        return "\n".join(lines)

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self, module=None) -> dict[str, Any]:
        """The training counters of every rank, merged, as a checkpoint holds them (see the module docstring).

        Under DDP every rank must call it (it gathers); the files are kept as digests of
        their paths. Loads with ``torch.load(weights_only=True)``.
        """
        local: dict[str, Any] = {}
        for stage in STAGES_OF["fit"]:
            files = dict(self.unnamed.get(stage, {}))
            files.update({_digest(f): r for f, r in self.files.get(stage, {}).items()})
            local[stage] = {"skipped": self.skipped.get(stage, 0), "reasons": dict(self.reasons.get(stage, {})),
                            "samples": self.samples.get(stage, 0), "unlisted": dict(self.unlisted.get(stage, {})),
                            "files": files}
        trainer = getattr(module, "_trainer", None)
        ranks = _gather(trainer, local) if trainer is not None and trainer.world_size > 1 else [local]
        stages: dict[str, Any] = {}
        for stage in STAGES_OF["fit"]:
            merged = {"skipped": 0, "reasons": Counter(), "samples": 0, "unlisted": Counter(), "files": {}}
            for rank in ranks:
                r = rank[stage]
                merged["skipped"] += r["skipped"]
                merged["samples"] += r["samples"]
                merged["reasons"].update(r["reasons"])
                merged["unlisted"].update(r["unlisted"])
                for digest, reason in r["files"].items():
                    merged["files"].setdefault(digest, reason)
            merged["reasons"], merged["unlisted"] = dict(merged["reasons"]), dict(merged["unlisted"])
            stages[stage] = merged
        # The ranks decide non-finite steps together (guard), so rank 0's counts are every rank's.
        return {"format": _STATE_FORMAT, "stages": stages, "nonfinite_steps": self.nonfinite_steps,
                "nonfinite_in_row": self.nonfinite_in_row}

    def load_state_dict(self, state: dict[str, Any], rank: int = 0) -> None:
        """Continue from a checkpoint's counters (:meth:`state_dict`): rank 0 takes every rank's, the others none.

        The summary and the per-epoch reports sum over the ranks, so the totals are the
        checkpoint's with any number of processes. Replaces what the training stages counted.

        Raises:
            ValueError: ``state`` is of another format.
        """
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"run-health counters of format {state.get('format')!r}; this medvl reads "
                             f"{_STATE_FORMAT}")
        self.begin(STAGES_OF["fit"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self.nonfinite_in_row = int(state.get("nonfinite_in_row", 0))
        if rank != 0:
            return
        for stage, saved in (state.get("stages") or {}).items():
            if saved["skipped"]:
                self.skipped[stage] = int(saved["skipped"])
            if saved["reasons"]:
                self.reasons[stage] = Counter(saved["reasons"])
            if saved["samples"]:
                self.samples[stage] = int(saved["samples"])
            if saved["unlisted"]:
                self.unlisted[stage] = Counter(saved["unlisted"])
            if saved["files"]:
                self.unnamed[stage] = dict(saved["files"])

    def empty_step(self, module) -> torch.Tensor | None:
        """The step of a batch whose samples were all unreadable: None in one process (Lightning skips it).

        Under DDP every rank must take part in the gradient all-reduce (and in :meth:`guard`'s
        vote), or the others wait for it and pair their next collective with its: the rank
        returns a zero loss joined to every trained parameter, so it contributes a zero
        gradient. DDP averages over ranks, so that step moves the weights by
        ``(world - 1) / world`` of what one process would on the remaining samples.
        (Contrastive pretraining, whose loss is defined over the global batch, runs the
        network on no rows instead, which is exact.)
        """
        trainer = module._trainer
        if trainer is None or trainer.world_size == 1:
            return None
        params = [p for p in module.parameters() if p.requires_grad]
        zero = torch.stack([p.sum() for p in params]).sum() * 0.0
        return self.guard(module, zero)

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


class RunHealthHooks:
    """LightningModule hooks that end every run with :meth:`RunHealth.summary` of ``self.health``.

    Mix it in before ``L.LightningModule`` (``class Task(RunHealthHooks, L.LightningModule)``);
    a task that defines one of these hooks itself calls ``super()`` in it. Every checkpoint
    carries the training counters (:data:`CHECKPOINT_KEY`), and a fit that resumes from one
    continues them (:meth:`RunHealth.load_state_dict`, at ``on_fit_start``: Lightning loads
    the checkpoint before).
    """

    health: RunHealth

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint[CHECKPOINT_KEY] = self.health.state_dict(self)  # every rank saves: it gathers under DDP

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        state = checkpoint.get(CHECKPOINT_KEY)
        trainer = self._trainer
        if isinstance(state, dict) and trainer is not None and trainer.state.fn == "fit":
            self.health.resumed = (state, trainer.global_rank)

    def on_fit_start(self) -> None:
        self.health.begin(STAGES_OF["fit"])
        if self.health.resumed is not None:
            state, rank = self.health.resumed
            self.health.resumed = None
            self.health.load_state_dict(state, rank)

    def on_train_end(self) -> None:  # before the trainer's teardown: the ranks can still gather
        self.health.summary(self, "fit")

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":
            self.health.begin(STAGES_OF["validate"])

    def on_validation_end(self) -> None:
        if self.trainer.state.fn == "validate":
            self.health.summary(self, "validate")

    def on_test_start(self) -> None:
        self.health.begin(STAGES_OF["test"])

    def on_test_end(self) -> None:
        self.health.summary(self, "test")

    def on_predict_start(self) -> None:
        self.health.begin(STAGES_OF["predict"])

    def on_predict_end(self) -> None:
        self.health.summary(self, "predict")
