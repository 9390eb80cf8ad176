"""VQA-RAD in its OSF release layout and in the train/test split of MEVF/MMQ.

Lau et al., "A dataset of clinically generated visual questions and answers about
radiology images", Sci. Data 2018. Two layouts are read:

* ``public``, the OSF release: ``VQA_RAD Dataset Public.json`` is a list of
  ``{qid, image_name, image_organ, answer, answer_type ("CLOSED"/"OPEN"),
  question_type, question, phrase_type, ...}``; the images are in
  ``VQA_RAD Image Folder/``. ``phrase_type`` ``test_freeform`` / ``test_para`` marks
  the official test questions, ``freeform`` / ``para`` the training ones.
* ``split``, the split most papers report on, distributed with MEVF (Nguyen et al.,
  "Overcoming Data Limitation in Medical Visual Question Answering", MICCAI 2019) and
  MMQ (Do et al., MICCAI 2021): ``trainset.json`` and ``testset.json`` hold entries
  with the same keys, and the images are in ``images/`` (``VQA_RAD Image Folder/`` is
  accepted too). The split comes from the file name; ``phrase_type`` is not read.

There is no validation split in either. The ``answer_type`` annotation carries stray
spaces and mixed case in the releases (``"CLOSED "``, ``"Closed"``): it is compared
stripped and case-folded. The same image can carry questions of both splits; it then
gives one record per split (see :class:`~medvl.data.formats.VqaGroups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from medvl.data.formats._base import (FormatResult, LayoutSource, MissingFileError, StrPath, VqaGroups,
                                      find_file, load_json, qa_pair, require_keys, vqa_entries)

__all__ = ["VQARAD", "read_vqa_rad", "VQA_RAD_JSON", "VQA_RAD_IMAGES", "VQA_RAD_SPLIT_FILES"]

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
VQA_RAD_SPLIT_FILES = (("trainset.json", "train"), ("testset.json", "test"))
"""The MEVF/MMQ split files and the split each holds."""
_SPLIT_IMAGES = ("images", VQA_RAD_IMAGES)
_PHRASE_TYPES = ("freeform", "para", "test_freeform", "test_para")
_KEYS = ("image_name", "question", "answer", "answer_type")

Release = Literal["auto", "public", "split"]


def _pair(entry: Any) -> tuple[str, dict[str, str], str]:
    """``(image name, pair, organ)`` of one entry of either layout; ValueError when it is malformed."""
    require_keys(entry, _KEYS)
    qa = qa_pair(entry["question"], entry["answer"], entry["answer_type"])
    image = str(entry["image_name"]).strip()
    if not image:
        raise ValueError("empty image_name")
    qa.update(qid=str(entry.get("qid", "")), question_type=str(entry.get("question_type", "")))
    return image, qa, str(entry.get("image_organ", "")).strip()


def _public_question(entry: Any) -> tuple[str, str, dict[str, str], str]:
    """``(split, image name, pair, organ)`` of an OSF entry: the split is its ``phrase_type``."""
    require_keys(entry, (*_KEYS, "phrase_type"))
    phrase = str(entry["phrase_type"]).strip().lower()
    if phrase not in _PHRASE_TYPES:
        raise ValueError(f"unknown phrase_type {entry['phrase_type']!r}")
    image, qa, organ = _pair(entry)
    return "test" if phrase.startswith("test") else "train", image, qa, organ


@dataclass(eq=False, kw_only=True)
class VQARAD(LayoutSource):
    """VQA-RAD questions: one record per (split, image), no labels; ``dropped`` counts questions.

    Records carry the image's ``organ`` and ``vqa`` pairs with their ``qid`` and ``question_type``.

    Args:
        root: Folder holding ``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``
            (the OSF release), or ``trainset.json``, ``testset.json`` and ``images/``
            (the MEVF/MMQ split).
        release: ``public``: the OSF JSON, split by ``phrase_type``; ``split``: the
            MEVF/MMQ ``trainset.json`` / ``testset.json``, split by file; ``auto``: the
            public JSON when present, else the split files.

    Raises:
        MissingFileError: On reading: the layout's JSON file(s) or image folder is absent
            (with ``auto``, a folder with neither layout names both).
        ManifestError: On reading: malformed JSON or entry, with ``on_error="raise"``.
    """

    default_label_names = ()

    release: Release = "auto"

    def _read(self) -> FormatResult:
        if self.release not in ("auto", "public", "split"):
            raise ValueError(f"release must be 'auto', 'public' or 'split', got {self.release!r}")
        root = Path(self.root)
        release = self.release
        if release == "auto":
            if (root / VQA_RAD_JSON).is_file():
                release = "public"
            elif all((root / name).is_file() for name, _ in VQA_RAD_SPLIT_FILES):
                release = "split"
            else:
                split_files = " and ".join(str(root / name) for name, _ in VQA_RAD_SPLIT_FILES)
                raise MissingFileError(f"{root}: VQA-RAD questions not found: neither {root / VQA_RAD_JSON} "
                                       f"(the OSF release) nor {split_files} (the MEVF/MMQ split)")
        groups = VqaGroups()
        if release == "public":
            path = find_file("VQA-RAD questions", [root / VQA_RAD_JSON])
            col = self._collector(find_file("VQA-RAD image folder", [root / VQA_RAD_IMAGES], dirs=True))
            for where, (split, image, qa, organ) in vqa_entries(path, load_json(path), col, _public_question):
                _add(groups, split, image, qa, where, organ)
        else:
            paths = [(find_file(f"VQA-RAD {split} questions", [root / name]), split)
                     for name, split in VQA_RAD_SPLIT_FILES]
            col = self._collector(find_file("VQA-RAD image folder", [root / d for d in _SPLIT_IMAGES], dirs=True))
            for path, split in paths:
                for where, (image, qa, organ) in vqa_entries(path, load_json(path), col, _pair):
                    _add(groups, split, image, qa, where, organ)
        groups.flush(col)
        return col.result("questions")


def _add(groups: VqaGroups, split: str, image: str, qa: dict[str, str], where: str, organ: str) -> None:
    groups.add(split, image, str(PurePosixPath(image).with_suffix("")), qa, where, organ=organ)


def read_vqa_rad(root: StrPath, **options: Any) -> FormatResult:
    """Read VQA-RAD: ``VQARAD(root, **options).result()``, with its options and errors."""
    return VQARAD(root, **options).result()
