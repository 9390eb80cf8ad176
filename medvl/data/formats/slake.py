"""SLAKE in its release layout (Slake1.0).

Liu et al., "SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical
Visual Question Answering", ISBI 2021. ``Slake1.0/`` holds ``train.json``,
``validate.json`` (``validation.json`` in some copies; either is read) and
``test.json``, each a list of ``{img_id, img_name
("xmlab0/source.jpg"), question, answer, q_lang ("en"/"zh"), location, modality,
answer_type ("OPEN"/"CLOSED"), base_type, content_type, triple, qid}``, and the
images under ``imgs/`` (``imgs/xmlab0/source.jpg``). English questions are kept by
default; records are image-level (:class:`~medvl.data.formats.VqaGroups`), with
the image's ``modality`` and ``location``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from medvl.data.formats._base import (FormatResult, LayoutSource, StrPath, VqaGroups, find_file, load_json, qa_pair,
                                      release_folder, require_keys, vqa_entries)

__all__ = ["SLAKE", "read_slake"]

_FILES = ((("train.json",), "train"), (("validate.json", "validation.json"), "val"), (("test.json",), "test"))
"""Per split, the file names it is found under (the first that exists is read)."""


def _question(entry: Any) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """``(image, image id, pair, image fields)`` of one entry; ValueError when it is malformed."""
    require_keys(entry, ("img_name", "question", "answer", "q_lang"))
    qa = qa_pair(entry["question"], entry["answer"], entry.get("answer_type"))
    image = str(entry["img_name"]).strip()
    if not image:
        raise ValueError("empty img_name")
    qa.update(qid=str(entry.get("qid", "")), lang=str(entry["q_lang"]).strip().lower(),
              content_type=str(entry.get("content_type", "")))
    folder = PurePosixPath(image).parent  # "xmlab0" of "xmlab0/source.jpg"
    image_id = str(folder) if folder.name else PurePosixPath(image).stem
    return image, image_id, qa, {key: str(entry.get(key, "")) for key in ("modality", "location")}


@dataclass(eq=False, kw_only=True)
class SLAKE(LayoutSource):
    """SLAKE questions: one record per (split, image), no labels; ``dropped`` counts questions.

    Records carry the image's ``modality`` and ``location`` and ``vqa`` pairs with their
    ``qid``, ``lang`` and ``content_type``.

    Args:
        root: ``Slake1.0/`` or the folder holding it.
        lang: Keep English (``en``), Chinese (``zh``) or ``all`` questions; the
            others are counted as ``"language <q_lang>"``.

    Raises:
        MissingFileError: On reading: a split file or ``imgs/`` is absent (for the
            validation split, neither ``validate.json`` nor ``validation.json``).
        ManifestError: On reading: malformed JSON or entry, with ``on_error="raise"``.
    """

    default_label_names = ()

    lang: Literal["en", "zh", "all"] = "en"

    def _read(self) -> FormatResult:
        lang = self.lang
        if lang not in ("en", "zh", "all"):
            raise ValueError(f"lang must be 'en', 'zh' or 'all', got {lang!r}")
        data = release_folder(Path(self.root), "Slake1.0")
        col, groups = self._collector(find_file("SLAKE image folder", [data / "imgs"], dirs=True)), VqaGroups()
        for names, split in _FILES:
            path = find_file(f"SLAKE {split} questions", [data / name for name in names])
            for where, (image, image_id, qa, fields) in vqa_entries(path, load_json(path), col, _question):
                if lang != "all" and qa["lang"] != lang:
                    col.drop(f"language {qa['lang']}")
                else:
                    groups.add(split, image, image_id, qa, where, **fields)
        groups.flush(col)
        return col.result("questions")


def read_slake(root: StrPath, **options: Any) -> FormatResult:
    """Read SLAKE: ``SLAKE(root, **options).result()``, with its options and errors."""
    return SLAKE(root, **options).result()
