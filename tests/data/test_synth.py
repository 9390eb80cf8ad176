"""Tests for the synthetic phantom dataset (medvl.data.synth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian

from medvl.data._phantom import render_phantom
from medvl.data.labels import FINDINGS
from medvl.data.synth import SOP_CLASSES, generate_dataset, sample_study

N = 24
MANIFEST_KEYS = {"study_id", "image", "split", "view", "findings", "impression", "report",
                 "labels", "laterality", "vqa"}
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate",
               "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset written with two worker processes."""
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, n=N, seed=0, workers=2, progress=False)
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _display(ds: pydicom.Dataset) -> np.ndarray:
    """Modality LUT, window and MONOCHROME1 inversion -> [0, 1], bright = dense."""
    arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    img = np.clip((arr - (center - width / 2)) / width, 0.0, 1.0)
    return 1.0 - img if ds.PhotometricInterpretation == "MONOCHROME1" else img


def test_files_are_valid_dicom(dataset: Path) -> None:
    records = _records(dataset)
    assert [r["study_id"] for r in records] == [f"s{i + 1:06d}" for i in range(N)]
    photometric, sops = set(), set()
    for rec in records:
        ds = pydicom.dcmread(dataset / rec["image"])
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == SOP_CLASSES[ds.Modality]
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        assert 240 <= ds.Rows <= 512 and 240 <= ds.Columns <= 512
        assert ds.BitsAllocated == 16 and ds.BitsStored in (12, 14, 16) and ds.PixelRepresentation == 0
        assert int(ds.pixel_array.max()) < 2**ds.BitsStored
        assert ds.ViewPosition == rec["view"] and ds.BodyPartExamined == "CHEST"
        photometric.add(ds.PhotometricInterpretation)
        sops.add(ds.SOPClassUID)
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert sops == set(SOP_CLASSES.values())


def test_display_pipeline_recovers_bright_mediastinum(dataset: Path) -> None:
    """After LUTs and MONOCHROME1 inversion the mediastinum is brighter than the lungs."""
    for rec in _records(dataset)[:12]:
        img = _display(pydicom.dcmread(dataset / rec["image"]))
        rows, cols = img.shape
        band = slice(int(0.25 * rows), int(0.45 * rows))
        centre = img[band, int(0.46 * cols):int(0.54 * cols)].mean()
        lungs = img[band, int(0.2 * cols):int(0.3 * cols)].mean()
        assert centre > lungs + 0.15, rec["study_id"]


def test_manifest_schema(dataset: Path) -> None:
    for rec in _records(dataset):
        assert set(rec) == MANIFEST_KEYS
        assert rec["split"] in ("train", "val", "test") and rec["view"] in ("PA", "AP")
        assert list(rec["labels"]) == list(FINDINGS)
        assert all(v in (1, 0, -1) for v in rec["labels"].values())
        for f, side in rec["laterality"].items():
            assert rec["labels"][f] != 0 and side in ("left", "right", "bilateral")
        assert rec["report"] == f"FINDINGS: {rec['findings']}\n\nIMPRESSION: {rec['impression']}"
        assert 3 <= len(rec["vqa"]) <= 6
        for qa in rec["vqa"]:
            assert set(qa) == {"question", "answer", "answer_type"}
            assert qa["answer_type"] in ("closed", "open")
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["n"] == N and summary["findings"] == list(FINDINGS)
    assert sum(summary["splits"].values()) == N


def test_reports_mention_labels() -> None:
    """Positive findings are named; 'no finding' studies get a normal impression."""
    words = {"cardiomegaly": ("cardio", "heart"), "pleural_effusion": ("effusion",),
             "pneumothorax": ("pneumothorax",), "consolidation": ("consolidation", "opacity"),
             "nodule": ("nodule", "mass"), "support_device": ("tube", "line", "lead", "pacemaker")}
    for i in range(60):
        case = sample_study(0, i)
        text = case["report"].lower()
        for f, label in case["labels"].items():
            if label == 1:
                assert any(w in text for w in words[f]), (f, text)
        if not any(case["labels"].values()):
            assert "no acute" in text or "normal chest" in text


def test_deterministic_for_any_worker_count(dataset: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", n=6, seed=0, workers=1, progress=False)
    generate_dataset(tmp_path / "b", n=3, seed=1, workers=1, progress=False)
    first = (dataset / "manifest.jsonl").read_text().splitlines()[:6]
    assert (tmp_path / "a" / "manifest.jsonl").read_text().splitlines() == first
    for sid in ("s000001", "s000006"):
        px = pydicom.dcmread(tmp_path / "a" / "images" / f"{sid}.dcm").PixelData
        assert px == pydicom.dcmread(dataset / "images" / f"{sid}.dcm").PixelData
    other = (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()
    assert other != first[:3]
    assert pydicom.dcmread(tmp_path / "b" / "images" / "s000001.dcm").PixelData != \
        pydicom.dcmread(dataset / "images" / "s000001.dcm").PixelData


def test_no_identifying_values_leave_the_dicom(dataset: Path) -> None:
    text = (dataset / "manifest.jsonl").read_text() + (dataset / "dataset.json").read_text()
    for rec in _records(dataset):
        ds = pydicom.dcmread(dataset / rec["image"], stop_before_pixels=True)
        for key in IDENTIFYING:
            value = str(ds.data_element(key).value)
            assert value and value not in text, key
        for part in str(ds.PatientName).split("^"):
            assert part not in text


def _pair(findings: dict, seed: int = 3, size: int = 336) -> tuple[np.ndarray, np.ndarray]:
    """The same patient rendered without and with ``findings``, block-averaged to 112 px."""
    def small(img: np.ndarray) -> np.ndarray:
        k = size // 112
        return img.reshape(112, k, 112, k).mean(axis=(1, 3))

    off = render_phantom(size, size, rng=np.random.default_rng(seed))
    on = render_phantom(size, size, rng=np.random.default_rng(seed), findings=findings)
    return small(off), small(on)


def test_findings_are_visible_at_112px() -> None:
    base = slice(70, 90)
    right_lung, left_lung = slice(15, 40), slice(72, 97)  # patient's right is image left
    off, on = _pair({"pleural_effusion": {"sides": ["right"], "height": 0.3}})
    assert (on - off)[base, right_lung].mean() > 0.08
    assert abs((on - off)[base, left_lung].mean()) < 0.01
    _, subtle = _pair({"pleural_effusion": {"sides": ["right"], "height": 0.08, "strength": 0.7}})
    assert 0.0 < (subtle - off)[base, right_lung].mean() < (on - off)[base, right_lung].mean()

    off, on = _pair({"pneumothorax": {"side": "left", "size": 0.3}})
    assert (on - off)[15:45, left_lung].mean() < -0.05

    off, on = _pair({"cardiomegaly": {"ctr": 0.65}})
    assert (on - off)[55:80, 30:82].mean() > 0.04

    off, on = _pair({"nodule": {"side": "right", "zone": "upper", "radius": 0.1}})
    assert (on - off).max() > 0.2

    off, on = _pair({"consolidation": {"sides": ["left"], "zone": "lower"}})
    assert (on - off)[:, left_lung].max() > 0.2

    off, on = _pair({"support_device": {"devices": ["ett", "central_line"]}})
    assert (on - off)[:, 50:62].max() > 0.2
