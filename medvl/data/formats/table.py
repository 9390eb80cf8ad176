"""A user's own image-text table: CSV, TSV or JSON Lines with configurable columns.

One row per image: an image path (relative to an image root), a report or caption,
optionally a split, a record id, finding-label columns (1 / 0 / -1 / blank, as in
CheXpert) and separate findings/impression columns. The report is split into its
sections by :func:`medvl.data.reports.parse_report` unless findings/impression
columns are given. Without a split column, rows are split by a seeded hash of their
id (:func:`~medvl.data.formats.hash_split`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from medvl.data.formats._base import (
    CHEXPERT_COLUMNS,
    DEFAULT_FRACTIONS,
    Collector,
    FormatResult,
    MissingFileError,
    OnError,
    RecordSource,
    StrPath,
    Uncertainty,
    apply_uncertainty,
    hash_split,
    label_columns,
    normalize_split,
    read_csv,
    read_jsonl,
)
from medvl.data.reports import clean_text, parse_report

__all__ = ["Table", "read_table", "label_name"]


def label_name(column: str) -> str:
    """Label name of a column: the CheXpert name for an official column, else snake_case."""
    return CHEXPERT_COLUMNS.get(column) or re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")


def _rows(path: Path, needed: list[str], col: Collector) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``("file:line", row)`` of a CSV/TSV (whose header must hold ``needed``) or JSONL table."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".ndjson"):
        return read_jsonl(path, col)
    if kind in (".csv", ".tsv", ".txt"):
        return read_csv(path, needed, delimiter="\t" if kind == ".tsv" else ",")
    raise ValueError(f"{path}: unknown table format (expected .csv, .tsv or .jsonl)")


class Table(RecordSource):
    """Your own CSV (``.csv``, ``.tsv``, optionally ``.gz``) or JSONL (``.jsonl``) table of images and reports.

    Unlike the dataclass layouts (:class:`~medvl.data.formats.LayoutSource`), the options
    are kept in :attr:`options` only: ``image_root`` would otherwise hide
    :meth:`RecordSource.image_root`, which the data modules call.

    Args:
        path: The table.
        image_root: Folder the image paths are relative to (default: the table's folder).
        image_col: Column of the image path.
        text_col: Column of the report or caption (``None``: no text, e.g. labels only).
            Rows with empty text are dropped (``"empty text"``).
        split_col: Column of the split (train / val / test, with the spellings
            valid, validate, validation, dev, training, testing); ``None``: a seeded
            hash split of the record id.
        id_col: Column of the record id (default: the image path without suffix).
        label_cols: Label columns, read as 1 / 0 / -1 / blank; the label name is
            :func:`label_name` of the column. A JSONL row may instead carry a
            ``labels`` object (its keys go through :func:`label_name` too).
        findings_col: Column of the findings, instead of parsing ``text_col``.
        impression_col: Column of the impression, instead of parsing ``text_col``.
        uncertainty: Policy for -1 labels (``ignore``, ``ones``, ``zeros``).
        seed: Seed of the hash split.
        fractions: Train/val/test fractions of the hash split.
        on_error: ``raise`` or ``skip`` malformed rows (see :mod:`medvl.data.formats`).
        check_files: Drop rows whose image is missing (``"missing image"``).

    Raises:
        MissingFileError: On reading: the table does not exist.
        ManifestError: On reading: a missing column (CSV header), an unknown split, a
            bad label value, a duplicate id or a path leaving the image root, with
            ``on_error="raise"``.
    """

    def __init__(
        self,
        path: StrPath,
        *,
        image_root: StrPath | None = None,
        image_col: str = "image",
        text_col: str | None = "report",
        split_col: str | None = "split",
        id_col: str | None = None,
        label_cols: list[str] | None = None,
        findings_col: str | None = None,
        impression_col: str | None = None,
        uncertainty: Uncertainty = "ignore",
        seed: int = 0,
        fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
        on_error: OnError = "raise",
        check_files: bool = True,
    ) -> None:
        self.path = path
        # Every parameter but the table, by name (this is the first statement: locals() holds only them).
        self.options: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "path")}

    @property
    def default_label_names(self) -> tuple[str, ...] | None:
        """:func:`label_name` of each of ``label_cols``; without them, inferred from the records."""
        label_cols = self.options["label_cols"]
        return tuple(label_name(c) for c in label_cols) if label_cols else None

    def _read(self) -> FormatResult:
        path, o = Path(self.path), self.options
        if not path.is_file():
            raise MissingFileError(f"{path}: table not found")
        if o["split_col"] is None:
            hash_split("", seed=o["seed"], fractions=o["fractions"])
        root = Path(o["image_root"]) if o["image_root"] is not None else path.parent
        col = Collector(root, on_error=o["on_error"], check_files=o["check_files"])
        label_map = {c: label_name(c) for c in (o["label_cols"] or ())}
        columns = ("image_col", "text_col", "split_col", "id_col", "findings_col", "impression_col")
        needed = [o[c] for c in columns if o[c]] + list(label_map)
        for where, row in _rows(path, needed, col):
            missing = [c for c in needed if c not in row]
            if missing:
                col.bad(where, f"missing column(s) {missing}")
                continue
            record = self._record(row, where, label_map, col)
            if record is not None:
                col.add(record, where)
        return col.result()

    def _record(
        self, row: Mapping[str, Any], where: str, label_map: dict[str, str], col: Collector
    ) -> dict[str, Any] | None:
        """One row as a record, or None when it is malformed or dropped (``col`` counts it)."""
        o = self.options
        image_col, split_col, id_col, text_col = o["image_col"], o["split_col"], o["id_col"], o["text_col"]
        image_value = row[image_col]
        if not isinstance(image_value, str) or not image_value.strip():
            col.bad(where, f"empty or non-text {image_col!r}")
            return None
        rel = image_value.strip()
        try:
            if label_map:
                labels = label_columns(row, label_map)
            elif isinstance(row.get("labels"), Mapping):
                labels = label_columns(row["labels"], {k: label_name(k) for k in row["labels"]})
            elif row.get("labels") not in (None, ""):
                raise ValueError("'labels' must be an object of label -> 1/0/-1")
            else:
                labels = None
        except ValueError as err:
            col.bad(where, str(err))
            return None
        if split_col is not None:
            split = normalize_split(row[split_col])
            if split is None:
                col.bad(where, f"unknown split {row[split_col]!r} (expected train, val or test)")
                return None
        record_id = str(row[id_col]).strip() if id_col else str(PurePosixPath(rel.replace("\\", "/")).with_suffix(""))
        if not record_id:
            col.bad(where, f"empty {id_col!r}")
            return None
        fields: dict[str, Any] = {}
        if text_col is not None:
            raw = row[text_col]
            text = clean_text(str(raw)) if raw is not None else ""
            if not text:
                col.drop("empty text")
                return None
            sections = parse_report(str(raw))
            fields = {
                "report": text,
                "findings": sections["findings"],
                "impression": sections["impression"],
                "indication": sections["indication"] or sections["history"],
                "comparison": sections["comparison"],
            }
        for key, c in (("findings", o["findings_col"]), ("impression", o["impression_col"])):
            if c:
                fields[key] = clean_text(str(row[c] or ""))
        image = col.image(rel, where)
        if image is None:
            return None
        if split_col is None:
            split = hash_split(record_id, seed=o["seed"], fractions=o["fractions"])
        record: dict[str, Any] = {"study_id": record_id, "image": image, "split": split, **fields}
        if labels is not None:
            record["labels"] = apply_uncertainty(labels, o["uncertainty"])
        return record


def read_table(path: StrPath, **options: Any) -> FormatResult:
    """Read a table: ``Table(path, **options).result()``, with its options and errors."""
    return Table(path, **options).result()
