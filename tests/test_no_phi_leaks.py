"""No identifying DICOM header value of the synthetic dataset reaches a cache, a run, an export,
a log line, or a de-identified copy.

The synthetic generator writes realistic fake names, IDs, accession numbers, birth dates,
institutions, physicians and UIDs into every file; this test collects all of them and
searches every byte medvl writes downstream.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
import pytest

from medvl.cli import main
from medvl.data import read_dicom
from medvl.data.dataset import read_manifest

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
               "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate")


@pytest.fixture(scope="module")
def dataset(make_synthetic) -> Path:
    return make_synthetic(24, 11)


def _secrets(dataset: Path) -> set[bytes]:
    values: set[str] = set()
    for row in read_manifest(dataset / "manifest.jsonl"):
        ds = pydicom.dcmread(dataset / row["image"], stop_before_pixels=True)
        for kw in IDENTIFYING:
            values.add(str(ds.get(kw, "")))
            if kw.endswith("Name"):  # names also travel as "Given Family" or one component
                values |= {part for part in str(ds.get(kw, "")).split("^") if len(part) >= 5}
    return {v.encode() for v in values if len(v) >= 5}


def _leaks(folder: Path, secrets: set[bytes]) -> dict[str, list[bytes]]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            hits = [s for s in secrets if s in blob]
            if hits:
                found[str(path)] = hits
    return found


def test_cache_run_export_and_logs_hold_no_identifiers(dataset, tmp_path, capsys, caplog):
    secrets = _secrets(dataset)
    assert len(secrets) > 100  # names, IDs, accession numbers, dates, UIDs of 24 studies
    caplog.set_level(logging.DEBUG)

    cache = tmp_path / "cache"
    assert main(["prepare", str(dataset / "manifest.jsonl"), "--out", str(cache), "--img-size", "32",
                 "--workers", "0"]) == 0
    run = tmp_path / "run"
    model = ["--model", "medvl.models.ContrastivePretraining", "--model.vision_encoder", "test_vit_tiny_patch8",
             "--model.text_encoder", "test_text_tiny", "--model.embed_dim", "16"]
    data = ["--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(dataset), "--data.img_size", "32",
            "--data.batch_size", "4", "--data.cache_dir", str(cache)]
    trainer = ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run),
               "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run)]
    main(["fit", *model, *data, *trainer])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    main(["test", *model, *data, *trainer, "--ckpt_path", str(ckpt)])
    export = tmp_path / "export"
    assert main(["export", str(ckpt), "--out", str(export)]) == 0

    for folder in (cache, run, export):
        assert list(folder.rglob("*")), f"{folder} is empty"
        assert not _leaks(folder, secrets)
    captured = capsys.readouterr()
    text = (captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)).encode()
    assert not [s for s in secrets if s in text]


def test_deidentified_copies_hold_no_identifiers_and_read_the_same(dataset, tmp_path):
    secrets = _secrets(dataset)
    out = tmp_path / "shared"
    assert main(["prepare", str(dataset / "manifest.jsonl"), "--out", str(out), "--deidentify",
                 "--key", str(tmp_path / "private" / "deid.key")]) == 0
    assert not _leaks(out, secrets)
    src_rows = {r["study_id"]: r for r in read_manifest(dataset / "manifest.jsonl")}
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == len(src_rows)
    for row in rows[:5]:
        assert row["report"] == src_rows[row["study_id"]]["report"]
        before = read_dicom(dataset / src_rows[row["study_id"]]["image"]).pixels
        after = read_dicom(out / row["image"]).pixels
        assert (before == after).all()
    # The control: the same search finds the secrets in the original files.
    assert _leaks(dataset / "images", secrets)
