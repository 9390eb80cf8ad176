"""Manifest-driven image–report datasets with a skip-and-count policy for bad files.

A manifest is JSON Lines, one study per line, with at least ``study_id``, ``image``
(a path relative to the manifest's folder), ``split`` and the text fields a task reads
(``report``, ``findings``, ``impression``), plus optional ``labels`` ({finding: 1|0|-1})
and ``vqa`` pairs. :func:`medvl.data.synth.generate_dataset` writes this format.

Samples are dicts with named keys. Images go through one
:class:`~medvl.data.pipeline.ImagePipeline`: its deterministic prefix is read from the
file, from memory (``preload``) or from a prepared cache (:mod:`medvl.data.cache`), then
augmentation and normalisation follow. A file that cannot be read does not crash a run:
the sample comes back as ``{"skipped": reason, "file": path}``, :class:`Collate` drops it,
counts it in ``batch["n_skipped"]`` and lists it in ``batch["skipped"]``, and the task
reports the counts by reason per epoch and at the end of the run
(:class:`medvl.models._health.RunHealth`). :class:`Collate` also
tokenises text fields with the task's tokenizers, so tokenisation runs in the loader
workers.

Determinism. A sample's augmentation is drawn from :meth:`ImageReportDataset.augmentation_seed`,
a hash of (base seed, epoch, sample index), and nothing else: not the worker that loads
it, not the samples loaded before it, not the global RNGs. The same seed therefore gives
bitwise-identical training batches with any ``num_workers`` (and with persistent
workers), different epochs and samples draw different augmentations, and a sample's
augmentation does not depend on where in the epoch a run started (what an exact
mid-epoch resume needs). The epoch lives in a shared-memory
tensor that :meth:`ImageReportDataset.set_epoch` writes in the main process and loader
workers (forked or spawned, persistent or not) read per sample; :class:`EpochSampler`
calls it from ``sampler.set_epoch``, which Lightning calls before every training epoch.
:class:`SeedWorkers` seeds the workers' global torch/NumPy/Python generators too, for
transforms of others that draw from them. All of this is CPU work and bitwise
repeatable on one machine with the same library versions (torch's ``randperm``,
NumPy's ``SeedSequence``, OpenCV's kernels); whether training is bitwise repeatable is
the model side's business (``Trainer(deterministic=True)`` on GPUs).

Resuming. :class:`ResumableLoader` is the training loader: its ``state_dict`` says which
epoch it is in and how many batches of it were handed out, and after ``load_state_dict``
its next iterator yields the rest of that epoch: the consumed batches are skipped at
the index level, before any sample is read. Every checkpoint holds that state (the fit
loop's stateful-loader protocol), so with the order and the augmentations functions of
(seed, epoch, index), a run killed mid-epoch and resumed from its last checkpoint sees
the batches an uninterrupted run would have seen (``tests/test_resume.py``).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from medvl.data.dicom import DicomReadError

if TYPE_CHECKING:
    from medvl.data.cache import CacheReader
    from medvl.data.pipeline import ImagePipeline

__all__ = ["Collate", "EpochSampler", "ManifestError", "read_manifest", "ImageReportDataset", "ResumableLoader",
           "ResumeMismatchError", "SeedWorkers", "collate_samples"]

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("study_id", "image", "split")
_NAMED_SKIPS = 20  # unreadable files named one by one when preloading; the rest are counted by reason

# First key of derive_seed, so that the streams of different uses never coincide.
_AUGMENT, _ORDER, _WORKER, _LOADER = 0, 1, 2, 3


def _derive_seed(seed: int, *keys: int) -> int:
    # medvl.data.transforms imports MONAI; the format readers that import this module do not need it.
    from medvl.data.transforms import derive_seed

    return derive_seed(seed, *keys)


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the line and the reason."""


def read_manifest(path: str | Path, *, split: str | None = None) -> list[dict[str, Any]]:
    """Read and validate a JSONL manifest.

    Args:
        path: The manifest file.
        split: Keep only rows of this split.

    Raises:
        ManifestError: Missing file, malformed JSON, a row without a required key, an
            image path that leaves the dataset root, or a duplicated ``study_id``.
    """
    from medvl.data.formats._base import inside_root

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    rows, seen = [], set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise ManifestError(f"{path}:{lineno}: missing key(s) {missing}")
            if inside_root(str(row["image"])) is None:  # lexical: symlinked folders inside the root are followed
                raise ManifestError(f"{path}:{lineno}: image path {row['image']!r} points outside the dataset root")
            if row["study_id"] in seen:
                raise ManifestError(f"{path}:{lineno}: duplicate study_id {row['study_id']!r}")
            seen.add(row["study_id"])
            if split is None or row["split"] == split:
                rows.append(row)
    return rows


class ImageReportDataset(Dataset):
    """Images, texts and labels from manifest rows, through one image pipeline.

    Args:
        records: Manifest rows (see :func:`read_manifest`); with ``cache``, the rows of
            :func:`medvl.data.cache.read_cache_manifest`.
        root: Folder the rows' ``image`` paths are relative to (not needed with ``cache``).
        pipeline: The image pipeline; its prefix runs here unless ``cache`` holds it.
        label_names: Label columns, in order; a finding missing from a row is -1 (ignored).
        text_key: Row field used as ``sample["report"]``: ``report``, ``findings`` or ``impression``.
        cache: A prepared cache holding the pipeline's prefix (same size, channels, window).
        preload: Run the prefix on every image once, up front (see :meth:`preload`).
        progress: Show a progress bar while preloading.

    Attributes:
        seed: Base seed of the augmentation (:meth:`augmentation_seed`); None: the run's
            seed (:func:`~medvl.data.transforms.run_seed`) at each draw, which is only the
            same in every loader worker when ``seed_everything`` set it. The data module
            sets it from the run's seed when it builds the training loader.
    """

    seed: int | None = None

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        root: str | Path | None = None,
        *,
        pipeline: ImagePipeline,
        label_names: Sequence[str],
        text_key: str = "report",
        cache: CacheReader | None = None,
        preload: bool = False,
        progress: bool = True,
    ) -> None:
        self.records = list(records)
        self.root = Path(root) if root is not None else None
        self.pipeline = pipeline
        self.label_names = list(label_names)
        self.text_key = text_key
        self.cache = cache
        if cache is not None:
            cache.check(pipeline)
        elif self.root is None:
            raise ValueError("ImageReportDataset needs the image root folder (or a cache)")
        self.skipped: dict[str, str] = {}  # study_id -> reason, for files found bad up front
        self.skipped_files: dict[str, str] = {}  # file -> reason: the same files, by path (the run's summary)
        self._preloaded: torch.Tensor | None = None
        # Shared memory: set_epoch in the main process reaches forked, spawned and persistent workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        if preload and cache is None:
            self.preload(progress=progress)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def epoch(self) -> int:
        """The epoch the augmentation seeds follow (:meth:`set_epoch`)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentations of epoch ``epoch`` from now on, in this process and in every loader worker.

        Call it before the epoch's iterator is created (:class:`EpochSampler` does, from
        Lightning's ``sampler.set_epoch``); indices already handed to workers may still
        be drawn with the old epoch.
        """
        self._epoch.fill_(int(epoch))

    def augmentation_seed(self, index: int) -> int:
        """The seed of item ``index``'s augmentation: a hash of (:attr:`seed`, :attr:`epoch`, ``index``)."""
        from medvl.data.transforms import run_seed

        seed = self.seed if self.seed is not None else run_seed()
        return _derive_seed(seed, _AUGMENT, self.epoch, int(index))

    def load_image(self, index: int) -> np.ndarray:
        """The pipeline prefix of item ``index``: ``(C, S, S)`` float32 in [0, 1]; raises DicomReadError."""
        if self._preloaded is not None:
            return self._preloaded[index].float().numpy()  # numpy: MONAI would wrap a tensor in a MetaTensor
        rec = self.records[index]
        if self.cache is not None:
            return self.cache.image(rec)
        return self.pipeline.load(self.root / rec["image"])

    def preload(self, progress: bool = True) -> None:
        """Run the prefix on every image once and keep the result in memory as float16.

        Unreadable files are dropped from the dataset and recorded in :attr:`skipped`
        (by study) and :attr:`skipped_files` (by path).
        The result is a single tensor, so forked data-loader workers share it.
        """
        from rich.progress import track

        arrays, keep = [], []
        it = range(len(self.records))
        for i in track(it, description="decoding images", disable=not progress, transient=True):
            try:
                arrays.append(torch.as_tensor(self.load_image(i)).half())
                keep.append(self.records[i])
            except DicomReadError as e:
                self.skipped[str(self.records[i]["study_id"])] = e.reason
                self.skipped_files[e.path] = e.reason
                if len(self.skipped) <= _NAMED_SKIPS:
                    log.warning("skipping %s (study %s): %s", e.path, self.records[i]["study_id"], e.reason)
        if self.skipped:
            from collections import Counter

            reasons = Counter(self.skipped.values()).most_common()
            more = f" ({len(self.skipped) - _NAMED_SKIPS} not named above)" if len(self.skipped) > _NAMED_SKIPS else ""
            log.warning("skipped %d unreadable image(s) of %d%s; by reason: %s", len(self.skipped), len(self.records),
                        more, "; ".join(f"{n} x {r}" for r, n in reasons))
        self.records = keep
        self._preloaded = torch.stack(arrays) if arrays else torch.zeros(0)

    def labels(self, record: dict[str, Any]) -> torch.Tensor:
        raw = record.get("labels") or {}
        return torch.tensor([float(raw.get(n, -1)) for n in self.label_names], dtype=torch.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        try:
            img = self.load_image(index)
        except DicomReadError as e:
            return {"skipped": e.reason, "file": e.path}
        seed = self.augmentation_seed(index) if self.pipeline.augments else None
        return {
            "image": self.pipeline.finish(img, seed=seed),
            "report": str(rec.get(self.text_key) or ""),
            "labels": self.labels(rec),
            "study_id": str(rec["study_id"]),
        }


class EpochSampler(Sampler[int]):
    """Every index of a dataset once per epoch, in an order that is a pure function of (seed, epoch).

    :meth:`set_epoch` also calls ``dataset.set_epoch`` (:meth:`ImageReportDataset.set_epoch`),
    so the augmentations follow the epoch. Lightning calls ``sampler.set_epoch`` before
    every training epoch, with the restored epoch after a resume. Under DDP the data
    module (:meth:`medvl.datamodules.base.ImageTextDataModule._loader`) wraps it in a
    non-shuffling ``DistributedSamplerWrapper`` that interleaves this order over the ranks
    (rank r takes positions r, r + P, ...), so the ranks' batches at a step are together
    the one-process batch at P x the batch size, and forwards ``set_epoch`` (Lightning's
    own wrapper would shuffle the order once more). A loop of one's own calls ``loader.sampler.set_epoch(epoch)``
    at the start of every epoch, as with ``DistributedSampler``. The order depends on
    torch's ``randperm`` and may change with the torch version.

    The sampler holds no position: where an interrupted epoch resumes is the loader's
    state (:class:`ResumableLoader`), because only the loader knows which batches were
    handed out (its workers draw indices ahead), and because under DDP the position is
    one of the rank's shard, not of this order.

    Args:
        dataset: The dataset (its length, and ``set_epoch`` when it has one).
        seed: Base seed of the order.
        shuffle: Permute the indices (False: ``0 .. n-1``).
    """

    def __init__(self, dataset: Any, *, seed: int, shuffle: bool = True) -> None:
        self.dataset, self.seed, self.shuffle = dataset, int(seed), shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Order (and, through the dataset, augment) the items as epoch ``epoch``."""
        self.epoch = int(epoch)
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.epoch)

    def __iter__(self):
        n = len(self.dataset)
        if not self.shuffle:
            return iter(range(n))
        g = torch.Generator().manual_seed(_derive_seed(self.seed, _ORDER, self.epoch))
        return iter(torch.randperm(n, generator=g).tolist())


class ResumeMismatchError(ValueError):
    """A loader state that cannot continue this loader's epoch; the message names what differs."""


class _SkipFirst:
    """The loader's index sampler without the batches of the epoch that were consumed before a resume."""

    def __init__(self, inner: Any, loader: ResumableLoader) -> None:
        self.inner, self.loader = inner, loader

    def __len__(self) -> int:
        return len(self.inner)  # the whole epoch, as Lightning counts it

    def __iter__(self):
        # Read when the torch iterator is made (and again when persistent workers start the next epoch).
        return itertools.islice(iter(self.inner), self.loader._start, None)


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch is state: ``state_dict`` / ``load_state_dict``.

    Lightning's fit loop saves ``state_dict()`` in every checkpoint of a training loader
    that has one and calls ``load_state_dict`` when it resumes mid-epoch, before it
    iterates the loader. The state is the epoch, the number of batches handed out in it
    and what an exact continuation needs to be the same (batches per epoch, batch size,
    dataset size, augmentation seed). After ``load_state_dict`` the next iterator starts
    at the first batch not handed out: the consumed batches are dropped from the index
    sampler, so no sample of them is read or augmented, whatever ``num_workers`` and
    whatever the sampler (under DDP the data module's interleaving ``DistributedSamplerWrapper``
    around :class:`EpochSampler`: the count is of this rank's batches). The iterator
    after that is a whole epoch again.

    The worker processes (and the sampler's pass over the epoch) start at the first
    ``next()``, not at ``iter()``: Lightning creates the epoch's iterator before it calls
    ``sampler.set_epoch`` when it resumes (and, when the task reads
    ``trainer.estimated_stepping_batches``, before it restores the checkpoint), and an
    eager start would read the indices (and, in the workers, the augmentation epoch) of
    the epoch before. A ``load_state_dict`` applies to the iterator that has not yielded
    yet, or else to the next one.

    The constructor is ``DataLoader``'s, so Lightning can re-create the loader with
    another sampler (DDP) and keep the class.
    """

    _start = 0  # batches of the current epoch consumed before this iterator
    _batches = 0  # batches of the current epoch handed out
    _resume: tuple[int, int] | None = None  # (epoch, batches) from load_state_dict, for the next iterator

    @property
    def _index_sampler(self):  # torch's hook: what the iterator draws indices (or batches of them) from
        return _SkipFirst(super()._index_sampler, self)

    def __iter__(self):
        self._batches = 0
        return self._count()

    def _count(self):
        # Runs at the first next(): after Lightning's set_epoch, and after a load_state_dict that came once the
        # iterator existed. Skips only inside the epoch the state was saved in (with limit_train_batches,
        # Lightning may have ended that epoch before the loader did).
        resume, self._resume = self._resume, None
        self._start = resume[1] if resume is not None and resume[0] == self._epoch() else 0
        self._batches = self._start
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def _samplers(self) -> list[Any]:
        found = {}
        for s in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            if s is not None:
                found[id(s)] = s
        return list(found.values())

    def _epoch(self) -> int:
        return next((int(s.epoch) for s in self._samplers() if isinstance(getattr(s, "epoch", None), int)), 0)

    def _set_epoch(self, epoch: int) -> None:
        for s in self._samplers():  # as Lightning's _set_sampler_epoch: DDP's wrapper forwards to EpochSampler
            if callable(getattr(s, "set_epoch", None)):
                s.set_epoch(epoch)

    def _shape(self) -> dict[str, Any]:
        seed = getattr(self.dataset, "seed", None)
        return {"num_batches": len(self), "batch_size": self.batch_size, "num_samples": len(self.dataset),
                "seed": None if seed is None else int(seed)}

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batches"}`` (batches of that epoch handed out) and the shape of the epoch."""
        epoch, batches = self._resume if self._resume is not None else (self._epoch(), self._batches)
        return {"epoch": int(epoch), "batches": int(batches), **self._shape()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch of ``state`` at its first batch not handed out (the next one when it was complete).

        Raises:
            ResumeMismatchError: The state was saved by a loader with other batches per
                epoch, batch size, dataset size or seed: the remaining batches would not
                be the ones the interrupted run was going to see.
        """
        mine = self._shape()
        differ = {k: (state.get(k), v) for k, v in mine.items() if k in state and state[k] != v}
        if differ:
            what = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
            raise ResumeMismatchError(
                f"cannot resume the training epoch where the checkpoint left it ({what}); resume with the "
                "checkpoint's data, batch size, number of devices and --seed_everything (the interrupted run's "
                "config.yaml has them), or from a checkpoint written at the end of an epoch")
        epoch, done = int(state["epoch"]), int(state["batches"])
        if done >= len(self):
            epoch, done = epoch + 1, 0
        self._set_epoch(epoch)
        self._resume = (epoch, done)


class SeedWorkers:
    """``worker_init_fn`` seeding a loader worker's global generators from (seed, rank, epoch, worker id).

    torch, NumPy's legacy global and Python's ``random`` get the same seed in every run,
    different in every worker, rank and (for workers started per epoch) epoch; the epoch
    is read from the dataset's ``epoch`` when it has one. Persistent workers are started,
    and seeded, once. medvl's augmentation does not read these generators (it is seeded
    per sample); they serve transforms and collate functions that do.

    Args:
        seed: The run's seed.
        rank: The process's global rank.
    """

    def __init__(self, seed: int, rank: int = 0) -> None:
        self.seed, self.rank = int(seed), int(rank)

    def __call__(self, worker_id: int) -> None:
        info = get_worker_info()
        epoch = int(getattr(info.dataset, "epoch", 0)) if info is not None else 0
        s = _derive_seed(self.seed, _WORKER, self.rank, epoch, int(worker_id))
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)

    def generator(self) -> torch.Generator:
        """A generator for ``DataLoader(generator=...)``.

        The loader's base seed (``get_worker_info().seed``) then comes from the run's seed,
        and iterating a loader no longer advances the main process's global torch generator.
        """
        return torch.Generator().manual_seed(_derive_seed(self.seed, _LOADER, self.rank))


class Collate:
    """Batch samples: stack tensors, keep strings as lists, drop skipped samples, count and list them.

    A skipped sample (``{"skipped": reason, "file": path}``) is left out of the batch;
    ``batch["n_skipped"]`` counts them and, when there are any, ``batch["skipped"]`` lists
    them as ``{"file", "reason"}`` for the task, which names and counts them by reason
    (:class:`medvl.models._health.RunHealth`).

    Args:
        tokenizers: ``{name: tokenizer}``; each tokenizer maps a list of strings to
            ``{"input_ids": (B, T), "attention_mask": (B, T), ...}``, stored as
            ``batch[f"{name}_tokens"]``. It reads the text field ``name``, or, when it
            has a ``fields`` attribute (a tuple of field names), is called with one
            list per field (e.g. a question and its answer). Picklable, as it runs in
            loader workers.
    """

    def __init__(self, tokenizers: Mapping[str, Callable[[list[str]], dict[str, torch.Tensor]]] | None = None) -> None:
        self.tokenizers = dict(tokenizers or {})

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        good = [s for s in samples if "skipped" not in s]
        bad = [{"file": str(s.get("file") or ""), "reason": str(s["skipped"])} for s in samples if "skipped" in s]
        for b in bad:  # the task names the first ones it meets (in the main process) and counts them all
            log.debug("skipping %s: %s", b["file"], b["reason"])
        batch: dict[str, Any] = {"n_skipped": len(bad)}
        if bad:
            batch["skipped"] = bad
        if not good:
            return batch
        for key in good[0]:
            vals = [s[key] for s in good]
            batch[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
        for name, tokenize in self.tokenizers.items():
            wanted = tuple(getattr(tokenize, "fields", (name,)))
            missing = [f for f in wanted if f not in batch]
            if missing:
                raise KeyError(f"cannot tokenise {missing}: the samples have {sorted(good[0])}")
            batch[f"{name}_tokens"] = dict(tokenize(*(list(batch[f]) for f in wanted)))
        return batch


collate_samples = Collate()
"""Collation without tokenisation."""
