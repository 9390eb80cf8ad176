"""IU X-ray (Indiana University chest X-ray collection, Open-i) in its NLM release layout.

Demner-Fushman et al., "Preparing a collection of radiology examinations for
distribution and retrieval", JAMIA 2016. The reports come as ``NLMCXR_reports.tgz``
(read directly with :mod:`tarfile`, nothing is extracted) or its extracted
``ecgen-radiology/`` folder: one XML file per report with
``<AbstractText Label="COMPARISON|INDICATION|FINDINGS|IMPRESSION">``, the MeSH
terms ``<MeSH><major>...</major><automatic>...</automatic></MeSH>`` and one
``<parentImage id="CXR1_1_IM-0001-3001">`` per image. The images are
``NLMCXR_png/CXR1_1_IM-0001-3001.png``.

IU X-ray has no official split. Reports are assigned by
:func:`~medvl.data.formats.hash_split` of their id (``CXR1``, ...) with a seed,
70/10/20 by default (the proportions of R2Gen): deterministic, independent of file
order, and a report's images never straddle two splits.
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medvl.data.formats._base import (DEFAULT_FRACTIONS, FormatResult, LayoutSource, StrPath, find_file, hash_split,
                                      text_fields)
from medvl.data.reports import parse_iu_abstract

__all__ = ["IUXray", "read_iu_xray"]


def _xml_sources(reports: Path) -> Iterator[tuple[str, bytes]]:
    """(name for messages, XML bytes) of every report, in a stable order."""
    if reports.is_dir():
        for path in sorted(reports.glob("*.xml"), key=lambda p: (len(p.stem), p.stem)):
            yield str(path), path.read_bytes()
        return
    with tarfile.open(reports, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
        members.sort(key=lambda m: (len(Path(m.name).stem), m.name))
        for m in members:
            f = tar.extractfile(m)
            if f is not None:
                yield f"{reports}:{m.name}", f.read()


def _mesh_terms(doc: ET.Element, kind: str) -> list[str]:
    """The report's ``<MeSH><major>`` (or ``<automatic>``) terms."""
    mesh = doc.find("MeSH")
    return [t.text.strip() for t in mesh.findall(kind) if t.text] if mesh is not None else []


@dataclass(eq=False, kw_only=True)
class IUXray(LayoutSource):
    """IU X-ray (Open-i) reports and PNG images; no labels.

    Args:
        root: Folder holding ``NLMCXR_reports.tgz`` (or ``ecgen-radiology/``) and
            ``NLMCXR_png/``.
        reports: The report archive or extracted folder, if not under ``root``.
        images_dir: The PNG folder, if not ``root/NLMCXR_png``.
        images: ``first``: one record per report with its first image as ``image``
            (all of them in ``images``); ``all``: one record per image
            (``study_id`` = ``CXR1/CXR1_1_IM-0001-3001``). A report left without any
            image is dropped.
        section: Report section used as ``report`` (``findings``, ``impression``,
            ``both``); reports without it are dropped.
        seed: Seed of the report-id split.
        fractions: Train/val/test fractions of that split.

    Raises:
        MissingFileError: On reading: neither the archive nor the folder of reports exists.
        ManifestError: On reading: malformed XML, with ``on_error="raise"``.
    """

    default_label_names = ()

    reports: StrPath | None = None
    images_dir: StrPath | None = None
    images: Literal["first", "all"] = "first"
    section: Literal["findings", "impression", "both"] = "findings"
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS

    def _read(self) -> FormatResult:
        root, reports, images, section = Path(self.root), self.reports, self.images, self.section
        seed, fractions, check_files = self.seed, self.fractions, self.check_files
        if images not in ("first", "all"):
            raise ValueError(f"images must be 'first' or 'all', got {images!r}")
        text_fields({}, section)
        hash_split("", seed=seed, fractions=fractions)  # validates the fractions up front
        candidates = [Path(reports)] if reports is not None else [root / "NLMCXR_reports.tgz", root / "ecgen-radiology"]
        src = find_file("IU X-ray reports (NLMCXR_reports.tgz or ecgen-radiology/)", candidates, dirs=None)
        img_root = Path(self.images_dir) if self.images_dir is not None else root / "NLMCXR_png"
        find_file("IU X-ray PNG folder", [img_root], dirs=True)
        col = self._collector(img_root)

        for where, raw in _xml_sources(src):
            try:
                doc = ET.fromstring(raw)
            except ET.ParseError as err:
                col.bad(where, f"malformed XML ({err})", key="malformed XML")
                continue
            uid = doc.find("uId")
            report_id = (uid.get("id") if uid is not None else None) or Path(where.split(":")[-1]).stem
            image_ids = [p.get("id") or "" for p in doc.findall("parentImage")]
            if not image_ids:
                col.drop("no image")
                continue
            fields = text_fields(parse_iu_abstract(doc), section)
            n = len(image_ids) if images == "all" else 1
            if not fields["report"]:
                col.drop("no findings or impression" if section == "both" else f"no {section} section", n)
                continue
            kept, n_outside = [], 0
            for image_id in image_ids:
                rel = col.image(f"{image_id}.png", where, n=1 if images == "all" else 0, check=False)
                if rel is None:
                    n_outside += 1
                elif not check_files or col.exists(rel):
                    kept.append(rel)
                elif images == "all":
                    col.drop("missing image")
            if not kept:
                if images == "first":
                    col.drop("path outside root" if n_outside == len(image_ids) else "missing image")
                continue
            base = {
                "split": hash_split(report_id, seed=seed, fractions=fractions),
                **fields,
                "mesh": _mesh_terms(doc, "major"),
                "mesh_automatic": _mesh_terms(doc, "automatic"),
            }
            if images == "first":
                col.add({"study_id": report_id, "image": kept[0], "images": kept, **base}, where)
            else:
                for rel in kept:
                    col.add({"study_id": f"{report_id}/{Path(rel).stem}", "image": rel, **base}, where)
        return col.result()


def read_iu_xray(root: StrPath, **options: Any) -> FormatResult:
    """Read IU X-ray: ``IUXray(root, **options).result()``, with its options and errors."""
    return IUXray(root, **options).result()
