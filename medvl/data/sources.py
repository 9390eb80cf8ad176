"""Record sources: where a data module's studies come from, one class per on-disk layout.

A source reads a dataset in its own layout into manifest-schema records (see
:mod:`medvl.data.dataset`) through the readers of :mod:`medvl.data.formats`, and says
which label columns it has. :class:`medvl.datamodules.ImageTextDataModule` composes a
source with the loader options, which are therefore written once::

    class_path: medvl.datamodules.ImageTextDataModule
    init_args:
      source:
        class_path: medvl.data.sources.MIMICCXR
        init_args: {root: /data/mimic-cxr-jpg/2.0.0, section: impression}
      img_size: 224
      batch_size: 64

Each source's arguments are those of its reader (``read_mimic_cxr`` and so on), where
they are documented.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from medvl.data.labels import CHEXPERT_LABELS, FINDINGS

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

OnError = Literal["raise", "skip"]
Uncertainty = Literal["ignore", "ones", "zeros"]


class RecordSource:
    """Reads a dataset once into records; subclasses implement :meth:`_read`.

    Attributes:
        default_label_names: The label columns this layout has, in order; None: inferred
            from the records (the label keys in the order first seen).
    """

    default_label_names: tuple[str, ...] | None = None

    def __init__(self) -> None:
        self._result: Any = None

    def _read(self) -> Any:
        """A :class:`medvl.data.formats.FormatResult` (subclasses)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the data exist (e.g. generate it); called once, on rank 0."""

    def result(self) -> Any:
        """The reader's :class:`~medvl.data.formats.FormatResult`, read on first use."""
        if self._result is None:
            self._result = self._read()
            log.info("%s: %s", type(self).__name__, self._result.summary())
        return self._result

    def records(self) -> list[dict[str, Any]]:
        """Every record of the dataset (all splits)."""
        return self.result().records

    def image_root(self) -> Path:
        """Folder the records' ``image`` paths are relative to."""
        return Path(self.result().image_root)

    def summary(self) -> str:
        """``"found N, dropped M (reasons)"``."""
        return self.result().summary()

    def label_names(self) -> list[str]:
        """The label columns of this dataset, in order (empty for caption-only data)."""
        if self.default_label_names is not None:
            return list(self.default_label_names)
        seen: dict[str, None] = {}
        for rec in self.records():
            for name in rec.get("labels") or {}:
                seen.setdefault(str(name), None)
        return list(seen)

    def __getstate__(self) -> dict[str, Any]:
        # Records travel to worker processes inside the datasets, not with the source.
        return {**self.__dict__, "_result": None}


class _ReaderSource(RecordSource):
    """A source that calls one ``medvl.data.formats`` reader with its arguments."""

    reader: str = ""

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__()
        self.root, self.options = root, options

    def _read(self) -> Any:
        from medvl.data import formats

        return getattr(formats, self.reader)(self.root, **self.options)


class Manifest(RecordSource):
    """A medvl JSON Lines manifest (README, "Use your own data"); images relative to its folder.

    Args:
        path: The manifest file.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _read(self) -> Any:
        from medvl.data.dataset import read_manifest
        from medvl.data.formats import FormatResult

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


class MIMICCXR(_ReaderSource):
    """MIMIC-CXR-JPG (or the DICOM release) with its free-text reports (:func:`~medvl.data.formats.read_mimic_cxr`)."""

    reader = "read_mimic_cxr"

    def __init__(
        self,
        root: str,
        meta_root: str | None = None,
        reports: str | None = None,
        image_format: Literal["jpg", "dcm"] = "jpg",
        labels: Literal["chexpert", "negbio", "none"] = "chexpert",
        uncertainty: Uncertainty = "ignore",
        views: Literal["frontal", "lateral", "all"] = "frontal",
        section: Literal["findings", "impression", "both"] = "findings",
        images: Literal["one", "all"] = "one",
        on_error: OnError = "raise",
        check_files: bool = True,
    ) -> None:
        super().__init__(root, meta_root=meta_root, reports=reports, image_format=image_format, labels=labels,
                         uncertainty=uncertainty, views=views, section=section, images=images,
                         on_error=on_error, check_files=check_files)
        self.default_label_names = () if labels == "none" else CHEXPERT_LABELS


class CheXpert(_ReaderSource):
    """CheXpert labels and images (:func:`~medvl.data.formats.read_chexpert`); ``report`` is empty."""

    reader = "read_chexpert"
    default_label_names = CHEXPERT_LABELS

    def __init__(
        self,
        root: str,
        uncertainty: Uncertainty = "ignore",
        blank: Literal["absent", "negative"] = "absent",
        views: Literal["frontal", "lateral", "all"] = "frontal",
        valid_split: Literal["val", "test"] = "val",
        val_fraction: float = 0.0,
        seed: int = 0,
        on_error: OnError = "raise",
        check_files: bool = True,
    ) -> None:
        super().__init__(root, uncertainty=uncertainty, blank=blank, views=views, valid_split=valid_split,
                         val_fraction=val_fraction, seed=seed, on_error=on_error, check_files=check_files)


class IUXray(_ReaderSource):
    """IU X-ray (Open-i) reports and PNG images (:func:`~medvl.data.formats.read_iu_xray`); no labels."""

    reader = "read_iu_xray"
    default_label_names = ()

    def __init__(
        self,
        root: str,
        reports: str | None = None,
        images_dir: str | None = None,
        images: Literal["first", "all"] = "first",
        section: Literal["findings", "impression", "both"] = "findings",
        seed: int = 0,
        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        on_error: OnError = "raise",
        check_files: bool = True,
    ) -> None:
        super().__init__(root, reports=reports, images_dir=images_dir, images=images, section=section, seed=seed,
                         fractions=tuple(fractions), on_error=on_error, check_files=check_files)


class ROCO(_ReaderSource):
    """ROCO image-caption pairs (:func:`~medvl.data.formats.read_roco`); ``report`` is the caption, no labels."""

    reader = "read_roco"
    default_label_names = ()

    def __init__(
        self,
        root: str,
        subsets: list[Literal["radiology", "non-radiology"]] | None = None,
        on_error: OnError = "raise",
        check_files: bool = True,
    ) -> None:
        super().__init__(root, subsets=tuple(subsets or ("radiology",)), on_error=on_error, check_files=check_files)


class PMCOA(_ReaderSource):
    """PMC-OA sub-figure-caption pairs (:func:`~medvl.data.formats.read_pmc_oa`); no labels."""

    reader = "read_pmc_oa"
    default_label_names = ()

    def __init__(
        self,
        root: str,
        images_dir: str | None = None,
        seed: int = 0,
        on_error: OnError = "raise",
        check_files: bool = True,
    ) -> None:
        super().__init__(root, images_dir=images_dir, seed=seed, on_error=on_error, check_files=check_files)


class Table(_ReaderSource):
    """Your own CSV / TSV / JSONL table of images and reports (:func:`~medvl.data.formats.read_table`)."""

    reader = "read_table"

    def __init__(
        self,
        path: str,
        image_root: str | None = None,
        image_col: str = "image",
        text_col: str | None = "report",
        split_col: str | None = "split",
        id_col: str | None = None,
        label_cols: list[str] | None = None,
        findings_col: str | None = None,
        impression_col: str | None = None,
        uncertainty: Uncertainty = "ignore",
        seed: int = 0,
        on_error: OnError = "raise",
        check_files: bool = True,
    ) -> None:
        super().__init__(path, image_root=image_root, image_col=image_col, text_col=text_col, split_col=split_col,
                         id_col=id_col, label_cols=label_cols, findings_col=findings_col,
                         impression_col=impression_col, uncertainty=uncertainty, seed=seed,
                         on_error=on_error, check_files=check_files)
        if label_cols:
            from medvl.data.formats.table import label_name

            self.default_label_names = tuple(label_name(c) for c in label_cols)
