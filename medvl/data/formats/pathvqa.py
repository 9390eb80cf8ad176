"""PathVQA in its ``pvqa`` release layout.

He et al., "PathVQA: 30000+ Questions for Medical Visual Question Answering",
arXiv:2003.10286. ``pvqa/qas/{train,val,test}/{split}_qa.pkl`` are pickled lists of
``{"image": "train_0422", "question": ..., "answer": ...}`` and the images are
``pvqa/images/{split}/<image>.jpg``. A question is closed when its answer is yes or
no, open otherwise. Records are image-level (:class:`~medvl.data.formats.VqaGroups`).

The pickles are read with an unpickler that refuses every global (class or
function reference), so a tampered file cannot run code: the official files hold
only lists, dicts and strings.
"""

from __future__ import annotations

import functools
import io
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medvl.data.dataset import ManifestError
from medvl.data.formats._base import (FormatResult, LayoutSource, StrPath, VqaGroups, find_file, qa_pair,
                                      release_folder, vqa_entries)

__all__ = ["PathVQA", "read_pathvqa", "safe_unpickle"]

_SPLITS = (("train", "train"), ("val", "val"), ("test", "test"))


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_unpickle(path: Path) -> Any:
    """Load a pickle of plain data (lists, dicts, strings, numbers) only.

    Raises:
        ManifestError: The file references a class or function, or is not a pickle.
    """
    try:
        return _DataOnly(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
        raise ManifestError(f"{path}: not a plain-data pickle ({err})") from None


def _question(folder: str, entry: Any) -> tuple[str, str, dict[str, str]]:
    """``(image path, image id, pair)`` of one entry of ``folder``'s pickle; ValueError when malformed."""
    if not isinstance(entry, dict) or not all(k in entry for k in ("image", "question", "answer")):
        raise ValueError("expected a dict with 'image', 'question' and 'answer'")
    qa = qa_pair(entry["question"], entry["answer"])
    name = str(entry["image"]).strip()
    if not name:
        raise ValueError("empty image")
    if PurePosixPath(name).suffix.lower() in (".jpg", ".jpeg", ".png"):
        return f"{folder}/{name}", str(PurePosixPath(name).with_suffix("")), qa
    return f"{folder}/{name}.jpg", name, qa


@dataclass(eq=False, kw_only=True)
class PathVQA(LayoutSource):
    """PathVQA questions: one record per (split, image), no labels; ``dropped`` counts questions.

    Args:
        root: ``pvqa/`` (holding ``qas/`` and ``images/``) or the folder holding it.

    Raises:
        MissingFileError: On reading: a split's ``*_qa.pkl`` or ``images/`` is absent.
        ManifestError: On reading: a pickle that is not plain data, or a malformed
            entry with ``on_error="raise"``.
    """

    default_label_names = ()

    def _read(self) -> FormatResult:
        data = release_folder(Path(self.root), "pvqa")
        col, groups = self._collector(find_file("PathVQA image folder", [data / "images"], dirs=True)), VqaGroups()
        for folder, split in _SPLITS:
            path = find_file(f"PathVQA {split} questions", [data / "qas" / folder / f"{folder}_qa.pkl"])
            parse = functools.partial(_question, folder)
            for where, (image, image_id, qa) in vqa_entries(path, safe_unpickle(path), col, parse, kind="a list"):
                groups.add(split, image, image_id, qa, where)
        groups.flush(col)
        return col.result("questions")


def read_pathvqa(root: StrPath, **options: Any) -> FormatResult:
    """Read PathVQA: ``PathVQA(root, **options).result()``, with its options and errors."""
    return PathVQA(root, **options).result()
