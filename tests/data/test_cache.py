"""The preprocessed cache: equality with the uncached path, resume, atomicity, refusal, workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medvl.data.cache import (
    CacheMismatchError,
    CacheReader,
    CacheSpec,
    build_cache,
    is_complete,
    read_cache_manifest,
)
from medvl.data.dataset import ImageReportDataset, collate_samples, read_manifest
from medvl.data.labels import FINDINGS
from medvl.data.pipeline import ImagePipeline
from medvl.data.synth import generate_dataset


def _cached(cache_dir, rows, pipeline=None):
    reader = CacheReader(cache_dir)
    pipeline = pipeline or reader.spec.pipeline()
    return ImageReportDataset(rows, cache=reader, pipeline=pipeline, label_names=FINDINGS)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n=14, seed=3, workers=1, progress=False)
    # One truncated file: the cache must skip and count it, not store zeros as an image.
    bad = root / read_manifest(root / "manifest.jsonl")[4]["image"]
    bad.write_bytes(bad.read_bytes()[:2000])
    return root


def _records(root: Path) -> list[dict]:
    return read_manifest(root / "manifest.jsonl")


def test_cache_matches_uncached_pipeline(synth, tmp_path):
    spec = CacheSpec(img_size=48, dtype="uint16", shard_size=5)
    summary = build_cache(_records(synth), synth, tmp_path / "c", spec, num_workers=0, progress=False)
    assert (summary.n_items, summary.n_cached, summary.n_shards) == (14, 13, 3)
    assert sum(summary.skipped.values()) == 1 and "truncated" in next(iter(summary.skipped))
    rows = read_cache_manifest(tmp_path / "c")
    assert len(rows) == 13
    bad_id = _records(synth)[4]["study_id"]
    assert bad_id not in {r["study_id"] for r in rows}
    pipeline = ImagePipeline(48, mean=0.5, std=0.25)
    ds = _cached(tmp_path / "c", rows, pipeline)
    ref = ImageReportDataset(
        [r for r in _records(synth) if r["study_id"] != bad_id], synth, pipeline=pipeline, label_names=FINDINGS
    )
    for i in range(len(rows)):
        got, want = ds[i], ref[i]
        assert got["study_id"] == want["study_id"]
        assert got["report"] == want["report"]
        torch.testing.assert_close(got["labels"], want["labels"])
        # uint16 quantisation: at most half a step of 1/65535, divided by the std.
        np.testing.assert_allclose(got["image"].numpy(), want["image"].numpy(), atol=0.5 / 65535 / 0.25 + 1e-6)
    # No source path in the cache manifest, only its hash.
    assert all("image" not in r and len(r["source_sha256"]) == 64 for r in rows)


def test_uint8_quantisation_and_sample_values(synth, tmp_path):
    spec = CacheSpec(img_size=32, dtype="uint8", shard_size=100)
    build_cache(_records(synth)[:3], synth, tmp_path, spec, num_workers=0, progress=False)
    arr = np.load(tmp_path / "shard_00000.npy")
    assert arr.dtype == np.uint8 and arr.shape == (3, 1, 32, 32)
    want = spec.pipeline().load(synth / _records(synth)[0]["image"])  # the pipeline's deterministic prefix
    np.testing.assert_allclose(arr[0] / 255.0, want, atol=0.5 / 255 + 1e-6)
    assert arr[0].std() > 10  # a real image, not a blank


def test_resume_rebuilds_only_missing_shards(synth, tmp_path):
    spec = CacheSpec(img_size=32, shard_size=4)
    first = build_cache(_records(synth), synth, tmp_path, spec, num_workers=0, progress=False)
    assert first.shards_built == 4
    # Simulate an interruption: shard 2's status never got written, cache.json neither.
    (tmp_path / "shard_00002.json").unlink()
    (tmp_path / "cache.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard_*.npy")}
    again = build_cache(_records(synth), synth, tmp_path, spec, num_workers=0, progress=False)
    assert again.shards_built == 1 and again.n_cached == first.n_cached
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard_*.npy")}
    assert [n for n in before if before[n] != after[n]] == ["shard_00002.npy"]
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"
    assert is_complete(tmp_path, spec)


def test_refuses_other_parameters_and_sources(synth, tmp_path):
    build_cache(_records(synth)[:4], synth, tmp_path, CacheSpec(img_size=32), num_workers=0, progress=False)
    with pytest.raises(CacheMismatchError, match="built with"):
        build_cache(_records(synth)[:4], synth, tmp_path, CacheSpec(img_size=64), num_workers=0, progress=False)
    with pytest.raises(CacheMismatchError, match="different list of images"):
        build_cache(_records(synth)[:5], synth, tmp_path, CacheSpec(img_size=32), num_workers=0, progress=False)
    assert not is_complete(tmp_path, CacheSpec(img_size=64))


def test_parallel_build_equals_serial(synth, tmp_path):
    spec = CacheSpec(img_size=32, shard_size=5)
    build_cache(_records(synth), synth, tmp_path / "serial", spec, num_workers=0, progress=False)
    build_cache(_records(synth), synth, tmp_path / "pool", spec, num_workers=2, progress=False)
    for shard in sorted((tmp_path / "serial").glob("shard_*.npy")):
        np.testing.assert_array_equal(np.load(shard), np.load(tmp_path / "pool" / shard.name))
    assert (tmp_path / "serial" / "manifest.jsonl").read_bytes() == (tmp_path / "pool" / "manifest.jsonl").read_bytes()


def test_worker_processes_read_the_same_samples(synth, tmp_path):
    spec = CacheSpec(img_size=32, shard_size=4)
    build_cache(_records(synth), synth, tmp_path, spec, num_workers=0, progress=False)
    ds = _cached(tmp_path, read_cache_manifest(tmp_path))
    ds.load_image(0)  # open a memory map in the parent: it must not be pickled into workers
    single = [b for b in DataLoader(ds, batch_size=5, collate_fn=collate_samples)]
    multi = [b for b in DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate_samples)]
    for a, b in zip(single, multi, strict=True):
        assert a["study_id"] == b["study_id"]
        torch.testing.assert_close(a["image"], b["image"])


def test_datamodule_builds_and_reads_cache(synth, tmp_path):
    from medvl.datamodules import ManifestDataModule

    root = tmp_path / "data"
    shutil.copytree(synth, root)
    dm = ManifestDataModule(
        manifest=str(root / "manifest.jsonl"), img_size=32, batch_size=4, augment=False,
        cache_dir=str(tmp_path / "cache"), cache_workers=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32)
    info = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert info["n_cached"] == 13
    # Another size with the same folder is refused, not silently mixed.
    other = ManifestDataModule(
        manifest=str(root / "manifest.jsonl"), img_size=48, cache_dir=str(tmp_path / "cache"), cache_workers=0
    )
    with pytest.raises(CacheMismatchError):
        other.prepare_data()


def test_a_cache_of_other_preprocessing_is_refused(synth, tmp_path):
    build_cache(_records(synth)[:3], synth, tmp_path, CacheSpec(img_size=32), num_workers=0, progress=False)
    with pytest.raises(CacheMismatchError, match="pipeline wants size 48"):
        _cached(tmp_path, read_cache_manifest(tmp_path), ImagePipeline(48))
    with pytest.raises(CacheMismatchError, match="3 channel"):
        _cached(tmp_path, read_cache_manifest(tmp_path), ImagePipeline(32, in_chans=3))


def test_three_channel_cache_replicates_grey(synth, tmp_path):
    spec = CacheSpec(img_size=32, in_chans=3)
    build_cache(_records(synth)[:2], synth, tmp_path, spec, num_workers=0, progress=False)
    arr = np.load(tmp_path / "shard_00000.npy")
    assert arr.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(arr[:, 0], arr[:, 2])
