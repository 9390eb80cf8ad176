"""The same seed gives the same run: augmentation seeded per (seed, epoch, index), seeded loaders, equal weights.

All on the CPU: bitwise equality holds on one machine (see "Determinism" in medvl.data.dataset).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from medvl.cli import main
from medvl.data.dataset import ImageReportDataset, read_manifest
from medvl.data.pipeline import ImagePipeline
from medvl.data.transforms import derive_seed
from medvl.datamodules import SyntheticCXR

SIZE = 32


@pytest.fixture(scope="module")
def synth(make_synthetic) -> Path:
    return make_synthetic(24, 5)


def _scramble_global_rngs() -> None:
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)


def test_augmentation_is_a_pure_function_of_seed_epoch_and_index(synth):
    pipe = ImagePipeline(SIZE, augment=True)
    rows = read_manifest(synth / "manifest.jsonl", split="train")
    prefix = pipe.load(synth / rows[0]["image"])
    a = pipe.finish(prefix, seed=derive_seed(7, 0, 0, 3))
    pipe.finish(prefix)  # an unseeded draw in between changes nothing
    _scramble_global_rngs()  # nor do the global generators
    assert torch.equal(a, pipe.finish(prefix, seed=derive_seed(7, 0, 0, 3)))
    assert torch.equal(a, ImagePipeline(SIZE, augment=True).finish(prefix, seed=derive_seed(7, 0, 0, 3)))
    for other in (derive_seed(7, 0, 1, 3), derive_seed(7, 0, 0, 4), derive_seed(8, 0, 0, 3)):
        assert not torch.equal(a, pipe.finish(prefix, seed=other))

    ds = ImageReportDataset(rows, synth, pipeline=pipe, label_names=[], preload=True, progress=False)
    ds.seed = 7
    first = ds[3]["image"]
    ds[5]
    _scramble_global_rngs()
    assert torch.equal(first, ds[3]["image"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=[5, 3], collate_fn=list)
    assert torch.equal(first, next(iter(loader))[1]["image"])  # the DataLoader's path
    seeds = {ds.augmentation_seed(3), ds.augmentation_seed(4)}
    ds.set_epoch(1)
    seeds |= {ds.augmentation_seed(3)}
    assert len(seeds) == 3
    assert not torch.equal(first, ds[3]["image"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[3]["image"])


def _first_batches(root: Path, num_workers: int, epochs=(0, 1)) -> list[dict]:
    dm = SyntheticCXR(root=str(root), n=24, img_size=SIZE, batch_size=4, num_workers=num_workers, augment=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = []
    for epoch in epochs:  # as Lightning's fit loop does before each epoch; the workers persist
        loader.sampler.set_epoch(epoch)
        batches.append(next(iter(loader)))
    return batches


def test_train_loaders_repeat_bit_for_bit_with_any_worker_count(synth, seeded):
    reference = _first_batches(synth, 0)
    for num_workers in (0, 2):
        for ref, got in zip(reference, _first_batches(synth, num_workers)):
            assert got["study_id"] == ref["study_id"]
            assert torch.equal(got["image"], ref["image"]), f"num_workers={num_workers}"
    epoch0, epoch1 = reference
    assert epoch0["study_id"] != epoch1["study_id"]  # the order follows the epoch


def _fit(dataset: Path, root: Path, seed: int) -> dict[str, torch.Tensor]:
    main([
        "fit", "--seed_everything", str(seed),
        "--model", "medvl.models.ContrastivePretraining",
        "--model.vision_encoder", "test_vit_tiny_patch8", "--model.text_encoder", "test_text_tiny",
        "--model.embed_dim", "16",
        "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(dataset), "--data.n", "24",
        "--data.img_size", str(SIZE), "--data.batch_size", "4", "--data.augment", "true",
        "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
    ])
    ckpts = sorted(root.rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    ckpt = max((torch.load(p, map_location="cpu", weights_only=True) for p in ckpts), key=lambda c: c["global_step"])
    assert ckpt["global_step"] == 4
    return ckpt["state_dict"]


def test_two_fits_with_the_same_seed_and_augmentation_give_equal_weights(synth, tmp_path, seeded):
    a = _fit(synth, tmp_path / "a", seed=11)
    b = _fit(synth, tmp_path / "b", seed=11)
    assert a.keys() == b.keys()
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"weights differ after 4 steps: {unequal[:5]}"
