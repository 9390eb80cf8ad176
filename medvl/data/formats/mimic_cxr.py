"""MIMIC-CXR and MIMIC-CXR-JPG in their PhysioNet layouts.

MIMIC-CXR-JPG 2.0.0 (Johnson et al., arXiv:1901.07042) ships, next to its ``files/``
tree of ``files/p10/p10000032/s50414267/<dicom_id>.jpg``, the tables
``mimic-cxr-2.0.0-split.csv[.gz]`` (``dicom_id, study_id, subject_id, split`` with
split ``train``/``validate``/``test``), ``mimic-cxr-2.0.0-chexpert.csv[.gz]`` and
``mimic-cxr-2.0.0-negbio.csv[.gz]`` (``subject_id, study_id`` and the 14 CheXpert
observations as 1.0 / 0.0 / -1.0 / blank), and ``mimic-cxr-2.0.0-metadata.csv[.gz]``
(``dicom_id, subject_id, study_id, ..., ViewPosition, ...``). MIMIC-CXR 2.0.0 (the
DICOM release) has the same tree with ``<dicom_id>.dcm`` and the free-text reports
as ``files/p10/p10000032/s50414267.txt``; the reports also come as
``mimic-cxr-reports.zip`` (extracted: ``mimic-cxr-reports/files/...``). Reports are
split into sections by :func:`medvl.data.reports.parse_report`.

One record per study (``images="one"``: the best view, PA before AP before the rest,
with all kept images of the study in ``images``) or per image (``images="all"``,
``study_id`` = ``s<study>/<dicom_id>``). Frontal means ``ViewPosition`` PA or AP;
lateral means LATERAL or LL.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medvl.data.dataset import ManifestError
from medvl.data.formats._base import (
    CHEXPERT_COLUMNS,
    Collector,
    FormatResult,
    LayoutSource,
    StrPath,
    Uncertainty,
    apply_uncertainty,
    find_file,
    first_existing,
    label_columns,
    normalize_split,
    read_csv,
    text_fields,
    with_gz,
)
from medvl.data.labels import CHEXPERT_LABELS
from medvl.data.reports import parse_report

__all__ = ["MIMICCXR", "read_mimic_cxr", "FRONTAL_VIEWS", "LATERAL_VIEWS"]

FRONTAL_VIEWS: frozenset[str] = frozenset({"PA", "AP"})
LATERAL_VIEWS: frozenset[str] = frozenset({"LATERAL", "LL"})
_VIEW_RANK = {"PA": 0, "AP": 1, "LATERAL": 2, "LL": 3}
_ID = re.compile(r"^\d+$")


def _study_dir(subject: str, study: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}"


@contextlib.contextmanager
def _report_source(root: Path, reports: StrPath | None) -> Iterator[Callable[[str], str | None]]:
    """Yield a function from ``files/pXX/pYYYYYYYY/sZZZZZZZZ.txt`` to the report text (or None)."""
    if reports is None:
        src = first_existing([root / "mimic-cxr-reports"], dirs=True) or \
            first_existing([root / "mimic-cxr-reports.zip"]) or root
    else:
        src = find_file("MIMIC-CXR reports (a folder or mimic-cxr-reports.zip)", [Path(reports)], dirs=None)
    if src.is_dir():
        def from_dir(rel: str) -> str | None:
            path = src / rel
            return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

        yield from_dir
        return
    try:
        archive = zipfile.ZipFile(src)
    except zipfile.BadZipFile as err:
        raise ManifestError(f"{src}: not a readable zip archive ({err})") from None
    with archive:
        # Members may sit under a top folder (mimic-cxr-reports/files/...): index from "files/".
        members = {name[name.find("files/"):]: name for name in archive.namelist()
                   if name.endswith(".txt") and "files/" in name}

        def from_zip(rel: str) -> str | None:
            name = members.get(rel)
            return None if name is None else archive.read(name).decode("utf-8", errors="replace")

        yield from_zip


@dataclass(eq=False, kw_only=True)
class MIMICCXR(LayoutSource):
    """MIMIC-CXR-JPG (or the DICOM release) with its free-text reports.

    Args:
        root: Folder holding ``files/`` with the images (``mimic-cxr-jpg/2.0.0`` or
            ``mimic-cxr/2.0.0``); the image root of the records.
        meta_root: Folder with the ``mimic-cxr-2.0.0-*.csv[.gz]`` tables (default
            ``root``; for the DICOM release, the MIMIC-CXR-JPG folder).
        reports: The reports: a folder holding ``files/pXX/...txt`` or
            ``mimic-cxr-reports.zip``. Default: ``root/mimic-cxr-reports(.zip)``,
            else ``root`` itself (the DICOM release keeps them there).
        image_format: ``jpg`` (MIMIC-CXR-JPG) or ``dcm`` (MIMIC-CXR DICOM).
        labels: Which label table: CheXpert labeler, NegBio, or none.
        uncertainty: Policy for -1 labels (see :func:`~medvl.data.formats.apply_uncertainty`).
        views: Keep frontal (PA/AP), lateral (LATERAL/LL) or all images.
        section: Report section used as ``report``: ``findings``, ``impression`` or
            ``both`` (``"FINDINGS: ...\\n\\nIMPRESSION: ..."``). Studies without it are
            dropped (``"no <section> section"``).
        images: ``one`` record per study or one per image (``all``).

    Raises:
        MissingFileError: On reading: the split table (or a label/metadata table that
            the options need) is absent.
        ManifestError: On reading: a malformed row, with ``on_error="raise"``.
    """

    meta_root: StrPath | None = None
    reports: StrPath | None = None
    image_format: Literal["jpg", "dcm"] = "jpg"
    labels: Literal["chexpert", "negbio", "none"] = "chexpert"
    uncertainty: Uncertainty = "ignore"
    views: Literal["frontal", "lateral", "all"] = "frontal"
    section: Literal["findings", "impression", "both"] = "findings"
    images: Literal["one", "all"] = "one"

    @property
    def default_label_names(self) -> tuple[str, ...]:
        """The 14 CheXpert findings, none with ``labels="none"``."""
        return () if self.labels == "none" else CHEXPERT_LABELS

    def _read(self) -> FormatResult:
        root = Path(self.root)
        meta = Path(self.meta_root) if self.meta_root is not None else root
        labels, views = self.labels, self.views
        if self.image_format not in ("jpg", "dcm"):
            raise ValueError(f"image_format must be 'jpg' or 'dcm', got {self.image_format!r}")
        if self.images not in ("one", "all"):
            raise ValueError(f"images must be 'one' or 'all', got {self.images!r}")
        if views not in ("frontal", "lateral", "all"):
            raise ValueError(f"views must be 'frontal', 'lateral' or 'all', got {views!r}")
        text_fields({}, self.section)  # validates the option before any file is read
        col = self._collector(root)

        split_path = find_file("MIMIC-CXR split table", with_gz(meta / "mimic-cxr-2.0.0-split.csv"))
        view_of: dict[str, str] = {}
        if views != "all":
            meta_path = find_file("MIMIC-CXR metadata table (needed for the view filter)",
                                  with_gz(meta / "mimic-cxr-2.0.0-metadata.csv"))
        else:
            meta_path = first_existing(with_gz(meta / "mimic-cxr-2.0.0-metadata.csv"))
        if meta_path is not None:
            for _, row in read_csv(meta_path, ["dicom_id", "ViewPosition"]):
                view_of[row["dicom_id"].strip()] = (row["ViewPosition"] or "").strip().upper()

        study_labels: dict[str, dict[str, int]] = {}
        bad_labels: set[str] = set()
        if labels != "none":
            if labels not in ("chexpert", "negbio"):
                raise ValueError(f"labels must be 'chexpert', 'negbio' or 'none', got {labels!r}")
            label_path = find_file(f"MIMIC-CXR {labels} label table",
                                   with_gz(meta / f"mimic-cxr-2.0.0-{labels}.csv"))
            for where, row in read_csv(label_path, ["subject_id", "study_id", *CHEXPERT_COLUMNS]):
                study = (row["study_id"] or "").strip()
                try:
                    if not _ID.match(study):
                        raise ValueError(f"study_id {study!r} is not a number")
                    study_labels[study] = apply_uncertainty(label_columns(row, CHEXPERT_COLUMNS), self.uncertainty)
                except ValueError as err:
                    if self.on_error == "raise":
                        col.bad(where, str(err))
                    bad_labels.add(study)  # the study is dropped below, counted once

        # Group the split table's images by study, keeping the table's order.
        studies: dict[str, dict[str, Any]] = {}
        for where, row in read_csv(split_path, ["dicom_id", "study_id", "subject_id", "split"]):
            subject, study = (row["subject_id"] or "").strip(), (row["study_id"] or "").strip()
            dicom_id, split = (row["dicom_id"] or "").strip(), normalize_split(row["split"])
            if not (_ID.match(subject) and _ID.match(study)) or not dicom_id:
                col.bad(where, "subject_id/study_id must be numbers and dicom_id non-empty")
                continue
            if split is None:
                col.bad(where, f"unknown split {row['split']!r}")
                continue
            entry = studies.setdefault(study, {"subject": subject, "split": split, "images": []})
            entry["images"].append((dicom_id, where))

        with _report_source(root, self.reports) as read_report:
            self._add_studies(col, studies, view_of, study_labels, bad_labels, read_report)
        return col.result()

    def _add_studies(
        self,
        col: Collector,
        studies: dict[str, dict[str, Any]],
        view_of: dict[str, str],
        study_labels: dict[str, dict[str, int]],
        bad_labels: set[str],
        read_report: Callable[[str], str | None],
    ) -> None:
        """Choose each study's images, attach its report and labels, and keep or count it."""
        check_files, views, section, images = col.check_files, self.views, self.section, self.images
        for study, entry in studies.items():
            kept, n_other_view, n_outside = [], 0, 0
            for dicom_id, where in entry["images"]:
                view = view_of.get(dicom_id, "")
                if views == "frontal" and view not in FRONTAL_VIEWS or views == "lateral" and view not in LATERAL_VIEWS:
                    n_other_view += 1
                    continue
                rel = col.image(f"{_study_dir(entry['subject'], study)}/{dicom_id}.{self.image_format}", where,
                                n=1 if images == "all" else 0, check=False)
                if rel is None:
                    n_outside += 1
                else:
                    kept.append((_VIEW_RANK.get(view, 9), dicom_id, view, rel, where))
            if images == "all":
                col.drop(f"not {views}", n_other_view)
            if not kept:
                if images == "one":
                    col.drop("path outside root" if n_outside else f"no {views} image")
                continue
            kept.sort()
            if check_files:
                present = [k for k in kept if col.exists(k[3])]
                missing = len(kept) - len(present)
                if images == "all" and missing:
                    col.drop("missing image", missing)
                elif not present:
                    col.drop("missing image")
                kept = present
                if not kept:
                    continue
            n = len(kept) if images == "all" else 1
            if study in bad_labels:
                col.drop("malformed row", n)
                continue
            text = read_report(f"{_study_dir(entry['subject'], study)}.txt")
            if text is None:
                col.drop("missing report", n)
                continue
            fields = text_fields(parse_report(text), section)
            if not fields["report"]:
                col.drop("no findings or impression" if section == "both" else f"no {section} section", n)
                continue
            base: dict[str, Any] = {"split": entry["split"], **fields}
            if study in study_labels:
                base["labels"] = study_labels[study]
            if images == "one":
                _, _, view, rel, where = kept[0]
                all_images = [k[3] for k in kept]
                col.add({"study_id": f"s{study}", "image": rel, "images": all_images, "view": view, **base}, where)
            else:
                for _, dicom_id, view, rel, where in kept:
                    col.add({"study_id": f"s{study}/{dicom_id}", "image": rel, "view": view, **base}, where)


def read_mimic_cxr(root: StrPath, **options: Any) -> FormatResult:
    """Read MIMIC-CXR(-JPG): ``MIMICCXR(root, **options).result()``, with its options and errors."""
    return MIMICCXR(root, **options).result()
