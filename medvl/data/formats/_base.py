"""Machinery shared by the dataset layouts: sources, results, validation, splits, labels."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from medvl.data.dataset import ManifestError
from medvl.data.labels import CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN
from medvl.data.reports import clean_text, format_report

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
Uncertainty = Literal["ignore", "ones", "zeros"]
StrPath = str | os.PathLike[str]
"""A file or folder given as text or as a path."""

_T = TypeVar("_T")

CHEXPERT_COLUMNS: dict[str, str] = dict(zip(
    (
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
        "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
        "Pleural Other", "Fracture", "Support Devices",
    ),
    CHEXPERT_LABELS,
    strict=True,
))
"""Official CheXpert / MIMIC-CXR label column -> medvl label name (:data:`CHEXPERT_LABELS`)."""

SPLIT_NAMES: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
"""Split spellings found in the releases -> medvl split name."""

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)
"""Train/val/test fractions of :func:`hash_split` (the 7:1:2 of R2Gen's IU X-ray split)."""


class MissingFileError(ManifestError, FileNotFoundError):
    """A file the layout requires is absent; the message names it (and what was tried)."""


@dataclass
class FormatResult:
    """What a reader found: manifest-schema records and what it left out.

    Attributes:
        records: One dict per record in the manifest schema of
            :mod:`medvl.data.dataset`; ``image`` is relative to :attr:`image_root`.
        image_root: Folder the records' image paths are relative to.
        dropped: Reason -> count of records (questions, for VQA readers) left out.
        unit: What is counted: ``"records"``, or ``"questions"`` for VQA readers.
    """

    records: list[dict[str, Any]]
    image_root: Path
    dropped: Counter[str] = field(default_factory=Counter)
    unit: str = "records"

    @property
    def found(self) -> int:
        """Records kept (questions kept, for VQA readers)."""
        if self.unit == "questions":
            return sum(len(r.get("vqa", ())) for r in self.records)
        return len(self.records)

    def split_counts(self) -> dict[str, int]:
        """Records per split."""
        return dict(Counter(r["split"] for r in self.records))

    def summary(self) -> str:
        """``"found N, dropped M (reason: k, ...)"``, reasons by decreasing count."""
        total = sum(self.dropped.values())
        text = f"found {self.found}, dropped {total}"
        if total:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in self.dropped.most_common() if v) + ")"
        return text


class Collector:
    """Applies the robustness policy of :mod:`medvl.data.formats` while a reader runs.

    Args:
        image_root: Folder image paths must stay inside.
        on_error: ``"raise"``: a malformed row raises :class:`ManifestError`;
            ``"skip"``: it is counted under a short reason and left out.
        check_files: Count records whose image file does not exist as ``"missing image"``.
    """

    def __init__(
        self, image_root: str | os.PathLike[str], *, on_error: OnError = "raise", check_files: bool = True
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.image_root = Path(image_root)
        self.on_error, self.check_files = on_error, check_files
        self.dropped: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` records left out on purpose or for a data problem."""
        if n:
            self.dropped[reason] += n

    def bad(self, where: str, reason: str, key: str = "malformed row", n: int = 1) -> None:
        """A malformed row: raise naming ``where`` and ``reason``, or count under ``key``."""
        if self.on_error == "raise":
            raise ManifestError(f"{where}: {reason}")
        self.drop(key, n)

    def image(self, rel: str, where: str, *, n: int = 1, check: bool | None = None) -> str | None:
        """Validate an image path relative to the image root.

        A path that is absolute or climbs out of the root is malformed (:meth:`bad`,
        key ``"path outside root"``); a file that does not exist is counted as
        ``"missing image"`` when checking files.

        Args:
            rel: The path as the dataset's files give it.
            where: ``file:line`` for the error message.
            n: How many records (or questions) a drop counts for; 0 leaves the
                counting to the caller.
            check: Check that the file exists (default: the collector's ``check_files``).

        Returns:
            The normalised POSIX path, or ``None`` when the record was dropped.
        """
        norm = inside_root(rel)
        if norm is None:
            self.bad(where, f"image path {rel!r} points outside the dataset root", key="path outside root", n=n)
            return None
        if (self.check_files if check is None else check) and not self.exists(norm):
            self.drop("missing image", n)
            return None
        return norm

    def exists(self, rel: str) -> bool:
        """Whether a validated relative path is a file under the image root."""
        return (self.image_root / rel).is_file()

    def add(self, record: dict[str, Any], where: str) -> bool:
        """Keep a record; a repeated ``study_id`` is malformed (key ``"duplicate id"``)."""
        sid = str(record["study_id"])
        if sid in self._ids:
            self.bad(where, f"duplicate id {sid!r}", key="duplicate id")
            return False
        self._ids.add(sid)
        self.records.append(record)
        return True

    def result(self, unit: str = "records") -> FormatResult:
        """The records kept so far, the image root and the drop counts."""
        return FormatResult(records=self.records, image_root=self.image_root, dropped=self.dropped, unit=unit)


class RecordSource:
    """Reads a dataset once into records; subclasses implement :meth:`_read`.

    Attributes:
        default_label_names: The label columns this layout has, in order; None: inferred
            from the records (the label keys in the order first seen).
    """

    default_label_names: tuple[str, ...] | None = None
    _result: FormatResult | None = None

    def _read(self) -> FormatResult:
        """Read the dataset (subclasses)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the data exist (e.g. generate it); called once, on rank 0."""

    def result(self) -> FormatResult:
        """The records and what was left out (:class:`FormatResult`), read on first use."""
        if self._result is None:
            self._result = self._read()
            log.debug("%s: %s", type(self).__name__, self._result.summary())
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


@dataclass(eq=False)
class LayoutSource(RecordSource):
    """A dataset in one official on-disk layout, read by the policy of :mod:`medvl.data.formats`.

    A layout is a ``@dataclass(eq=False, kw_only=True)`` subclass: its fields are the
    layout's options, documented in its ``Args`` (which the CLI shows) with what ``root``
    holds, and :meth:`_read` reads it. Nothing is read before :meth:`result` is first called.

    Args:
        root: The dataset's folder.
        on_error: ``raise``: a malformed row raises :class:`~medvl.data.dataset.ManifestError`
            naming the file, line and reason; ``skip``: it is left out and counted.
        check_files: Leave out (and count as ``"missing image"``) the records whose
            image file is missing; False skips the file-system checks.
    """

    root: StrPath
    _: KW_ONLY
    on_error: OnError = "raise"
    check_files: bool = True

    @property
    def options(self) -> dict[str, Any]:
        """The options by name: every field but ``root``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.kw_only}

    def _collector(self, image_root: StrPath) -> Collector:
        """A :class:`Collector` for this source's ``on_error`` and ``check_files``."""
        return Collector(image_root, on_error=self.on_error, check_files=self.check_files)


def inside_root(rel: str) -> str | None:
    """``rel`` as a normalised POSIX path when it stays inside its root, else ``None``.

    The check is lexical (``..`` components, absolute paths, drive letters), so a
    dataset folder that is itself a symbolic link elsewhere is still accepted.
    """
    rel = str(rel).replace("\\", "/")
    if not rel or rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return None
    norm = posixpath.normpath(rel)
    if norm in (".", "") or norm == ".." or norm.startswith("../"):
        return None
    return norm


def find_file(what: str, candidates: Sequence[Path], *, dirs: bool | None = False) -> Path:
    """The first existing candidate (a file; a folder with ``dirs=True``; either with ``None``).

    Raises:
        MissingFileError: None exists; the message names ``what`` and every candidate.
    """
    found = first_existing(candidates, dirs=dirs)
    if found is not None:
        return found
    tried = ", ".join(str(c) for c in candidates)
    raise MissingFileError(f"{tried}: {what} not found")


def first_existing(candidates: Iterable[Path], *, dirs: bool | None = False) -> Path | None:
    """The first candidate that exists (as a file, a folder, or either with ``dirs=None``), or None."""
    for c in candidates:
        if c.exists() if dirs is None else c.is_dir() if dirs else c.is_file():
            return c
    return None


def release_folder(root: Path, name: str) -> Path:
    """``root/name`` when that folder exists (``root`` holds the release folder), else ``root``."""
    return root / name if (root / name).is_dir() else root


def with_gz(path: Path) -> list[Path]:
    """``path`` and ``path.gz`` (PhysioNet ships its CSV tables gzipped)."""
    return [path, path.with_name(path.name + ".gz")]


def open_text(path: Path) -> io.TextIOBase:
    """Open a UTF-8 text file, transparently gunzipping ``*.gz``; BOMs are dropped."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def read_csv(path: Path, required: Iterable[str], *, delimiter: str = ",") -> Iterator[tuple[str, dict[str, str]]]:
    """Yield ``("file:line", row)`` for each row of a CSV with a header.

    Raises:
        ManifestError: The header lacks a required column, or the file is not CSV.
    """
    with open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            header = reader.fieldnames or []
        except (csv.Error, UnicodeDecodeError, OSError) as err:
            raise ManifestError(f"{path}: unreadable table ({err})") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise ManifestError(f"{path}:1: missing column(s) {missing}")
        try:
            for row in reader:
                yield f"{path}:{reader.line_num}", row
        except (csv.Error, UnicodeDecodeError, OSError) as err:
            raise ManifestError(f"{path}:{reader.line_num}: unreadable row ({err})") from None



def read_jsonl(path: Path, col: Collector) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("file:line", object)`` for each JSON object line of a JSON Lines file.

    Blank lines are skipped; a line that is not JSON, or not an object, goes to
    :meth:`Collector.bad` (raises or is counted, as ``on_error`` says).
    """
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                col.bad(where, f"malformed JSON ({err.msg})")
                continue
            if not isinstance(row, dict):
                col.bad(where, f"expected a JSON object, got {type(row).__name__}")
                continue
            yield where, row

def normalize_split(value: Any) -> str | None:
    """A release's split spelling as ``train``/``val``/``test``; None if unknown."""
    return SPLIT_NAMES.get(str(value).strip().lower())


def hash_split(key: str, *, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """A deterministic train/val/test assignment from a record key.

    ``blake2b(f"{seed}:{key}")`` maps the key to a number in [0, 1) that falls into
    the ``fractions`` (train, val, test) intervals: the split of a key never depends
    on which other keys exist, on their order, or on the Python hash seed.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


_LABEL_VALUES = {
    "1": POSITIVE, "1.0": POSITIVE, "1.00": POSITIVE,
    "0": NEGATIVE, "0.0": NEGATIVE, "0.00": NEGATIVE, "-0.0": NEGATIVE,
    "-1": UNCERTAIN, "-1.0": UNCERTAIN, "-1.00": UNCERTAIN,
}


def parse_label(value: Any) -> int | None:
    """A CheXpert-style label cell as 1 / 0 / -1, or None when blank (not mentioned).

    Raises:
        ValueError: Anything else (the message quotes the value).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"bad label value {value!r}")
    if isinstance(value, (int, float)):
        if value != value:  # NaN: a blank cell read by pandas
            return None
        if value in (POSITIVE, NEGATIVE, UNCERTAIN):
            return int(value)
        raise ValueError(f"bad label value {value!r} (expected 1, 0, -1 or blank)")
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    if text in _LABEL_VALUES:
        return _LABEL_VALUES[text]
    raise ValueError(f"bad label value {value!r} (expected 1, 0, -1 or blank)")


def apply_uncertainty(labels: Mapping[str, int], policy: Uncertainty) -> dict[str, int]:
    """CheXpert uncertainty policies (Irvin et al., AAAI 2019).

    ``"ignore"`` (U-Ignore) keeps -1, which medvl's label vectors ignore like an
    unmentioned finding; ``"ones"`` (U-Ones) maps -1 to 1; ``"zeros"`` (U-Zeros) to 0.
    """
    if policy == "ignore":
        return dict(labels)
    if policy not in ("ones", "zeros"):
        raise ValueError(f"uncertainty must be 'ignore', 'ones' or 'zeros', got {policy!r}")
    target = POSITIVE if policy == "ones" else NEGATIVE
    return {k: (target if v == UNCERTAIN else v) for k, v in labels.items()}


def label_columns(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, int]:
    """Read label ``columns`` (column -> label name) of a row; blanks are left out.

    Raises:
        ValueError: A cell holds something else than 1, 0, -1 or blank; the message
            quotes the value and names the column.
    """
    out: dict[str, int] = {}
    for col, name in columns.items():
        try:
            v = parse_label(row.get(col))
        except ValueError as err:
            raise ValueError(f"{err} in column {col!r}") from None
        if v is not None:
            out[name] = v
    return out


def section_text(sections: Mapping[str, str], section: str) -> str:
    """The report text for ``section``: ``findings``, ``impression`` or ``both``."""
    if section == "both":
        return format_report(sections)
    if section in ("findings", "impression"):
        return sections.get(section, "")
    raise ValueError(f"section must be 'findings', 'impression' or 'both', got {section!r}")


def text_fields(sections: Mapping[str, str], section: str) -> dict[str, str]:
    """The manifest text fields of a parsed report (``report`` follows ``section``)."""
    return {
        "report": section_text(sections, section),
        "findings": sections.get("findings", ""),
        "impression": sections.get("impression", ""),
        "indication": sections.get("indication", "") or sections.get("history", ""),
        "comparison": sections.get("comparison", ""),
    }


def qa_pair(question: Any, answer: Any, answer_type: Any = None) -> dict[str, str]:
    """A cleaned ``{question, answer, answer_type}``.

    ``answer_type`` is the release's CLOSED/OPEN (any case); when ``None`` it is
    ``closed`` for a yes/no answer and ``open`` otherwise.

    Raises:
        ValueError: Empty question or answer, or an unknown answer type.
    """
    if not isinstance(question, str) or isinstance(answer, (dict, list, bool)) or answer is None:
        raise ValueError("question must be text and answer text or a number")
    q, a = clean_text(question), clean_text(str(answer))
    if not q or not a:
        raise ValueError("empty question or answer")
    if answer_type is None:
        kind = "closed" if a.lower() in ("yes", "no") else "open"
    else:
        kind = str(answer_type).strip().lower()
        if kind not in ("closed", "open"):
            raise ValueError(f"unknown answer_type {answer_type!r} (expected CLOSED or OPEN)")
    return {"question": q, "answer": a, "answer_type": kind}



def require_keys(entry: Any, keys: Iterable[str]) -> dict[str, Any]:
    """``entry`` itself after checking it is a dict holding every key of ``keys``.

    Raises:
        ValueError: Not a dict (``"expected an object"``), or keys missing.
    """
    if not isinstance(entry, dict):
        raise ValueError("expected an object")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    return entry

class VqaGroups:
    """Collects question-answer pairs into one record per (split, image).

    VQA records are image-level: ``study_id`` = ``<split>/<image id>``, ``image``,
    ``split`` and ``vqa`` (the image's pairs in file order), plus per-image fields.
    An image used in two splits (VQA-RAD reuses train images in its test questions)
    gives one record per split.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, split: str, image: str, image_id: str, qa: dict[str, Any], where: str, **fields: Any) -> None:
        """File a pair under its image; the first pair's ``where`` and ``fields`` stand for the image."""
        new = {"image_id": image_id, "where": where, "vqa": [], "fields": fields}
        self._groups.setdefault((split, image), new)["vqa"].append(qa)

    def flush(self, col: Collector) -> None:
        """Validate each image once (drops count its questions) and add the records."""
        for (split, image), g in self._groups.items():
            rel = col.image(image, g["where"], n=len(g["vqa"]))
            if rel is not None:
                sid = f"{split}/{g['image_id']}"
                col.add({"study_id": sid, "image": rel, "split": split, "vqa": g["vqa"], **g["fields"]}, g["where"])
        self._groups.clear()


def vqa_entries(
    path: Path, entries: Any, col: Collector, parse: Callable[[Any], _T], *, kind: str = "a JSON list"
) -> Iterator[tuple[str, _T]]:
    """``("file: entry i", parse(entry))`` for each entry of a VQA release's list of questions.

    An entry for which ``parse`` raises :class:`ValueError` is malformed
    (:meth:`Collector.bad`: raised or counted, as ``on_error`` says).

    Raises:
        ManifestError: ``entries`` is not a list (``"expected <kind> of questions"``).
    """
    if not isinstance(entries, list):
        raise ManifestError(f"{path}: expected {kind} of questions")
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i}"
        try:
            parsed = parse(entry)
        except ValueError as err:
            col.bad(where, str(err))
            continue
        yield where, parsed


def load_json(path: Path) -> Any:
    """Parse a JSON file.

    Raises:
        ManifestError: Not valid JSON; the message names the file, line and reason.
    """
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason})") from None
