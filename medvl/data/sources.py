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

import logging
from pathlib import Path

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
        root: Dataset folder; generated there when ``manifest.jsonl`` is absent.
        n: Studies to generate.
        seed: Generator seed; the same seed gives byte-identical files.
    """

    default_label_names = FINDINGS

    def __init__(self, root: str = "data/synthetic_cxr", n: int = 2000, seed: int = 0) -> None:
        super().__init__(str(Path(root) / "manifest.jsonl"))
        self.root, self.n, self.seed = Path(root), n, seed

    def prepare(self) -> None:
        if not (self.root / "manifest.jsonl").is_file():
            from medvl.data.synth import generate_dataset

            log.warning("generating %d synthetic studies in %s (seed %d)", self.n, self.root, self.seed)
            generate_dataset(self.root, n=self.n, seed=self.seed)
