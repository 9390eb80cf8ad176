"""CheXpert in its Stanford release layout (Irvin et al., AAAI 2019).

``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``) holds ``train.csv`` and
``valid.csv`` with the columns ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14
observations (1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned), and
the images under ``train/patient00001/study1/view1_frontal.jpg``. ``Path`` carries the
release folder as prefix (``CheXpert-v1.0-small/train/...``); the reader strips it
and makes paths relative to the folder holding the tables, so a renamed copy still
reads. A table without the ``Frontal/Lateral`` column takes the view from the file
name (``view1_frontal.jpg``).

Uncertain labels follow the paper's policies: U-Ignore (``"ignore"``, keep -1,
which medvl ignores), U-Ones (``"ones"``), U-Zeros (``"zeros"``). Sex and age are not
copied into the records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from medvl.data.formats._base import (
    CHEXPERT_COLUMNS,
    FormatResult,
    LayoutSource,
    MissingFileError,
    StrPath,
    Uncertainty,
    apply_uncertainty,
    hash_split,
    label_columns,
    read_csv,
)
from medvl.data.labels import CHEXPERT_LABELS, NEGATIVE

__all__ = ["CheXpert", "read_chexpert"]


def _dataset_dir(root: Path) -> Path:
    """The folder holding train.csv: ``root`` itself or one ``CheXpert-v1.0*`` inside it."""
    if (root / "train.csv").is_file() or (root / "valid.csv").is_file():
        return root
    inner = sorted(p for p in root.glob("CheXpert-v1.0*") if (p / "train.csv").is_file())
    if len(inner) == 1:
        return inner[0]
    raise MissingFileError(f"{root / 'train.csv'}: CheXpert train.csv not found (nor in a CheXpert-v1.0*/ folder)")


@dataclass(eq=False, kw_only=True)
class CheXpert(LayoutSource):
    """CheXpert labels and images; ``report`` is empty.

    Args:
        root: ``CheXpert-v1.0-small/`` (the folder with ``train.csv``) or its parent.
        uncertainty: Policy for -1 labels: ``ignore`` (U-Ignore), ``ones``, ``zeros``.
        blank: A blank cell is ``absent`` (not mentioned, ignored) or ``negative``.
        views: Keep ``frontal``, ``lateral`` or ``all`` images.
        valid_split: Split of the ``valid.csv`` images (``val``, or ``test`` when it
            serves as the held-out set, as in most papers).
        val_fraction: Fraction of train patients moved to ``val`` (seeded hash of the
            patient folder name, so a patient's studies stay together).
        seed: Seed of that hash.

    Raises:
        MissingFileError: On reading: no ``train.csv`` or ``valid.csv`` under ``root``.
        ManifestError: On reading: a malformed row (bad label value, missing column),
            with ``on_error="raise"``.
    """

    default_label_names = CHEXPERT_LABELS

    uncertainty: Uncertainty = "ignore"
    blank: Literal["absent", "negative"] = "absent"
    views: Literal["frontal", "lateral", "all"] = "frontal"
    valid_split: Literal["val", "test"] = "val"
    val_fraction: float = 0.0
    seed: int = 0

    def _read(self) -> FormatResult:
        views, blank, val_fraction = self.views, self.blank, self.val_fraction
        if views not in ("frontal", "lateral", "all"):
            raise ValueError(f"views must be 'frontal', 'lateral' or 'all', got {views!r}")
        if blank not in ("absent", "negative"):
            raise ValueError(f"blank must be 'absent' or 'negative', got {blank!r}")
        data = _dataset_dir(Path(self.root))
        col = self._collector(data)
        for name, split in (("train.csv", "train"), ("valid.csv", self.valid_split)):
            path = data / name
            if not path.is_file():
                raise MissingFileError(f"{path}: CheXpert {name} not found")
            for where, row in read_csv(path, ["Path", *CHEXPERT_COLUMNS]):
                parts = PurePosixPath((row["Path"] or "").strip().replace("\\", "/")).parts
                if parts and parts[0].startswith("CheXpert-v1.0") or parts and parts[0] == data.name:
                    parts = parts[1:]
                rel = "/".join(parts)
                if not rel:
                    col.bad(where, "empty Path")
                    continue
                frontal_lateral = (row.get("Frontal/Lateral") or "").strip().lower()
                if not frontal_lateral:
                    stem = PurePosixPath(rel).stem.lower()
                    frontal_lateral = "frontal" if "frontal" in stem else "lateral" if "lateral" in stem else ""
                if frontal_lateral not in ("frontal", "lateral"):
                    col.bad(where, f"unknown Frontal/Lateral value {row.get('Frontal/Lateral')!r}")
                    continue
                try:
                    labels = label_columns(row, CHEXPERT_COLUMNS)
                except ValueError as err:
                    col.bad(where, str(err))
                    continue
                if views != "all" and frontal_lateral != views:
                    col.drop(f"not {views}")
                    continue
                image = col.image(rel, where)
                if image is None:
                    continue
                labels = apply_uncertainty(labels, self.uncertainty)
                if blank == "negative":
                    labels = {n: labels.get(n, NEGATIVE) for n in CHEXPERT_COLUMNS.values()}
                record_split = split
                if split == "train" and val_fraction > 0 and len(parts) > 2:
                    patient = parts[1]
                    if hash_split(patient, seed=self.seed, fractions=(1 - val_fraction, val_fraction, 0.0)) == "val":
                        record_split = "val"
                record = {
                    "study_id": str(PurePosixPath(image).with_suffix("")),
                    "image": image,
                    "split": record_split,
                    "view": frontal_lateral,
                    "projection": (row.get("AP/PA") or "").strip(),
                    "labels": labels,
                }
                col.add(record, where)
        return col.result()


def read_chexpert(root: StrPath, **options: Any) -> FormatResult:
    """Read CheXpert: ``CheXpert(root, **options).result()``, with its options and errors."""
    return CheXpert(root, **options).result()
