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

import os
from pathlib import Path, PurePosixPath

from medvl.data.dataset import ManifestError
from medvl.data.formats._base import (Collector, FormatResult, OnError, VqaGroups, find_file, load_json, qa_pair,
                                      require_keys)

__all__ = ["read_vqa_rad", "VQA_RAD_JSON", "VQA_RAD_IMAGES"]

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"


def read_vqa_rad(
    root: str | os.PathLike[str],
    *,
    on_error: OnError = "raise",
    check_files: bool = True,
) -> FormatResult:
    """Read VQA-RAD.

    Args:
        root: Folder holding ``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``.
        on_error: ``raise`` or ``skip`` malformed entries.
        check_files: Drop the questions of missing images.

    Returns:
        Image-level records with ``vqa`` lists (``qid`` and ``question_type`` kept per
        pair) and ``organ``; ``dropped`` counts questions.

    Raises:
        MissingFileError: The JSON file or the image folder is absent.
        ManifestError: Malformed JSON or entry, with ``on_error="raise"``.
    """
    root = Path(root)
    path = find_file("VQA-RAD questions", [root / VQA_RAD_JSON])
    images = find_file("VQA-RAD image folder", [root / VQA_RAD_IMAGES], dirs=True)
    entries = load_json(path)
    col = Collector(images, on_error=on_error, check_files=check_files)
    if not isinstance(entries, list):
        raise ManifestError(f"{path}: expected a JSON list of questions")
    groups = VqaGroups()
    for i, e in enumerate(entries):
        where = f"{path}: entry {i}"
        try:
            require_keys(e, ("image_name", "question", "answer", "answer_type", "phrase_type"))
            qa = qa_pair(e["question"], e["answer"], e["answer_type"])
            phrase = str(e["phrase_type"]).strip().lower()
            if phrase not in ("freeform", "para", "test_freeform", "test_para"):
                raise ValueError(f"unknown phrase_type {e['phrase_type']!r}")
            image = str(e["image_name"]).strip()
            if not image:
                raise ValueError("empty image_name")
        except ValueError as err:
            col.bad(where, str(err))
            continue
        qa.update(qid=str(e.get("qid", "")), question_type=str(e.get("question_type", "")))
        split = "test" if phrase.startswith("test") else "train"
        groups.add(split, image, str(PurePosixPath(image).with_suffix("")), qa, where,
                   organ=str(e.get("image_organ", "")).strip())
    groups.flush(col)
    return col.result("questions")
