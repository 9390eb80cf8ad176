"""Record sources: where a data module's studies come from, one class per on-disk layout.

A source reads a dataset in its own layout into manifest-schema records (see
:mod:`medvl.data.dataset`) on first use, and says which label columns it has.
:class:`medvl.datamodules.ImageTextDataModule` composes a source with the loader options,
which are therefore written once::

    class_path: medvl.datamodules.ImageTextDataModule
    init_args:
      source:
        class_path: medvl.data.sources.MIMICCXR
        init_args: {root: /data/mimic-cxr-jpg/2.0.0, section: impression}
      img_size: 224
      batch_size: 64

The public layouts (:class:`MIMICCXR`, :class:`CheXpert`, :class:`IUXray`, :class:`ROCO`,
:class:`PMCOA`, :class:`Table`) live with their readers in :mod:`medvl.data.formats`,
where their options are documented, and are re-exported here; :class:`Manifest` and
:class:`Synthetic` read medvl's own manifest format.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medvl.data.formats import (
    MIMICCXR,
    PMCOA,
    ROCO,
    CheXpert,
    FormatResult,
    IUXray,
    RecordSource,
    Table,
)
from medvl.data.labels import FINDINGS

__all__ = [
    "CheXpert",
    "IUXray",
    "MIMICCXR",
    "Manifest",
    "PMCOA",
    "ROCO",
    "RecordSource",
    "Synthetic",
    "Table",
]

log = logging.getLogger(__name__)


class Manifest(RecordSource):
    """A medvl JSON Lines manifest (README, "Use your own data"); images relative to its folder.

    Args:
        path: The manifest file.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _read(self) -> FormatResult:
        from medvl.data.dataset import read_manifest

        return FormatResult(records=read_manifest(self.path), image_root=Path(self.path).parent)


class Synthetic(Manifest):
    """The embedded default: phantom chest radiographs as DICOM, generated on first use.

    Args:
        root: Dataset folder; generated there when ``manifest.jsonl`` is absent, and
            regenerated (with a warning) when its ``dataset.json`` records no or another
            :data:`medvl.data.synth.GENERATOR_VERSION`, so an old folder does not keep
            old questions or labels.
        n: Studies to generate.
        seed: Generator seed; the same seed gives byte-identical files.
    """

    default_label_names = FINDINGS

    def __init__(self, root: str = "data/synthetic_cxr", n: int = 2000, seed: int = 0) -> None:
        super().__init__(str(Path(root) / "manifest.jsonl"))
        self.root, self.n, self.seed = Path(root), n, seed

    def _recorded_version(self) -> Any:
        """The generator version in the folder's ``dataset.json``; ``None`` if it has none."""
        try:
            summary = json.loads((self.root / "dataset.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return summary.get("version") if isinstance(summary, dict) else None

    def prepare(self) -> None:
        from medvl.data.synth import GENERATOR_VERSION, generate_dataset

        if not (self.root / "manifest.jsonl").is_file():
            log.warning("generating %d synthetic studies in %s (seed %d)", self.n, self.root, self.seed)
        elif (found := self._recorded_version()) != GENERATOR_VERSION:
            log.warning("regenerating %d synthetic studies in %s (seed %d): its dataset.json records generator "
                        "version %s, this is version %s", self.n, self.root, self.seed,
                        "none" if found is None else repr(found), GENERATOR_VERSION)
        else:
            return
        generate_dataset(self.root, n=self.n, seed=self.seed)
