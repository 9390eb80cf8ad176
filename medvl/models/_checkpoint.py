"""Checkpoints a killed run resumes from exactly: atomic files, medvl's record, the run's own log.

A run killed at any moment (SIGKILL, a pre-empted node, a power cut) and restarted with
``medvl fit ... --ckpt_path last`` continues as if it had not stopped: the same batches
in the same order with the same augmentations (the training loader's position is state,
:class:`medvl.data.dataset.ResumableLoader`), the same optimiser, schedule and logit
scale (Lightning's checkpoint), the same global random generators (this record), and
the same log (the killed run's version folder, continued). Four pieces, which ``medvl``'s
CLI installs by default:

* :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the target's
  folder, ``fsync``\\ s it and renames it over the target, so a kill during a save leaves
  the previous file whole. (Lightning 2.6's ``TorchCheckpointIO`` writes through an
  fsspec transaction whose temporary file lives in the system temp folder: where that is
  another file system the final move is a copy into the target, not atomic, and nothing
  is ``fsync``\\ ed.)
* :class:`ResumeRecord` adds a ``"medvl"`` entry to every checkpoint: the
  :data:`CHECKPOINT_FORMAT`, medvl's version, the task class, the log folder and version,
  and the global random generators' states. It refuses to load a checkpoint of another
  format or task (:func:`check_checkpoint`), and when training resumes it restores the
  generators and the training loader's position (which Lightning 2.6 drops for medvl's
  tasks, see :func:`_restore_loader_positions`).
* :class:`ResumableCSVLogger` is Lightning's ``CSVLogger`` writing every row as it is
  logged (so a killed run's log is complete up to the kill) that can continue a version:
  after :meth:`ResumableCSVLogger.continue_run`, the first row the resumed run logs
  drops the killed run's rows from that step on (those it logged after the checkpoint,
  which the resumed run logs again).
* Everything in a checkpoint loads with ``torch.load(weights_only=True)``: tensors,
  numbers, strings and containers of them.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["CHECKPOINT_FORMAT", "AtomicCheckpointIO", "CheckpointMismatchError", "ResumableCSVLogger", "ResumeRecord",
           "check_checkpoint", "continue_logging", "read_record", "write_atomic"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
"""What a medvl checkpoint holds; raised when a change makes older checkpoints unloadable or not resumable.

1 (medvl 0.1): Lightning 2's checkpoint (``state_dict``, optimiser and scheduler states,
loops), the task's hyper-parameters with ``_class_path``, the training loader's position
(``loops.fit_loop.state_dict.combined_loader``: :class:`~medvl.data.dataset.ResumableLoader`'s
``state_dict``) and the ``"medvl"`` record of :class:`ResumeRecord`. A checkpoint without
the record (written before it existed, or without the CLI) loads as format 1. The task's
run-health counters travel as ``"medvl_run_health"`` (:data:`medvl.models._health.CHECKPOINT_KEY`;
absent in older checkpoints, whose resumed runs count from the resume on).

What raises it: renamed or reshaped parameters of a network that loading cannot map, a
changed meaning of a saved field. What does not: a new medvl version, new hyper-parameters
with defaults, a reshape that loading undoes (``ImageTextModel``'s ``logit_scale`` and
``logit_bias``, 0-d before they became ``(1,)`` for FSDP: the network reshapes them, and
``ContrastivePretraining.on_load_checkpoint`` their AdamW moments).
"""

RECORD_KEY = "medvl"
_PARTIAL_PREFIX = ".partial-"  # no "last" in the name: Lightning's "last" lookup takes any name containing it


class CheckpointMismatchError(ValueError):
    """A checkpoint this medvl or this task cannot load; the message names what differs."""


# -- the record ------------------------------------------------------------------------------


def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _same_class(a: str, b: str) -> bool:
    import importlib

    def resolve(path: str) -> Any:
        module, _, name = path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            return path

    return a == b or resolve(a) is resolve(b)


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``"medvl"`` record of a checkpoint file (None for one without), read with ``weights_only=True``."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    return ckpt.get(RECORD_KEY) if isinstance(ckpt, dict) else None


def check_checkpoint(checkpoint: dict[str, Any], where: object = "checkpoint", *, task: object = None) -> None:
    """Raise when ``checkpoint`` (a loaded dict) is of another format or, with ``task``, of another task.

    Args:
        checkpoint: The loaded checkpoint.
        where: What to call it in the message (its path).
        task: The task (LightningModule, class or class path) that is to load it.

    Raises:
        CheckpointMismatchError: Naming the checkpoint's format and medvl version and this
            medvl's, or the checkpoint's task and the configured one.
    """
    from medvl import __version__

    record = checkpoint.get(RECORD_KEY)
    if not isinstance(record, dict):
        return  # written before the record existed: format 1
    fmt, version = record.get("format"), record.get("version", "?")
    if fmt != CHECKPOINT_FORMAT:
        newer = isinstance(fmt, int) and fmt > CHECKPOINT_FORMAT
        raise CheckpointMismatchError(
            f"{where}: checkpoint format {fmt!r} written by medvl {version}; this medvl {__version__} reads format "
            f"{CHECKPOINT_FORMAT} ({'upgrade medvl' if newer else f'load it with medvl {version}'}, or export its "
            "encoder with that version: medvl export)")
    saved = record.get("task")
    if task is not None and saved:
        wanted = task if isinstance(task, str) else _class_path(task)
        if not _same_class(saved, wanted):
            raise CheckpointMismatchError(
                f"{where} is a {saved} checkpoint, but the configured task is {wanted}; give a checkpoint of that "
                "task, or configure the checkpoint's task")


def _rng_states() -> dict[str, Any]:
    """This process's global generators as tensors and numbers (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # the current device's
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class ResumeRecord(L.Callback):
    """Writes medvl's record into every checkpoint; checks it on load; restores the generators on resume.

    The record (``checkpoint["medvl"]``): ``format`` (:data:`CHECKPOINT_FORMAT`),
    ``version`` (medvl's), ``task`` (the LightningModule's class path), ``log_dir`` and
    ``log_version`` (the logger's folder and version: :func:`continue_logging`), ``rng``
    (the global torch, NumPy, Python and current-CUDA-device generators).

    On load (any ``fit``/``validate``/``test``/``predict`` with a checkpoint) a checkpoint
    of another format or task raises :class:`CheckpointMismatchError`. When ``fit``
    resumes, at ``on_train_start``, the training loaders get their saved positions
    (:func:`_restore_loader_positions`) and the generators their saved states, so that
    dropout and other draws of the model continue the interrupted run's sequence. Under
    DDP only rank 0's states are saved and every rank gets them: the same as an
    uninterrupted run when the ranks draw alike, which ``seed_everything`` (the same
    seed on every rank) and equal batch shapes give.
    """

    def __init__(self) -> None:
        self._rng: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        from medvl import __version__

        logger = trainer.logger
        checkpoint[RECORD_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "task": _class_path(pl_module),
            "log_dir": str(Path(logger.log_dir).resolve()) if logger is not None and logger.log_dir else None,
            "log_version": logger.version if logger is not None else None,
            "rng": _rng_states(),
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        check_checkpoint(checkpoint, trainer.ckpt_path or "checkpoint", task=pl_module)
        record = checkpoint.get(RECORD_KEY)
        self._rng = record.get("rng") if isinstance(record, dict) else None
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self._loader_states = (fit_loop.get("state_dict") or {}).get("combined_loader")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loader_states:
            _restore_loader_positions(trainer, self._loader_states)
            self._loader_states = None
        if self._rng is not None:
            _set_rng_states(self._rng)
            self._rng = None


def _restore_loader_positions(trainer: L.Trainer, states: list[dict[str, Any]]) -> None:
    """Give the training loaders their saved positions, as Lightning's fit loop would.

    Lightning 2.6 loads them only when it builds the training loader after restoring the
    loops; a task that reads ``trainer.estimated_stepping_batches`` in
    ``configure_optimizers`` (every medvl task, for its schedule) has it built before,
    and the saved positions are dropped (Lightning-AI/pytorch-lightning#20550). This
    runs at ``on_train_start``, before the first batch is drawn; loading a
    :class:`~medvl.data.dataset.ResumableLoader` twice with one state is the same as once.
    """
    from lightning.pytorch.utilities import CombinedLoader

    from medvl.data.dataset import ResumableLoader

    loaders = trainer.train_dataloader
    if loaders is None:
        return
    stateful = [dl for dl in CombinedLoader(loaders).flattened
                if callable(getattr(dl, "state_dict", None)) and callable(getattr(dl, "load_state_dict", None))]
    if len(stateful) != len(states):
        return  # Lightning raises about this itself when it loads them
    for loader, state in zip(stateful, states):
        if isinstance(loader, ResumableLoader):
            loader.load_state_dict(state)


# -- atomic files ----------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_partials(folder: Path) -> None:
    """Delete the temporary files that processes which no longer run left in ``folder`` (killed mid-save)."""
    for p in folder.glob(f"{_PARTIAL_PREFIX}*.tmp"):
        try:
            pid = int(p.name[len(_PARTIAL_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # a live process (a concurrent save into this folder): not ours to delete
        except ProcessLookupError:
            pass
        except (PermissionError, OSError):
            continue
        p.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, ``fsync`` it, rename it to ``path``.

    Whatever happens meanwhile (an exception, SIGKILL, a power cut), ``path`` is either
    its old content or the new one, whole. The temporary file is removed on an
    exception; one left by a killed process is removed by the next write into its folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{_PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut
    _remove_stale_partials(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (:func:`write_atomic`); remote URLs go through Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        local = str(path)[len("file://"):] if str(path).startswith("file://") else path
        write_atomic(local, lambda f: torch.save(checkpoint, f))


# -- the log ---------------------------------------------------------------------------------


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]], bool]:
    """Header, rows and whether the last line was cut short by a kill (it is dropped) of a metrics.csv."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    torn = bool(text) and not text.endswith("\n")
    if torn:
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows, torn


def _write_rows(path: Path, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
    def write(f) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        f.write(text.getvalue().encode("utf-8"))

    write_atomic(path, write)


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class _Writer(ExperimentWriter):
    """Lightning's CSV writer with atomic rewrites; with ``continuing``, appending to an existing metrics.csv.

    Continuing, the file is kept (Lightning's writer deletes it), a last line cut short by
    a kill is dropped, and the first row logged drops the rows of its step and after.
    """

    def __init__(self, log_dir: str, continuing: bool = False) -> None:
        self._continuing = continuing  # read by _check_log_dir_exists, which the base __init__ calls
        super().__init__(log_dir=log_dir)

    def _local(self) -> bool:
        from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

        return _is_local_file_protocol(self.metrics_file_path)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not self._continuing or not self._local():
            self._continuing = False
            return super()._check_log_dir_exists()  # a new version: Lightning's (it deletes an old metrics.csv)
        if not path.is_file():
            self._continuing = False
            return
        fieldnames, rows, torn = _read_rows(path)
        if torn:
            _write_rows(path, fieldnames, rows)
        self.metrics_keys = sorted(fieldnames)

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if self._continuing and step is not None:
            self._continuing = False
            path = Path(self.metrics_file_path)
            fieldnames, rows, _ = _read_rows(path)
            kept = [r for r in rows if _step(r) < step]
            if len(kept) < len(rows):
                _write_rows(path, fieldnames, kept)
                log.info("%s: continuing the run from step %d; dropped the %d row(s) logged after the checkpoint",
                         path, step, len(rows) - len(kept))
        super().log_metrics(metrics_dict, step)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        if not self._local():
            return super()._rewrite_with_new_header(fieldnames)
        path = Path(self.metrics_file_path)
        _, rows, _ = _read_rows(path)
        _write_rows(path, fieldnames, rows)


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that writes each row at once and can continue a killed run's version.

    Args:
        save_dir: Folder of the runs' version folders' parent (``<save_dir>/<name>/version_N``).
        name: Experiment name.
        version: Version (None: the next free one).
        prefix: Prefix of the metric keys.
        flush_logs_every_n_steps: Steps between writes of metrics.csv; 1 (each row appended
            as it is logged, a few hundred bytes) so that a killed run loses no row.
    """

    def __init__(self, save_dir: str, name: str | None = "lightning_logs", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 1) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
        self._continuing = False

    def continue_run(self, version: int | str) -> None:
        """Log into ``version``'s metrics.csv, which a killed run left, from the resumed run's first step on.

        The first row logged after this drops the file's rows of that step and later:
        the killed run logged them after its last checkpoint, and the resumed run logs
        them again. (Lightning numbers the rows by its count of batches, which the
        checkpoint holds, so the resumed run's first step is the uninterrupted run's.)

        Raises:
            RuntimeError: The log folder is already open.
        """
        if self._experiment is not None:
            raise RuntimeError(f"{self.log_dir}: continue_run must come before anything is logged")
        self._version = version
        self._continuing = True

    @property
    @rank_zero_experiment
    def experiment(self) -> _Writer:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _Writer(log_dir=self.log_dir, continuing=self._continuing)
        return self._experiment


def continue_logging(trainer: L.Trainer, record: dict[str, Any] | None) -> bool:
    """Point ``trainer``'s :class:`ResumableCSVLogger` at the run of a checkpoint's ``record``.

    Only when the record's log folder is a version folder of this logger (the same
    ``save_dir`` and ``name``); a checkpoint of another run starts a new version.

    Returns:
        Whether the logger continues the checkpoint's run.
    """
    logger = trainer.logger
    if not isinstance(logger, ResumableCSVLogger) or not isinstance(record, dict):
        return False
    version, saved_dir = record.get("log_version"), record.get("log_dir")
    if version is None or not saved_dir or Path(saved_dir).parent != Path(logger.root_dir).resolve():
        return False
    logger.continue_run(version)
    return True
