"""Tests for the synthetic phantom dataset (medvl.data.synth)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian

from medvl.data._phantom import render_phantom
from medvl.data._report_templates import VQA_KINDS
from medvl.data.labels import FINDINGS, NEGATIVE, POSITIVE, UNCERTAIN
from medvl.data.sources import Synthetic
from medvl.data.synth import GENERATOR_VERSION, SOP_CLASSES, generate_dataset, sample_study

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
        assert 2 <= len(rec["vqa"]) <= 6
        for qa in rec["vqa"]:
            assert set(qa) == {"question", "answer", "answer_type", "kind", "question_type"}
            assert qa["answer_type"] == VQA_KINDS[qa["kind"]] and qa["question_type"] == qa["kind"]
    summary = json.loads((dataset / "dataset.json").read_text())
    assert summary["n"] == N and summary["findings"] == list(FINDINGS)
    assert sum(summary["splits"].values()) == N
    assert summary["version"] == GENERATOR_VERSION and isinstance(GENERATOR_VERSION, int)
    kinds = [qa["kind"] for rec in _records(dataset) for qa in rec["vqa"]]
    assert summary["vqa"] == {k: kinds.count(k) for k in VQA_KINDS}


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


# ------------------------------------------------------------------------------ VQA
N_VQA = 300
_REPORT_KEYS = ("split", "view", "labels", "laterality", "detail", "findings", "impression", "report")
# sha256 of the first 50 studies' _REPORT_KEYS under generator version 1, before the VQA
# pairs were redrawn: make_vqa is the last consumer of the text generator, so changing
# the questions must leave labels and reports byte-identical.
_REPORTS_V1 = "13d750cbb9ad43a65e19bcf902e75c21da83baaae77c0606cbe6deb2c35a0081"


@pytest.fixture(scope="module")
def studies() -> list[dict]:
    """Sampled studies (no pixels are rendered)."""
    return [sample_study(0, i) for i in range(N_VQA)]


def _finding(question: str) -> str:
    """The finding a question is about, from its wording."""
    q = question.lower()
    for words, name in ((("heart", "cardiomegaly"), "cardiomegaly"), (("pleural",), "pleural_effusion"),
                        (("pneumothorax",), "pneumothorax"), (("consolidation", "airspace"), "consolidation"),
                        (("nodule", "mass"), "nodule"), (("device", "tubes"), "support_device")):
        if any(w in q for w in words):
            return name
    raise AssertionError(f"no finding named in {question!r}")


def _expected(qa: dict, case: dict) -> str:
    """The answer a question must have, worked out from the study's labels and details."""
    labels, lat, detail, kind = case["labels"], case["laterality"], case["detail"], qa["kind"]
    q = qa["question"].lower()
    if kind == "abnormality":
        abnormal = [f for f in FINDINGS if f != "support_device" and labels[f] != NEGATIVE]
        if not abnormal:
            return "no finding"
        assert len(abnormal) == 1 and labels[abnormal[0]] == POSITIVE, (qa, labels)
        f = abnormal[0]
        if f == "nodule":
            d = detail[f]
            return "nodules" if d["count"] > 1 else ("mass" if d["mass"] else "nodule")
        return f.replace("_", " ")
    devices = detail["support_device"]["devices"] if labels["support_device"] == POSITIVE else []
    if kind == "device_count":
        assert len(devices) != 1
        return str(len(devices))
    if kind == "device":
        assert len(devices) == 1
        return {"ett": "endotracheal tube", "central_line": "central line", "pacemaker": "pacemaker",
                "ecg_leads": "ECG leads", "ng_tube": "enteric tube"}[devices[0]]
    f = _finding(qa["question"])
    assert labels[f] != UNCERTAIN, qa  # uncertain findings are never asked
    if kind == "presence":
        return "yes" if labels[f] == POSITIVE else "no"
    assert labels[f] == POSITIVE, qa  # the other kinds ask about positive findings only
    if kind == "laterality_yes_no":
        if "bilateral" in q or "both sides" in q:
            return "yes" if lat[f] == "bilateral" else "no"
        if "unilateral" in q or "one side" in q:
            return "no" if lat[f] == "bilateral" else "yes"
        asked = "left" if "left" in q else "right"
        return "yes" if lat[f] in (asked, "bilateral") else "no"
    if kind in ("side", "side_choice"):
        return lat[f]
    if kind == "location":
        assert lat[f] != "bilateral"
        return f"{lat[f]} {detail[f]['zone']} lobe"
    if kind == "effusion_size":
        assert f == "pleural_effusion"
        return detail[f]["size_word"]
    if kind == "nodule_count":
        assert f == "nodule"
        return str(detail[f]["count"])  # the number _draw_nodules draws
    raise AssertionError(f"unknown kind {kind!r}")


def test_vqa_answers_follow_the_study(studies: list[dict]) -> None:
    for case in studies:
        assert 2 <= len(case["vqa"]) <= 6
        assert len({qa["question"] for qa in case["vqa"]}) == len(case["vqa"])
        for qa in case["vqa"]:
            assert qa["answer"] == _expected(qa, case), (case["study_id"], qa)


def test_vqa_is_balanced(studies: list[dict]) -> None:
    pairs = [qa for case in studies for qa in case["vqa"]]
    closed = sum(qa["answer_type"] == "closed" for qa in pairs) / len(pairs)
    assert 0.35 < closed < 0.65
    assert {qa["kind"] for qa in pairs} == set(VQA_KINDS)
    side = [qa["answer"] for qa in pairs if qa["kind"] == "laterality_yes_no"]
    assert len(side) >= 30 and 0.35 < side.count("yes") / len(side) < 0.65
    assert {qa["answer"] for qa in pairs if qa["kind"] == "side"} == {"left", "right", "bilateral"}
    assert all(qa["answer"].isdigit() for qa in pairs if qa["kind"] in ("device_count", "nodule_count"))
    choice = [qa for qa in pairs if qa["kind"] == "side_choice"]
    assert {qa["answer"] for qa in choice} == {"left", "right"} and all(qa["answer_type"] == "closed" for qa in choice)


def test_vqa_is_deterministic_and_leaves_reports_alone(studies: list[dict]) -> None:
    assert [sample_study(0, i)["vqa"] for i in range(20)] == [c["vqa"] for c in studies[:20]]
    assert [sample_study(1, i)["vqa"] for i in range(20)] != [c["vqa"] for c in studies[:20]]
    blob = json.dumps([{k: c[k] for k in _REPORT_KEYS} for c in studies[:50]], sort_keys=True)
    assert hashlib.sha256(blob.encode()).hexdigest() == _REPORTS_V1


def test_prepare_regenerates_another_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "synth"
    generate_dataset(root, n=2, seed=0, workers=1, progress=False)
    manifest, summary = root / "manifest.jsonl", root / "dataset.json"
    fresh = manifest.read_text()
    current = json.loads(summary.read_text())
    source = Synthetic(str(root), n=2, seed=0)

    manifest.write_text("stale\n")  # a current version is left alone
    source.prepare()
    assert manifest.read_text() == "stale\n"

    for old in ({**current, "version": "1.0.0"}, {k: v for k, v in current.items() if k != "version"}, None):
        manifest.write_text("stale\n")
        if old is None:
            summary.unlink()
        else:
            summary.write_text(json.dumps(old))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="medvl.data.sources"):
            source.prepare()
        assert manifest.read_text() == fresh
        assert json.loads(summary.read_text())["version"] == GENERATOR_VERSION
        assert any("regenerating" in r.getMessage() for r in caplog.records)
