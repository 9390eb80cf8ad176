"""Manifests, the skip-and-count policy, and the reader on the synthetic DICOM files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medvl.data import DicomReadError, read_dicom
from medvl.data.dataset import Collate, ImageReportDataset, ManifestError, collate_samples, read_manifest
from medvl.data.pipeline import ImagePipeline
from medvl.data.labels import FINDINGS
from medvl.data.synth import generate_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n=16, seed=11, workers=1, progress=False)
    return root


def _write(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "manifest.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_reader_recovers_dense_is_bright_for_both_photometric_interpretations(synthetic):
    seen = set()
    for path in sorted((synthetic / "images").glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        img = read_dicom(path)
        px = img.pixels
        assert px.dtype == np.float32 and px.shape == (ds.Rows, ds.Columns)
        assert 0.0 <= px.min() and px.max() <= 1.0
        h, w = px.shape
        # Mediastinum/spine (centre column) is denser than the lung fields on both sides.
        centre = px[int(0.3 * h):int(0.6 * h), int(0.47 * w):int(0.53 * w)].mean()
        lungs = np.r_[px[int(0.3 * h):int(0.5 * h), int(0.25 * w):int(0.32 * w)].ravel(),
                      px[int(0.3 * h):int(0.5 * h), int(0.68 * w):int(0.75 * w)].ravel()].mean()
        assert centre > lungs + 0.1, path.name
        seen.add(ds.PhotometricInterpretation)
        assert img.meta["modality"] in ("CR", "DX")
        assert str(ds.PatientName) not in json.dumps(img.meta, default=str)
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def test_manifest_errors_name_file_line_and_reason(tmp_path):
    good = {"study_id": "a", "image": "images/a.dcm", "split": "train"}
    cases = {
        "malformed JSON": ["{not json"],
        "missing key": [json.dumps({"study_id": "a", "split": "train"})],
        "outside the dataset root": [json.dumps({**good, "image": "../../etc/passwd"})],
        "duplicate study_id": [json.dumps(good), json.dumps(good)],
    }
    for reason, lines in cases.items():
        path = _write(tmp_path, lines)
        with pytest.raises(ManifestError, match=reason) as err:
            read_manifest(path)
        assert str(path) in str(err.value)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "absent.jsonl")
    for escape in ("/etc/passwd", "images/../../x.dcm"):
        with pytest.raises(ManifestError, match="outside the dataset root"):
            read_manifest(_write(tmp_path, [json.dumps({**good, "image": escape})]))


def test_a_symlinked_image_folder_inside_the_root_is_followed(tmp_path):
    elsewhere = tmp_path / "store" / "images"
    elsewhere.mkdir(parents=True)
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "images").symlink_to(elsewhere, target_is_directory=True)
    (root / "manifest.jsonl").write_text(json.dumps({"study_id": "a", "image": "images/a.dcm", "split": "train"}) + "\n")
    assert [r["study_id"] for r in read_manifest(root / "manifest.jsonl")] == ["a"]


def test_split_filter_and_labels(synthetic):
    rows = read_manifest(synthetic / "manifest.jsonl")
    train = read_manifest(synthetic / "manifest.jsonl", split="train")
    assert 0 < len(train) < len(rows) and all(r["split"] == "train" for r in train)
    ds = ImageReportDataset(train, synthetic, pipeline=ImagePipeline(32), label_names=[*FINDINGS, "edema"])
    sample = ds[0]
    assert sample["image"].shape == (1, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["labels"][-1] == -1  # a finding absent from the manifest is ignored, not negative
    assert sample["labels"][:-1].tolist() == [float(train[0]["labels"][f]) for f in FINDINGS]
    assert sample["report"].startswith("FINDINGS:")


def test_bad_files_are_skipped_and_counted(synthetic, tmp_path):
    rows = read_manifest(synthetic / "manifest.jsonl")[:4]
    (tmp_path / "images").mkdir()
    for r in rows:
        (tmp_path / r["image"]).write_bytes((synthetic / r["image"]).read_bytes())
    (tmp_path / rows[1]["image"]).write_bytes(b"not a dicom file at all")
    (tmp_path / rows[2]["image"]).unlink()

    lazy = ImageReportDataset(rows, tmp_path, pipeline=ImagePipeline(32), label_names=FINDINGS)
    batch = collate_samples([lazy[i] for i in range(4)])
    assert batch["n_skipped"] == 2 and batch["image"].shape[0] == 2
    assert batch["study_id"] == [rows[0]["study_id"], rows[3]["study_id"]]

    eager = ImageReportDataset(rows, tmp_path, pipeline=ImagePipeline(32), label_names=FINDINGS, preload=True,
                               progress=False)
    assert len(eager) == 2 and set(eager.skipped) == {rows[1]["study_id"], rows[2]["study_id"]}
    torch.testing.assert_close(eager[0]["image"], lazy[0]["image"], atol=4e-3, rtol=0)  # float16 cache, / std


def test_collate_tokenises_text_fields_in_the_loader(synthetic):
    rows = read_manifest(synthetic / "manifest.jsonl")[:3]
    ds = ImageReportDataset(rows, synthetic, pipeline=ImagePipeline(32), label_names=FINDINGS)

    def tokenize(texts):
        ids = torch.tensor([[len(t.split())] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    batch = Collate({"report": tokenize})([ds[i] for i in range(3)])
    assert batch["report_tokens"]["input_ids"].flatten().tolist() == [len(r["report"].split()) for r in rows]
    with pytest.raises(KeyError, match="question"):
        Collate({"question": tokenize})([ds[0]])


def test_read_error_is_a_value_error_naming_the_file(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_bytes(b"\x00" * 10)
    with pytest.raises(DicomReadError) as err:
        read_dicom(p)
    assert isinstance(err.value, ValueError) and str(p) in str(err.value)


def test_preload_names_each_unreadable_file_and_counts_by_reason(synthetic, tmp_path, caplog):
    import logging
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic, data)
    rows = read_manifest(data / "manifest.jsonl")
    bad = [data / rows[0]["image"], data / rows[1]["image"]]
    bad[0].write_bytes(bad[0].read_bytes()[:300])  # truncated
    bad[1].write_bytes(b"")  # empty
    with caplog.at_level(logging.WARNING, logger="medvl"):
        ds = ImageReportDataset(rows, data, pipeline=ImagePipeline(32), label_names=list(FINDINGS), preload=True,
                                progress=False)
    assert len(ds) == len(rows) - 2 and set(ds.skipped) == {rows[0]["study_id"], rows[1]["study_id"]}
    for path in bad:
        assert str(path) in caplog.text
    assert "not a DICOM file (empty file)" in caplog.text
    assert f"skipped 2 unreadable image(s) of {len(rows)}; by reason: 1 x" in caplog.text
