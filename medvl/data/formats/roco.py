"""ROCO (Radiology Objects in COntext) in the layout of the roco-dataset repository.

Pelka et al., "Radiology Objects in COntext (ROCO): A Multimodal Image Dataset",
MICCAI LABELS workshop 2018. The repository holds
``data/{train,validation,test}/{radiology,non-radiology}/`` folders with
``captions.txt`` (``ROCO_00020<TAB> Axial computed tomography ...``), ``dlinks.txt``
(``ROCO_00020<TAB>wget -r ftp://.../PMC3970251.tar.gz -P /path/to/Dir<TAB>name.jpg``),
``keywords.txt``, ``semtypes.txt``, ``cuis.txt`` and ``licences.txt``
(``ROCO_ID,PMC_ID,CC`` where PMC_ID is the image file name). ``scripts/fetch.py``
downloads each image to ``images/<PMCID>_<name>.jpg`` next to those files. Later
commits renamed some files (``captions_fp_test_revised.txt``, ...); a folder with a
single ``captions*.txt`` / ``dlinks*.txt`` is read as well. When neither dlinks nor
licences name the image, ``images/<ROCO id>.jpg`` (the naming of some mirrors) is
tried.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medvl.data.formats._base import FormatResult, LayoutSource, MissingFileError, StrPath, open_text, release_folder
from medvl.data.reports import clean_text

__all__ = ["ROCO", "read_roco", "ROCO_SPLITS"]

ROCO_SPLITS: dict[str, str] = {"train": "train", "validation": "val", "test": "test"}
"""Folder name -> medvl split."""


def _one_file(folder: Path, stem: str, *, required: bool) -> Path | None:
    """``folder/<stem>.txt``, else the only ``<stem>*.txt`` there."""
    exact = folder / f"{stem}.txt"
    if exact.is_file():
        return exact
    matches = sorted(folder.glob(f"{stem}*.txt"))
    if len(matches) == 1:
        return matches[0]
    if required:
        found = f" (several candidates: {[m.name for m in matches]})" if matches else ""
        raise MissingFileError(f"{exact}: ROCO {stem} file not found{found}")
    return None


def _tab_lines(path: Path) -> list[tuple[str, list[str]]]:
    """(``file:line``, fields) of a tab-separated ROCO file, blank lines skipped."""
    out = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                out.append((f"{path}:{lineno}", line.split("\t")))
    return out


def _image_names(folder: Path) -> dict[str, str]:
    """ROCO id -> image file name, from dlinks (``<PMCID>_<name>``) or licences."""
    names: dict[str, str] = {}
    licences = _one_file(folder, "licences", required=False)
    if licences is not None:
        with open_text(licences) as f:
            for row in csv.DictReader(f):
                if row.get("ROCO_ID") and row.get("PMC_ID"):
                    names[row["ROCO_ID"].strip()] = row["PMC_ID"].strip()
    dlinks = _one_file(folder, "dlinks", required=False)
    if dlinks is not None:
        for _, fields in _tab_lines(dlinks):
            if len(fields) >= 3:
                url = fields[1].split()
                archive = next((u for u in url if u.endswith(".tar.gz")), "")
                pmcid = archive.rsplit("/", 1)[-1][: -len(".tar.gz")]
                if pmcid:
                    names[fields[0].strip()] = f"{pmcid}_{fields[-1].strip()}"
    return names


@dataclass(eq=False, kw_only=True)
class ROCO(LayoutSource):
    """ROCO image-caption pairs; ``report`` is the caption, no labels.

    Args:
        root: The repository folder (with ``data/``) or its ``data/`` folder; the
            image root of the records.
        subsets: ``radiology`` and/or ``non-radiology``.
        keywords: Copy the caption keywords (``keywords.txt``) into ``keywords``.

    Raises:
        MissingFileError: On reading: a split/subset folder or its captions file is absent.
        ManifestError: On reading: a caption line without a tab, with ``on_error="raise"``.
    """

    default_label_names = ()

    subsets: tuple[Literal["radiology", "non-radiology"], ...] = ("radiology",)
    keywords: bool = True

    def _read(self) -> FormatResult:
        root, subsets, keywords, check_files = Path(self.root), self.subsets, self.keywords, self.check_files
        data = release_folder(root, "data")
        bad = [s for s in subsets if s not in ("radiology", "non-radiology")]
        if bad or not subsets:
            raise ValueError(f"subsets must be 'radiology' and/or 'non-radiology', got {list(subsets)}")
        col = self._collector(data)
        for folder_name, split in ROCO_SPLITS.items():
            for subset in subsets:
                folder = data / folder_name / subset
                if not folder.is_dir():
                    raise MissingFileError(f"{folder}: ROCO {folder_name}/{subset} folder not found")
                captions = _one_file(folder, "captions", required=True)
                names = _image_names(folder)
                kw: dict[str, list[str]] = {}
                kw_file = _one_file(folder, "keywords", required=False) if keywords else None
                if kw_file is not None:
                    kw = {f[0].strip(): [k for k in f[1:] if k.strip()] for _, f in _tab_lines(kw_file)}
                for where, fields in _tab_lines(captions):
                    roco_id = fields[0].strip()
                    if len(fields) < 2 or not roco_id.startswith("ROCO_"):
                        col.bad(where, "expected 'ROCO_<id><TAB><caption>'")
                        continue
                    caption = clean_text("\t".join(fields[1:]))
                    if not caption:
                        col.drop("empty caption")
                        continue
                    candidates = [n for n in (names.get(roco_id), f"{roco_id}.jpg") if n]
                    rels = [f"{folder_name}/{subset}/images/{n}" for n in candidates]
                    rel = next((r for r in rels if col.exists(r)), rels[0]) if check_files else rels[0]
                    image = col.image(rel, where)
                    if image is None:
                        continue
                    record = {"study_id": roco_id, "image": image, "split": split, "report": caption,
                              "caption": caption, "subset": subset}
                    if keywords:
                        record["keywords"] = kw.get(roco_id, [])
                    col.add(record, where)
        return col.result()


def read_roco(root: StrPath, **options: Any) -> FormatResult:
    """Read ROCO: ``ROCO(root, **options).result()``, with its options and errors."""
    return ROCO(root, **options).result()
