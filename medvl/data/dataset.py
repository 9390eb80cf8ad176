"""Manifest-driven image–report datasets with a skip-and-count policy for bad files.

A manifest is JSON Lines, one study per line, with at least ``study_id``, ``image``
(a path relative to the manifest's folder), ``split`` and the text fields a task reads
(``report``, ``findings``, ``impression``), plus optional ``labels`` ({finding: 1|0|-1})
and ``vqa`` pairs. :func:`medvl.data.synth.generate_dataset` writes this format.

Samples are dicts with named keys. Images go through one
:class:`~medvl.data.pipeline.ImagePipeline`: its deterministic prefix is read from the
file, from memory (``preload``) or from a prepared cache (:mod:`medvl.data.cache`), then
augmentation and normalisation follow. A file that cannot be read does not crash a run:
the sample comes back as ``{"skipped": reason}``, :class:`Collate` drops it and counts it
in ``batch["n_skipped"]``, and the task reports the count per epoch. :class:`Collate` also
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
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from medvl.data.dicom import DicomReadError

if TYPE_CHECKING:
    from medvl.data.cache import CacheReader
    from medvl.data.pipeline import ImagePipeline

__all__ = ["Collate", "EpochSampler", "ManifestError", "read_manifest", "ImageReportDataset", "SeedWorkers",
           "collate_samples"]

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

        Unreadable files are dropped from the dataset and recorded in :attr:`skipped`.
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
            return {"skipped": str(e)}
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
    every training epoch, with the restored epoch after a resume, and under DDP its
    ``DistributedSamplerWrapper`` shards this sampler's order and forwards the call (not
    a ``RandomSampler`` subclass on purpose: Lightning would replace that by a plain
    ``DistributedSampler``). A loop of one's own calls ``loader.sampler.set_epoch(epoch)``
    at the start of every epoch, as with ``DistributedSampler``. The order depends on
    torch's ``randperm`` and may change with the torch version.

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
    """Batch samples: stack tensors, keep strings as lists, drop skipped samples and count them.

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
        for s in samples:
            if "skipped" in s:
                log.warning("skipping sample: %s", s["skipped"])
        batch: dict[str, Any] = {"n_skipped": len(samples) - len(good)}
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
