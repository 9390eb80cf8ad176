"""A run over a dataset in which a tenth of the files are malformed finishes and counts exactly those files.

Six of sixty synthetic studies get a file of the malformed corpus (``tests/data/_malformed.py``:
an empty file, a text file, a truncated file, a bogus transfer syntax, an RLE stream that
makes the Rust decoder panic, a declared 65535 x 65535 image): three training, two
validation and one test study. In one fresh interpreter, through the ``medvl`` console
entry point, ``medvl fit`` + ``medvl test`` run without preloading on two loader workers
(the files are decoded, and the decoder panics, inside the workers), then with preloading
in the main process, and ``medvl prepare`` builds a cache of the same manifest. Every
command exits 0, and each run's end-of-run summary (the console block and
``run_health_<fn>.json``) counts exactly the bad files of its splits, by reason, and no
good file; the model trains on the good ones; no header value of the damaged files leaks.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from medvl.data.dataset import read_manifest
from medvl.data.dicom import DicomReadError
from medvl.data.pipeline import ImagePipeline
from tests._multiprocess import run_python
from tests.data._malformed import BUILDERS
from tests.data._pydicom_files import pydicom_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the damaged headers

N_STUDIES, SEED, IMG_SIZE, EPOCHS = 60, 7, 32, 2
BAD = {"train": [(0, "zero-byte"), (21, "rle-decoder-panic"), (43, "huge-rows")],
       "val": [(0, "truncated"), (4, "not-a-dicom")], "test": [(3, "bogus-transfer-syntax")]}
"""Split -> (position in the split, kind of bad file): a tenth of the studies, a mix of reasons. Both
validation files sit on rank 0 of two (the distributed sampler interleaves), so under DDP the ranks
score 3 and 5 validation samples."""

# Runs the commands in one fresh interpreter (one import of torch and Lightning), as the
# console script does, each after a marker line; "{ckpt}" becomes the newest checkpoint
# under the command's "ckpt_from" folder. Stops at the first command that does not exit 0.
SCRIPT = r"""
import json, sys
from pathlib import Path
from medvl.cli import console
for i, cmd in enumerate(json.loads(sys.argv[1])):
    argv = cmd["argv"]
    if cmd.get("ckpt_from"):
        ckpt = max(Path(cmd["ckpt_from"]).rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        argv = [str(ckpt) if a == "{ckpt}" else a for a in argv]
    for stream in (sys.stdout, sys.stderr):
        print(f"=== command {i}", file=stream, flush=True)
    code = console(argv)
    if code:
        sys.exit(code)
"""

MODEL = ["--model", "medvl.models.ContrastivePretraining", "--model.vision_encoder", "test_vit_tiny_patch8",
         "--model.text_encoder", "test_text_tiny", "--model.embed_dim", "16"]


IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
               "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _identifying_values(paths: list[Path]) -> set[str]:
    values: set[str] = set()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in IDENTIFYING:
            value = str(ds.get(keyword, ""))
            values |= {value, *value.split("^")} if keyword.endswith("Name") else {value}
    return {v for v in values if len(v) >= 5}


@pytest.fixture(scope="module")
def dataset(make_synthetic, tmp_path_factory) -> dict:
    """The synthetic set with BAD's studies' files replaced; their expected reasons per split."""
    root = tmp_path_factory.mktemp("bad_files") / "data"
    shutil.copytree(make_synthetic(N_STUDIES, SEED), root)
    manifest = root / "manifest.jsonl"
    rows = read_manifest(manifest)
    splits = {s: [r for r in rows if r["split"] == s] for s in BAD}
    pipeline = ImagePipeline(IMG_SIZE, 1)  # the prefix every loader, the preload and the cache run
    secrets = _identifying_values([root / r["image"] for r in rows[:10]])
    expected: dict[str, dict[str, str]] = {}
    assert {s: len(v) for s, v in splits.items()} == {"train": 44, "val": 10, "test": 6}  # BAD's positions
    for split, bad in BAD.items():
        expected[split] = {}
        for position, kind in bad:
            path = root / splits[split][position]["image"]
            BUILDERS[kind](path)
            with pytest.raises(DicomReadError) as err:  # the premise: the file is refused
                pipeline.load(path)
            assert err.value.path == str(path)
            expected[split][str(path)] = err.value.reason
    assert sum(map(len, expected.values())) * 10 == len(rows)
    reasons = " | ".join(r for e in expected.values() for r in e.values())
    for word in ("empty file", "not a DICOM file", "pixel data is", "no decoder", "PanicException", "65535 x 65535"):
        assert word in reasons, f"{word!r} not among the reasons: {reasons}"
    sources = [pydicom_file("CT_small.dcm"), pydicom_file("MR_small_RLE.dcm")]
    return {"root": root, "manifest": manifest, "expected": expected, "n": {s: len(v) for s, v in splits.items()},
            "secrets": secrets | _identifying_values(sources)}


def _batch_size(n_train: int) -> int:
    """A batch size dividing the training split: ``drop_last`` then leaves no file unread."""
    size = next((b for b in range(16, 3, -1) if n_train % b == 0), None)
    assert size, f"no batch size in 4..16 divides the {n_train} training studies"
    return size


def _data(manifest: Path, batch_size: int, preload: bool, workers: int) -> list[str]:
    return ["--data", "medvl.datamodules.ManifestDataModule", "--data.manifest", str(manifest),
            "--data.img_size", str(IMG_SIZE), "--data.batch_size", str(batch_size), "--data.augment", "false",
            "--data.preload", str(preload).lower(), "--data.num_workers", str(workers)]


def _trainer(root: Path, epochs: int) -> list[str]:
    return ["--trainer.accelerator", "cpu", "--trainer.max_epochs", str(epochs), "--trainer.log_every_n_steps", "1",
            "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root)]


def _segments(text: str, n: int) -> list[str]:
    parts = text.split("=== command ")
    return [next(p for p in parts if p.startswith(f"{i}\n")) for i in range(n)]


def _check_summary(health_file: Path, log: str, fn: str, expected: dict[str, dict[str, str]], *, preload: bool,
                   epochs: int) -> None:
    health = json.loads(health_file.read_text())
    assert health["fn"] == fn and set(health["stages"]) == set(expected)
    for split, files in expected.items():
        stage = health["stages"][split]
        assert stage["files"] == files, f"{fn} {split}: counted {stage['files']}, expected {files}"
        assert stage["unreadable_files"] == len(files)
        assert stage["by_reason"] == dict(Counter(files.values()))
        assert stage["dropped_at_setup"] == (len(files) if preload else 0)
        assert stage["skipped_samples"] == (0 if preload else len(files) * epochs)
        # The console block: the counts by reason and the file names.
        setup = f", {len(files)} dropped at set-up" if preload else ""
        assert f"  {split}: {len(files)} unreadable file(s){setup}, " in log
        for reason, n in Counter(files.values()).items():
            assert f"    {n} x {reason}\n" in log
        assert f"    first: {', '.join(stage['files'])}" in log
        if not preload:  # counted by reason per epoch too
            assert log.count(f"{split}: skipped {len(files)} unreadable sample(s) this epoch; by reason: ") == epochs
    assert f"run health ({fn}): unreadable files and skipped samples, by stage\n" in log


def _metrics(run: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(run.rglob("metrics.csv")):
        rows += list(csv.DictReader(path.open()))
    return rows


def test_a_tenth_of_bad_files_costs_exactly_those_samples(dataset, tmp_path):
    expected, manifest, n = dataset["expected"], dataset["manifest"], dataset["n"]
    batch = _batch_size(n["train"])
    lazy, eager, cache = tmp_path / "lazy", tmp_path / "eager", tmp_path / "cache"
    commands = [
        # Decoded per sample (in two loader workers for the fit), 2 epochs: each bad file is met once an epoch.
        {"argv": ["fit", *MODEL, *_data(manifest, batch, False, 2), *_trainer(lazy, EPOCHS)]},
        {"argv": ["test", *MODEL, *_data(manifest, batch, False, 0), *_trainer(lazy, 1), "--ckpt_path", "{ckpt}"],
         "ckpt_from": str(lazy)},
        # Preloaded in the main process: the bad files are dropped at set-up.
        {"argv": ["fit", *MODEL, *_data(manifest, batch, True, 0), *_trainer(eager, 1)]},
        {"argv": ["test", *MODEL, *_data(manifest, batch, True, 0), *_trainer(eager, 1)]},
        {"argv": ["prepare", str(manifest), "--out", str(cache), "--img-size", str(IMG_SIZE), "--workers", "0"]},
    ]
    env = {**os.environ, "RUST_BACKTRACE": "0", "OMP_NUM_THREADS": "1", "MEDVL_DEBUG": ""}
    done = run_python(["-c", SCRIPT, json.dumps(commands)], timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    out, err = _segments(done.stdout, len(commands)), _segments(done.stderr, len(commands))
    train_val = {s: expected[s] for s in ("train", "val")}

    # Without preloading: skipped while loading, counted once per epoch and once per file in the summary.
    _check_summary(next(lazy.rglob("run_health_fit.json")), err[0], "fit", train_val, preload=False, epochs=EPOCHS)
    _check_summary(next(lazy.rglob("run_health_test.json")), err[1], "test", {"test": expected["test"]},
                   preload=False, epochs=1)
    rows = _metrics(lazy)
    per_epoch = {k: [float(r[k]) for r in rows if r.get(k)] for k in ("train/skipped_samples", "val/skipped_samples",
                                                                       "test/skipped_samples")}
    assert per_epoch == {"train/skipped_samples": [len(expected["train"])] * EPOCHS,
                         "val/skipped_samples": [len(expected["val"])] * EPOCHS,
                         "test/skipped_samples": [len(expected["test"])]}
    # The model trained on the good samples: a finite loss at every step of both epochs.
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == EPOCHS * n["train"] // batch and all(math.isfinite(v) for v in losses)

    # Preloaded: dropped at set-up, named in the same summary, the rest trains.
    _check_summary(next(eager.rglob("run_health_fit.json")), err[2], "fit", train_val, preload=True, epochs=1)
    _check_summary(next(eager.rglob("run_health_test.json")), err[3], "test", {"test": expected["test"]},
                   preload=True, epochs=1)
    losses = [float(r["train/loss"]) for r in _metrics(eager) if r.get("train/loss")]
    assert len(losses) == (n["train"] - len(expected["train"])) // batch and all(map(math.isfinite, losses))

    # medvl prepare: the cache holds every good study; the bad files are named and counted by reason.
    every = {f: r for files in expected.values() for f, r in files.items()}
    assert f"{len(every)} skipped (" in out[4]
    for reason, count in Counter(every.values()).items():
        assert f"{reason}: {count}" in out[4]
    named = {line.split("skipping ", 1)[1].split(" (study ")[0] for line in err[4].splitlines() if "skipping " in line}
    assert named == set(every)
    info = json.loads((cache / "cache.json").read_text())
    assert info["n_cached"] == N_STUDIES - len(every) and info["skipped"] == dict(Counter(every.values()))

    # No identifying header value of the damaged or the good files reaches the console or the run's files.
    secrets = dataset["secrets"]
    assert secrets
    for text in (done.stdout, done.stderr):
        assert not [s for s in secrets if s in text]
    for path in [*lazy.rglob("*"), *eager.rglob("*"), *cache.rglob("*")]:
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv", ".yaml", ".ckpt"):
            blob = path.read_bytes()
            assert not [s for s in secrets if s.encode() in blob], path


def test_ddp_ranks_add_up_their_skips_into_one_summary(dataset, tmp_path):
    """Two CPU ranks (gloo): each counts what it met, the summary holds both ranks' files once,
    and the validation epoch ends although the ranks hold different numbers of scored samples."""
    from tests._multiprocess import _default_env

    expected, run = dataset["expected"], tmp_path / "ddp"
    batch = _batch_size(dataset["n"]["train"] // 2)  # per rank
    args = ["-m", "medvl.cli", "fit", *MODEL, *_data(dataset["manifest"], batch, False, 0), *_trainer(run, 1),
            "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    env = {**os.environ, **_default_env(), "RUST_BACKTRACE": "0"}
    done = run_python(args, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    _check_summary(next(run.rglob("run_health_fit.json")), done.stderr, "fit",
                   {s: expected[s] for s in ("train", "val")}, preload=False, epochs=1)
    assert done.stderr.count("run health (fit)") == 1  # rank zero
    rows = _metrics(run)
    assert [float(r["val/skipped_samples"]) for r in rows if r.get("val/skipped_samples")] == [len(expected["val"])]
