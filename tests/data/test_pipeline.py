"""One image pipeline: the dataset path, the cache path and an exported encoder give the same input tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import torch

from medvl.data.cache import CacheReader, CacheSpec, build_cache, read_cache_manifest
from medvl.data.dataset import ImageReportDataset
from medvl.data.dicom import DicomReadError
from medvl.data.pipeline import ImagePipeline

MEAN, STD, SIZE = 0.45, 0.22, 48


def _records(files: list[Path]) -> list[dict]:
    return [{"study_id": f"s{i}", "image": f.name, "split": "test", "report": "r"} for i, f in enumerate(files)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """Real DICOM files of pydicom and pydicom-data: a chest CR, MONOCHROME1, 8/16 bit, RGB, JPEG 2000."""
    out = tmp_path_factory.mktemp("corpus")
    files = []
    for name in ("RG1_UNCR.dcm", "MR_small.dcm", "CT_small.dcm", "SC_rgb.dcm", "US1_J2KR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"):
        src = Path(pydicom.data.get_testdata_file(name))
        (out / name).write_bytes(src.read_bytes())
        files.append(out / name)
    return files


@pytest.mark.parametrize("in_chans", [1, 3])
def test_dataset_cache_and_export_give_the_same_tensor(corpus, tmp_path, in_chans):
    import medvl

    pipeline = ImagePipeline(SIZE, in_chans, mean=MEAN, std=STD)
    rows = _records(corpus)
    dataset = ImageReportDataset(rows, corpus[0].parent, pipeline=pipeline, label_names=[])

    spec = CacheSpec.for_pipeline(pipeline, dtype="uint16")
    summary = build_cache(rows, corpus[0].parent, tmp_path / "cache", spec, num_workers=0, progress=False)
    assert summary.n_cached == len(rows)
    cached = ImageReportDataset(read_cache_manifest(tmp_path / "cache"), cache=CacheReader(tmp_path / "cache"),
                                pipeline=pipeline, label_names=[])

    # The export records the data pipeline's preprocessing; load_encoder attaches its torch-only twin.
    encoder = medvl.create_encoder("test_vit_tiny_patch8", img_size=SIZE, in_chans=in_chans)
    export = medvl.export_encoder(encoder, tmp_path / "export", formats=(), image_mean=MEAN, image_std=STD)
    loaded = medvl.load_encoder(export)
    assert loaded.pretrained_cfg["mean"] == MEAN and loaded.pretrained_cfg["std"] == STD

    for i, path in enumerate(corpus):
        x = dataset[i]["image"]  # (C, S, S), normalised
        assert x.shape == (in_chans, SIZE, SIZE) and x.dtype == torch.float32
        assert x.min() < 0 < x.max(), path.name  # normalised, not [0, 1]
        torch.testing.assert_close(loaded.preprocess(path)[0], x, rtol=0, atol=0)  # bit for bit
        # uint16 shards: half a quantisation step, divided by the std
        torch.testing.assert_close(cached[i]["image"], x, rtol=0, atol=0.5 / 65535 / STD + 1e-6)
        with torch.no_grad():
            features = loaded.forward_head(loaded.forward_features(x[None]), pre_logits=True)
        torch.testing.assert_close(loaded.encode(path), features, rtol=0, atol=0)


def test_augmentation_runs_between_the_prefix_and_the_normalisation(corpus):
    plain = ImagePipeline(SIZE, mean=0.0, std=1.0)
    train = ImagePipeline(SIZE, mean=0.0, std=1.0, augment=True)
    prefix = plain.load(corpus[0])
    np.testing.assert_array_equal(prefix, train.load(corpus[0]))  # the cached part is deterministic
    torch.testing.assert_close(plain.finish(prefix), torch.from_numpy(prefix))
    outs = [train.finish(prefix) for _ in range(4)]
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outs)  # clipped back before normalising
    assert any(not torch.equal(o, torch.from_numpy(prefix)) for o in outs)


def test_bad_input_names_the_file_and_settings_are_checked(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM" * 8)
    with pytest.raises(DicomReadError, match="broken.dcm"):
        ImagePipeline(SIZE).load(bad)  # not wrapped in MONAI's RuntimeError
    with pytest.raises(ValueError, match="2 values for a 1-channel"):
        ImagePipeline(SIZE, mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="std must be > 0"):
        ImagePipeline(SIZE, std=0.0)
