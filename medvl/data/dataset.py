"""Manifest-driven image–report datasets with a skip-and-count policy for bad files.

A manifest is JSON Lines, one study per line, with at least ``study_id``, ``image``
(a path relative to the manifest's folder), ``split`` and the text fields a task reads
(``report``, ``findings``, ``impression``), plus optional ``labels`` ({finding: 1|0|-1})
and ``vqa`` pairs. :func:`medvl.data.synth.generate_dataset` writes this format.

Samples are dicts with named keys. A file that cannot be read does not crash a run: the
sample comes back as ``{"skipped": reason}``, :func:`collate_samples` drops it and
counts it in ``batch["n_skipped"]``, and the task reports the count per epoch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medvl.data.dicom import DicomReadError, read_image
from medvl.data.transforms import ResizeLongestPad

__all__ = ["ManifestError", "read_manifest", "ImageReportDataset", "collate_samples"]

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
    """Images, texts and labels from manifest rows.

    Args:
        records: Manifest rows (see :func:`read_manifest`).
        root: Folder the rows' ``image`` paths are relative to.
        img_size: Images are resized (longest side) and zero-padded to this square size.
        label_names: Label columns, in order; a finding missing from a row is -1 (ignored).
        text_key: Row field used as ``batch["report"]``: ``report``, ``findings`` or ``impression``.
        augment: Optional random dict transform on key ``image`` (a (1, S, S) float32
            array), e.g. :class:`medvl.data.transforms.AlbumentationsD`; applied after the
            cached deterministic preprocessing.
        window: Explicit (centre, width) overriding each file's own window.
        preload: Decode and resize every image once, up front (see :meth:`preload`).
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        root: str | Path,
        *,
        img_size: int,
        label_names: Sequence[str],
        text_key: str = "report",
        augment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        window: tuple[float, float] | None = None,
        preload: bool = False,
        progress: bool = True,
    ) -> None:
        self.records = list(records)
        self.root = Path(root)
        self.label_names = list(label_names)
        self.text_key = text_key
        self.augment = augment
        self.window = window
        self.resize = ResizeLongestPad(img_size)
        self.skipped: dict[str, str] = {}  # study_id -> reason, for files found bad up front
        self._cache: torch.Tensor | None = None
        if preload:
            self.preload(progress=progress)

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        """Read and resize one image to (1, S, S) float32 in [0, 1]; raises DicomReadError."""
        path = self.root / self.records[index]["image"]
        img = read_image(path, window=self.window).pixels
        if img.ndim == 3:  # colour (H, W, 3) -> grey, ITU-R BT.601 luma
            img = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return self.resize(img[None].astype(np.float32))

    def preload(self, progress: bool = True) -> None:
        """Decode every image once and keep the resized result in memory as float16.

        Unreadable files are dropped from the dataset and recorded in :attr:`skipped`.
        The cache is a single tensor, so forked data-loader workers share it.
        """
        from rich.progress import track

        arrays, keep = [], []
        it = range(len(self.records))
        for i in track(it, description="decoding images", disable=not progress, transient=True):
            try:
                arrays.append(torch.from_numpy(self.load_image(i)).half())
                keep.append(self.records[i])
            except DicomReadError as e:
                self.skipped[str(self.records[i]["study_id"])] = e.reason
        if self.skipped:
            log.warning("skipped %d unreadable image(s) of %d", len(self.skipped), len(self.records))
        self.records = keep
        self._cache = torch.stack(arrays) if arrays else torch.zeros(0)

    def labels(self, record: dict[str, Any]) -> torch.Tensor:
        raw = record.get("labels") or {}
        return torch.tensor([float(raw.get(n, -1)) for n in self.label_names], dtype=torch.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        if self._cache is not None:
            img = self._cache[index].float().numpy()
        else:
            try:
                img = self.load_image(index)
            except DicomReadError as e:
                return {"skipped": str(e)}
        if self.augment is not None:
            img = self.augment({"image": img})["image"]
        return {
            "image": torch.as_tensor(np.ascontiguousarray(img), dtype=torch.float32),
            "report": str(rec.get(self.text_key) or ""),
            "labels": self.labels(rec),
            "study_id": str(rec["study_id"]),
        }


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings as lists, drop skipped samples and count them."""
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
    return batch
