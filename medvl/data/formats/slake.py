"""SLAKE in its release layout (Slake1.0).

Liu et al., "SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical
Visual Question Answering", ISBI 2021. ``Slake1.0/`` holds ``train.json``,
``validate.json`` and ``test.json``, each a list of ``{img_id, img_name
("xmlab0/source.jpg"), question, answer, q_lang ("en"/"zh"), location, modality,
answer_type ("OPEN"/"CLOSED"), base_type, content_type, triple, qid}``, and the
images under ``imgs/`` (``imgs/xmlab0/source.jpg``). English questions are kept by
default; records are image-level (:class:`~medvl.data.formats.VqaGroups`), with
the image's ``modality`` and ``location``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Literal

from medvl.data.dataset import ManifestError
from medvl.data.formats._base import (Collector, FormatResult, OnError, VqaGroups, find_file, load_json, qa_pair,
                                      require_keys)

__all__ = ["read_slake"]

_FILES = (("train.json", "train"), ("validate.json", "val"), ("test.json", "test"))


def read_slake(
    root: str | os.PathLike[str],
    *,
    lang: Literal["en", "zh", "all"] = "en",
    on_error: OnError = "raise",
    check_files: bool = True,
) -> FormatResult:
    """Read SLAKE.

    Args:
        root: ``Slake1.0/`` or the folder holding it.
        lang: Keep English (``en``), Chinese (``zh``) or ``all`` questions; the
            others are counted as ``"language <q_lang>"``.
        on_error: ``raise`` or ``skip`` malformed entries.
        check_files: Drop the questions of missing images.

    Raises:
        MissingFileError: A split file or ``imgs/`` is absent.
        ManifestError: Malformed JSON or entry, with ``on_error="raise"``.
    """
    if lang not in ("en", "zh", "all"):
        raise ValueError(f"lang must be 'en', 'zh' or 'all', got {lang!r}")
    root = Path(root)
    data = root / "Slake1.0" if (root / "Slake1.0").is_dir() else root
    images = find_file("SLAKE image folder", [data / "imgs"], dirs=True)
    col = Collector(images, on_error=on_error, check_files=check_files)
    groups = VqaGroups()
    for name, split in _FILES:
        path = find_file(f"SLAKE {split} questions", [data / name])
        entries = load_json(path)
        if not isinstance(entries, list):
            raise ManifestError(f"{path}: expected a JSON list of questions")
        for i, e in enumerate(entries):
            where = f"{path}: entry {i}"
            try:
                require_keys(e, ("img_name", "question", "answer", "q_lang"))
                qa = qa_pair(e["question"], e["answer"], e.get("answer_type"))
                image = str(e["img_name"]).strip()
                if not image:
                    raise ValueError("empty img_name")
            except ValueError as err:
                col.bad(where, str(err))
                continue
            q_lang = str(e["q_lang"]).strip().lower()
            if lang != "all" and q_lang != lang:
                col.drop(f"language {q_lang}")
                continue
            qa.update(qid=str(e.get("qid", "")), lang=q_lang, content_type=str(e.get("content_type", "")))
            folder = PurePosixPath(image).parent  # "xmlab0" of "xmlab0/source.jpg"
            image_id = str(folder) if folder.name else PurePosixPath(image).stem
            groups.add(split, image, image_id, qa, where,
                       modality=str(e.get("modality", "")), location=str(e.get("location", "")))
    groups.flush(col)
    return col.result("questions")
