"""Deterministic synthetic chest-radiograph dataset: phantom DICOM files + reports.

``generate_dataset(out, n=2000, seed=0)`` writes ``n`` studies, each a phantom frontal
chest radiograph (see :mod:`medvl.data._phantom`) stored as a DICOM file with the
header variety a real reader must handle (CR and DX SOP classes, 12/14/16 stored bits,
rescale slope/intercept, window centre/width, MONOCHROME1 and MONOCHROME2), a free
text report (see :mod:`medvl.data._report_templates`), CheXpert-style labels over
:data:`medvl.data.labels.FINDINGS`, laterality, VQA pairs and a train/val/test split.

Layout written under ``out/``::

    images/<study_id>.dcm   one DICOM file per study
    manifest.jsonl          one JSON object per study (no identifying header values)
    dataset.json            generator version, seed, n, split counts, prevalence, VQA kinds

Every study is drawn from ``np.random.SeedSequence([seed, index])`` alone, so the
output is identical for any worker count and a smaller ``n`` gives a prefix of a
larger one. The DICOM headers carry fake but realistic identifying values (patient
name, ID, birth date, accession number, dates, UIDs) so de-identification has
something to remove; none of them reaches the manifest.

VQA pairs (see :func:`medvl.data._report_templates.make_vqa`): 2-6 per study, each
with ``kind`` (= ``question_type``) and answerable from what the phantom draws;
``dataset.json`` counts them per kind under ``"vqa"``. On 2,000 studies (seed 0)
56% of 6,550 are closed:

==================  ======  =====  ===========================================
kind                type    share  answer set
==================  ======  =====  ===========================================
presence            closed  46.3%  yes / no (29% yes)
laterality_yes_no   closed   5.6%  yes / no (52% yes)
side_choice         closed   4.5%  left / right ("left or right?", not yes/no)
side                open    11.5%  left / right / bilateral
abnormality         open    10.2%  no finding (37%), one finding's name
device_count        open     8.6%  0, 2-5 (56% "0")
location            open     4.7%  left/right upper/lower lobe
effusion_size       open     3.8%  small / moderate / large
device              open     3.0%  endotracheal tube, central line, pacemaker, ECG leads
nodule_count        open     1.8%  1-3
==================  ======  =====  ===========================================

The most common answer of each kind scores 0.68 (closed) and 0.45 (open).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from medvl.data._phantom import render_phantom
from medvl.data._report_templates import VQA_KINDS, make_vqa, write_report
from medvl.data.labels import FINDINGS, NEGATIVE, POSITIVE, UNCERTAIN

__all__ = ["GENERATOR_VERSION", "generate_dataset", "sample_study", "render_study", "study_id"]

GENERATOR_VERSION = 3
"""Bumped whenever the same seed would produce a different manifest or different files.

1 (recorded as ``"1.0.0"``): the first release. 2: the VQA benchmark pairs (kinds,
closed/open balance, ``kind`` and ``question_type`` keys); labels, reports and DICOM
files are unchanged. 3: "Is this an AP or PA view?" (which the encoder's features barely
carry: a linear probe reads it no better than the majority answer) replaced by a
left-or-right choice. :class:`medvl.data.sources.Synthetic` regenerates a folder whose
``dataset.json`` records another version."""

_UID_ROOT = ("medvl-synth", "1.0.0")
"""Entropy of the DICOM UIDs; kept while the DICOM files stay byte-identical (version 2)."""

SOP_CLASSES = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}

_LATERALISED = ("pleural_effusion", "pneumothorax", "consolidation", "nodule")
_LAST = ["KOWALSKI", "NAKAMURA", "OKONKWO", "FERREIRA", "LINDQVIST", "HADDAD", "MORETTI",
         "VAN DER BERG", "SANTIAGO", "PETROVA", "ABERNATHY", "QUINTERO", "MBEKI", "FITZGERALD",
         "YAMADA", "OYELARAN", "DUBOIS", "KRISHNAN", "HALVORSEN", "ZIELINSKI"]
_FIRST = ["ALINTA", "BORIS", "CATALINA", "DMITRI", "ESPERANZA", "FINNEGAN", "GUNNHILD", "HIROSHI",
          "IFEOMA", "JURGEN", "KALINDA", "LEOPOLD", "MARISOL", "NIKOLAJ", "OKSANA", "PRIYANKA",
          "RADOMIR", "SVETLANA", "TOBIAS", "WILHELMINA"]
_INSTITUTIONS = ["ST ELSEWHERE GENERAL HOSPITAL", "RIVERBEND MEDICAL CENTER",
                 "NORTHGATE UNIVERSITY HOSPITAL", "LAKESIDE COMMUNITY CLINIC"]


def study_id(index: int) -> str:
    """Dataset key of the ``index``-th study (0-based), e.g. ``"s000001"``."""
    return f"s{index + 1:06d}"


def _rngs(seed: int, index: int, k: int) -> list[np.random.Generator]:
    """``k`` independent generators for one study."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(k)]


# ---------------------------------------------------------------------- sampling
def _sample_labels(rng: np.random.Generator) -> dict[str, int]:
    """Labels with realistic prevalence and co-occurrence (~38% no finding)."""
    labels = dict.fromkeys(FINDINGS, NEGATIVE)
    if rng.random() < 0.38:
        return labels
    dev = rng.random() < 0.40
    cm = rng.random() < 0.28 + 0.12 * dev
    eff = rng.random() < 0.18 + 0.20 * cm + 0.12 * dev
    cons = rng.random() < 0.22 + 0.12 * eff
    ptx = rng.random() < 0.13 + 0.10 * dev
    nod = rng.random() < 0.20
    flags = dict(zip(FINDINGS, (cm, eff, ptx, cons, nod, dev)))
    if not any(flags.values()):
        flags[FINDINGS[int(rng.integers(len(FINDINGS)))]] = True
    for f, on in flags.items():
        if on:
            hedge = f != "support_device" and rng.random() < 0.13
            labels[f] = UNCERTAIN if hedge else POSITIVE
    return labels


def _pick(rng: np.random.Generator, options: Iterable[Any], p: Iterable[float]) -> Any:
    """Choose one option with probabilities ``p``."""
    options = list(options)
    return options[int(rng.choice(len(options), p=list(p)))]


def _sample_detail(name: str, label: int, rng: np.random.Generator) -> dict[str, Any]:
    """Drawing and wording parameters of one positive or uncertain finding."""
    unsure = label == UNCERTAIN
    side = _pick(rng, ["left", "right"], [0.5, 0.5])
    if name == "cardiomegaly":
        ctr = rng.uniform(0.50, 0.54) if unsure else rng.uniform(0.57, 0.70)
        severity = "mild" if ctr < 0.61 else ("moderate" if ctr < 0.66 else "severe")
        return {"ctr": ctr, "severity": severity}
    if name == "pleural_effusion":
        if unsure:
            return {"sides": [side], "height": rng.uniform(0.08, 0.12), "strength": 0.7, "size_word": "small"}
        sides = _pick(rng, [["left"], ["right"], ["left", "right"]], [0.38, 0.37, 0.25])
        size = _pick(rng, ["small", "moderate", "large"], [0.4, 0.4, 0.2])
        lo, hi = {"small": (0.16, 0.24), "moderate": (0.25, 0.38), "large": (0.4, 0.55)}[size]
        return {"sides": sides, "height": rng.uniform(lo, hi), "strength": 1.0, "size_word": size}
    if name == "pneumothorax":
        if unsure:
            return {"side": side, "size": rng.uniform(0.06, 0.09), "strength": 0.6, "size_word": "small"}
        size = _pick(rng, ["small", "moderate", "large"], [0.4, 0.4, 0.2])
        lo, hi = {"small": (0.12, 0.19), "moderate": (0.2, 0.3), "large": (0.3, 0.42)}[size]
        return {"side": side, "size": rng.uniform(lo, hi), "strength": 1.0, "size_word": size}
    if name == "consolidation":
        sides = ["left", "right"] if (not unsure and rng.random() < 0.15) else [side]
        zone = _pick(rng, ["upper", "lower"], [0.35, 0.65])
        extent = rng.uniform(0.6, 0.8) if unsure else rng.uniform(0.9, 1.4)
        strength = 0.45 if unsure else rng.uniform(0.85, 1.0)
        return {"sides": sides, "zone": zone, "extent": extent, "strength": strength}
    if name == "nodule":
        radius = rng.uniform(0.05, 0.065) if unsure else rng.uniform(0.075, 0.15)
        count = 1 if unsure or rng.random() < 0.8 else int(rng.integers(2, 4))
        cm = round(radius * 30.0, 1)  # lung width ~15 cm
        return {"side": side, "zone": _pick(rng, ["upper", "lower"], [0.55, 0.45]), "radius": radius,
                "count": count, "cm": cm, "mass": cm >= 3.0, "strength": 0.55 if unsure else 1.0}
    chances = (("ett", 0.5), ("central_line", 0.45), ("pacemaker", 0.15), ("ecg_leads", 0.45))
    devices = [d for d, p in chances if rng.random() < p]
    if "ett" in devices and rng.random() < 0.6:  # intubated patients usually get an enteric tube
        devices.insert(1, "ng_tube")
    if not devices:
        devices = [_pick(rng, ["ett", "central_line", "pacemaker", "ecg_leads"], [0.25] * 4)]
    return {"devices": devices, "ett_cm": int(rng.integers(3, 7))}


def _laterality(labels: dict[str, int], detail: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Side of each lateralised positive/uncertain finding."""
    out = {}
    for f in _LATERALISED:
        if labels[f] != NEGATIVE:
            sides = detail[f].get("sides") or [detail[f]["side"]]
            out[f] = "bilateral" if len(sides) == 2 else sides[0]
    return out


def _sample_image(rng: np.random.Generator, modality: str) -> dict[str, Any]:
    """Pixel geometry and the stored-value encoding of one image."""
    # Sizes stay modest (~300 px on average) so 2,000 studies fit in ~350 MB.
    base, aspect = rng.uniform(248, 336), rng.uniform(0.8, 1.25)
    rows = int(np.clip(round(base * np.sqrt(aspect)), 240, 448))
    cols = int(np.clip(round(base / np.sqrt(aspect)), 240, 448))
    bits = int(rng.choice([12, 14, 16]))
    if modality == "CR":  # DX requires identity rescale; CR images vary it
        slope = float(rng.choice([1.0, 1.0, 0.5, 2.0, 1.5]))
        intercept = float(rng.choice([0.0, 0.0, -1024.0, -512.0, 100.0]))
    else:
        slope, intercept = 1.0, 0.0
    vmax = 2**bits - 1
    lo, hi = rng.uniform(0.02, 0.15) * vmax, rng.uniform(0.6, 0.95) * vmax
    mid, span = slope * (lo + hi) / 2 + intercept, slope * (hi - lo)
    return {
        "rows": rows, "cols": cols, "bits": bits, "slope": slope, "intercept": intercept,
        "stored_lo": lo, "stored_hi": hi,
        "monochrome1": bool(rng.random() < 0.3),
        "window_center": round(mid + rng.uniform(-0.04, 0.04) * span, 1),
        "window_width": round(span * rng.uniform(0.92, 1.1), 1),
        "spacing": round(rng.uniform(350.0, 430.0) / max(rows, cols), 4),
    }


def sample_study(seed: int, index: int) -> dict[str, Any]:
    """Draw everything about one study except its pixels.

    Args:
        seed: Dataset seed.
        index: 0-based study index.

    Returns:
        ``{"index", "study_id", "split", "view", "labels", "laterality", "detail",
        "findings", "impression", "report", "vqa", "modality", "image",
        "identity"}``; ``identity`` holds the fake identifying header values and
        must never be written anywhere but the DICOM file.
    """
    label_rng, text_rng, _, header_rng = _rngs(seed, index, 4)
    labels = _sample_labels(label_rng)
    detail = {f: _sample_detail(f, labels[f], label_rng) for f in FINDINGS if labels[f] != NEGATIVE}
    sick = labels["support_device"] == POSITIVE or labels["pneumothorax"] != NEGATIVE
    view = "AP" if label_rng.random() < (0.55 if sick else 0.2) else "PA"
    u = label_rng.random()
    split = "train" if u < 0.8 else ("val" if u < 0.9 else "test")
    modality = "DX" if header_rng.random() < 0.5 else "CR"
    laterality = _laterality(labels, detail)
    return {
        "index": index,
        "study_id": study_id(index),
        "split": split,
        "view": view,
        "labels": labels,
        "laterality": laterality,
        "detail": detail,
        **write_report(labels, detail, view, text_rng),
        "vqa": make_vqa(labels, laterality, detail, text_rng),
        "modality": modality,
        "image": _sample_image(header_rng, modality),
        "identity": _sample_identity(header_rng, seed, index),
    }


def _sample_identity(rng: np.random.Generator, seed: int, index: int) -> dict[str, str]:
    """Fake but realistic identifying header values and deterministic UIDs."""
    def name() -> str:
        return f"{_LAST[int(rng.integers(len(_LAST)))]}^{_FIRST[int(rng.integers(len(_FIRST)))]}"

    birth = np.datetime64("1935-01-01") + int(rng.integers(0, 70 * 365))
    study = np.datetime64("2012-01-01") + int(rng.integers(0, 12 * 365))
    secs = int(rng.integers(6 * 3600, 22 * 3600))
    src = [*_UID_ROOT, str(seed), str(index)]
    return {
        "PatientName": name(),
        "PatientID": f"MRN{int(rng.integers(10**7, 10**8))}",
        "PatientBirthDate": str(birth).replace("-", ""),
        "PatientSex": "M" if rng.random() < 0.5 else "F",
        "AccessionNumber": f"ACC{int(rng.integers(10**8, 10**9))}",
        "StudyDate": str(study).replace("-", ""),
        "StudyTime": f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}",
        "InstitutionName": _INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))],
        "ReferringPhysicianName": name(),
        "StudyInstanceUID": generate_uid(entropy_srcs=[*src, "study"]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=[*src, "series"]),
        "SOPInstanceUID": generate_uid(entropy_srcs=[*src, "instance"]),
    }


# ------------------------------------------------------------------------ pixels
def render_study(case: dict[str, Any], seed: int) -> np.ndarray:
    """Render a sampled study into stored pixel values.

    Applies the inverse modality LUT (values are chosen in stored units) and, for
    MONOCHROME1, the inversion, so a reader that applies rescale, window and
    MONOCHROME1 inversion recovers "bright = dense".

    Returns:
        ``uint16`` array of shape ``(rows, cols)`` within ``[0, 2**BitsStored)``.
    """
    im = case["image"]
    render_rng = _rngs(seed, case["index"], 4)[2]
    findings = {f: case["detail"][f] for f in FINDINGS if case["labels"][f] != NEGATIVE}
    img = render_phantom(im["rows"], im["cols"], rng=render_rng, findings=findings, view=case["view"])
    if im["monochrome1"]:
        img = 1.0 - img
    stored = im["stored_lo"] + img * (im["stored_hi"] - im["stored_lo"])
    return np.clip(np.rint(stored), 0, 2 ** im["bits"] - 1).astype(np.uint16)


def _write_dicom(path: Path, case: dict[str, Any], pixels: np.ndarray) -> None:
    """Write one study as an Explicit VR Little Endian Part 10 file."""
    im, ident, mod = case["image"], case["identity"], case["modality"]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[mod]
    meta.MediaStorageSOPInstanceUID = ident["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SOP_CLASSES[mod]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                "StudyDate", "StudyTime", "InstitutionName", "ReferringPhysicianName",
                "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, key, ident[key])
    ds.SeriesDate, ds.ContentDate = ident["StudyDate"], ident["StudyDate"]
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.Modality, ds.Manufacturer = mod, "MEDVL SYNTHETIC"
    ds.StudyDescription = f"CHEST {case['view']}"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", case["view"]
    ds.PatientOrientation = ["R", "F"] if case["view"] == "AP" else ["L", "F"]
    if mod == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if im["monochrome1"] else 1
        ds.ImagerPixelSpacing = [im["spacing"], im["spacing"]]
    ds.PixelSpacing = [im["spacing"], im["spacing"]]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if im["monochrome1"] else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, im["bits"], im["bits"] - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = im["intercept"], im["slope"], "US"
    ds.WindowCenter, ds.WindowWidth = im["window_center"], im["window_width"]
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


# -------------------------------------------------------------------- generation
def _manifest_record(case: dict[str, Any]) -> dict[str, Any]:
    """The manifest line of one study (only non-identifying keys)."""
    sid = case["study_id"]
    keys = ("split", "view", "findings", "impression", "report", "labels", "laterality", "vqa")
    return {"study_id": sid, "image": f"images/{sid}.dcm", **{k: case[k] for k in keys}}


def _make_study(job: tuple[str, int, int]) -> dict[str, Any]:
    """Sample, render and write one study; returns its manifest record."""
    out, seed, index = job
    case = sample_study(seed, index)
    _write_dicom(Path(out) / "images" / f"{case['study_id']}.dcm", case, render_study(case, seed))
    return _manifest_record(case)


def _run(jobs: list[tuple[str, int, int]], workers: int) -> Iterator[dict[str, Any]]:
    """Yield records in index order, in-process or from a process pool."""
    if workers <= 1:
        yield from map(_make_study, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_make_study, jobs, chunksize=8)


def _summary(records: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Contents of ``dataset.json``."""
    n = len(records)

    def frac(f: str, v: int) -> float:
        return round(sum(r["labels"][f] == v for r in records) / max(n, 1), 4)

    return {
        "generator": "medvl.data.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "findings": list(FINDINGS),
        "splits": {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")},
        "views": {v: sum(r["view"] == v for r in records) for v in ("PA", "AP")},
        "prevalence": {f: frac(f, POSITIVE) for f in FINDINGS},
        "uncertain": {f: frac(f, UNCERTAIN) for f in FINDINGS},
        "no_finding": round(sum(all(v == NEGATIVE for v in r["labels"].values()) for r in records) / max(n, 1), 4),
        "vqa": {k: sum(qa["kind"] == k for r in records for qa in r["vqa"]) for k in VQA_KINDS},
    }


def generate_dataset(
    out: str | Path,
    *,
    n: int = 2000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write n studies under out/ and return the manifest path (out/manifest.jsonl).

    Args:
        out: Output directory (created if missing; existing study files are
            overwritten).
        n: Number of studies.
        seed: Dataset seed; the output is a pure function of ``(seed, n)`` and
            study ``i`` does not depend on ``n``.
        workers: Processes to use; ``None`` uses ``os.cpu_count()``, ``<= 1`` runs
            in this process.
        progress: Show a ``rich`` progress bar.

    Returns:
        Path of ``out/manifest.jsonl``.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else workers
    jobs = [(str(out), seed, i) for i in range(n)]
    records: list[dict[str, Any]] = []
    results = _run(jobs, min(workers, max(n, 1)))
    if progress:
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task("medvl synth", total=n)
            for rec in results:
                records.append(rec)
                bar.advance(task)
    else:
        records.extend(results)
    manifest = out / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with open(out / "dataset.json", "w", encoding="utf-8") as fh:
        json.dump(_summary(records, seed), fh, indent=2)
        fh.write("\n")
    return manifest
