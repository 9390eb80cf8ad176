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

import io
import os
import pickle
from pathlib import Path, PurePosixPath
from typing import Any

from medvl.data.dataset import ManifestError
from medvl.data.formats._base import Collector, FormatResult, OnError, VqaGroups, find_file, qa_pair

__all__ = ["read_pathvqa", "safe_unpickle"]

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


def read_pathvqa(
    root: str | os.PathLike[str],
    *,
    on_error: OnError = "raise",
    check_files: bool = True,
) -> FormatResult:
    """Read PathVQA.

    Args:
        root: ``pvqa/`` (holding ``qas/`` and ``images/``) or the folder holding it.
        on_error: ``raise`` or ``skip`` malformed entries.
        check_files: Drop the questions of missing images.

    Raises:
        MissingFileError: A split's ``*_qa.pkl`` or ``images/`` is absent.
        ManifestError: A pickle that is not plain data, or a malformed entry with
            ``on_error="raise"``.
    """
    root = Path(root)
    data = root / "pvqa" if (root / "pvqa").is_dir() else root
    images = find_file("PathVQA image folder", [data / "images"], dirs=True)
    col = Collector(images, on_error=on_error, check_files=check_files)
    groups = VqaGroups()
    for folder, split in _SPLITS:
        path = find_file(f"PathVQA {split} questions", [data / "qas" / folder / f"{folder}_qa.pkl"])
        entries = safe_unpickle(path)
        if not isinstance(entries, list):
            raise ManifestError(f"{path}: expected a list of questions")
        for i, e in enumerate(entries):
            where = f"{path}: entry {i}"
            try:
                if not isinstance(e, dict) or not all(k in e for k in ("image", "question", "answer")):
                    raise ValueError("expected a dict with 'image', 'question' and 'answer'")
                qa = qa_pair(e["question"], e["answer"])
                name = str(e["image"]).strip()
                if not name:
                    raise ValueError("empty image")
            except ValueError as err:
                col.bad(where, str(err))
                continue
            has_suffix = PurePosixPath(name).suffix.lower() in (".jpg", ".jpeg", ".png")
            image = f"{folder}/{name}" if has_suffix else f"{folder}/{name}.jpg"
            groups.add(split, image, str(PurePosixPath(name).with_suffix("") if has_suffix else name), qa, where)
    groups.flush(col)
    return col.result("questions")
