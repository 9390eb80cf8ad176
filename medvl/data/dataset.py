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
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medvl.data.dicom import DicomReadError

if TYPE_CHECKING:
    from medvl.data.cache import CacheReader
    from medvl.data.pipeline import ImagePipeline

__all__ = ["Collate", "ManifestError", "read_manifest", "ImageReportDataset", "collate_samples"]

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("study_id", "image", "split")


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
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    root = path.parent.resolve()
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
            image = (root / row["image"]).resolve()
            if not image.is_relative_to(root):
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
    """

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
        if preload and cache is None:
            self.preload(progress=progress)

    def __len__(self) -> int:
        return len(self.records)

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
        if self.skipped:
            log.warning("skipped %d unreadable image(s) of %d", len(self.skipped), len(self.records))
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
        return {
            "image": self.pipeline.finish(img),
            "report": str(rec.get(self.text_key) or ""),
            "labels": self.labels(rec),
            "study_id": str(rec["study_id"]),
        }


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
