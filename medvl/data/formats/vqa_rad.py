"""VQA-RAD in its OSF release layout.

Lau et al., "A dataset of clinically generated visual questions and answers about
radiology images", Sci. Data 2018. ``VQA_RAD Dataset Public.json`` is a list of
``{qid, image_name, image_organ, answer, answer_type ("CLOSED"/"OPEN"),
question_type, question, phrase_type, ...}``; the images are in
``VQA_RAD Image Folder/``. ``phrase_type`` ``test_freeform`` / ``test_para`` marks the
official test questions, ``freeform`` / ``para`` the training ones (there is no
validation split). The same image can carry questions of both splits; it then gives
one record per split (see :class:`~medvl.data.formats.VqaGroups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medvl.data.formats._base import (FormatResult, LayoutSource, StrPath, VqaGroups, find_file, load_json, qa_pair,
                                      require_keys, vqa_entries)

__all__ = ["VQARAD", "read_vqa_rad", "VQA_RAD_JSON", "VQA_RAD_IMAGES"]

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
_PHRASE_TYPES = ("freeform", "para", "test_freeform", "test_para")


def _question(entry: Any) -> tuple[str, str, dict[str, str], str]:
    """``(split, image name, pair, organ)`` of one entry; ValueError when it is malformed."""
    require_keys(entry, ("image_name", "question", "answer", "answer_type", "phrase_type"))
    qa = qa_pair(entry["question"], entry["answer"], entry["answer_type"])
    phrase = str(entry["phrase_type"]).strip().lower()
    if phrase not in _PHRASE_TYPES:
        raise ValueError(f"unknown phrase_type {entry['phrase_type']!r}")
    image = str(entry["image_name"]).strip()
    if not image:
        raise ValueError("empty image_name")
    qa.update(qid=str(entry.get("qid", "")), question_type=str(entry.get("question_type", "")))
    split = "test" if phrase.startswith("test") else "train"
    return split, image, qa, str(entry.get("image_organ", "")).strip()


@dataclass(eq=False, kw_only=True)
class VQARAD(LayoutSource):
    """VQA-RAD questions: one record per (split, image), no labels; ``dropped`` counts questions.

    Records carry the image's ``organ`` and ``vqa`` pairs with their ``qid`` and ``question_type``.

    Args:
        root: Folder holding ``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``.

    Raises:
        MissingFileError: On reading: the JSON file or the image folder is absent.
        ManifestError: On reading: malformed JSON or entry, with ``on_error="raise"``.
    """

    default_label_names = ()

    def _read(self) -> FormatResult:
        root = Path(self.root)
        path = find_file("VQA-RAD questions", [root / VQA_RAD_JSON])
        images = find_file("VQA-RAD image folder", [root / VQA_RAD_IMAGES], dirs=True)
        entries = load_json(path)
        col, groups = self._collector(images), VqaGroups()
        for where, (split, image, qa, organ) in vqa_entries(path, entries, col, _question):
            groups.add(split, image, str(PurePosixPath(image).with_suffix("")), qa, where, organ=organ)
        groups.flush(col)
        return col.result("questions")


def read_vqa_rad(root: StrPath, **options: Any) -> FormatResult:
    """Read VQA-RAD: ``VQARAD(root, **options).result()``, with its options and errors."""
    return VQARAD(root, **options).result()
