"""The cache built on first use inside `medvl fit`, with loader workers and build workers, finishes.

A fresh interpreter runs the fit with the torch thread pool already busy (a matmul before
the CLI starts), the condition under which forked build processes used to wait forever;
a hang fails the test at its timeout with the child's output instead of blocking the suite.
"""

from __future__ import annotations

import json

from medvl.data.cache import read_cache_manifest
from tests._multiprocess import run_python

SCRIPT = r"""
import sys, torch
torch.randn(512, 512) @ torch.randn(512, 512)  # the intra-op thread pool is up before any fork
from medvl.cli import main
main(sys.argv[1:])
"""


def test_fit_builds_its_cache_with_workers(make_synthetic, tmp_path):
    dataset = make_synthetic(24, 5)
    cache, run = tmp_path / "cache", tmp_path / "run"
    args = ["fit", "--model", "medvl.models.ContrastivePretraining", "--model.vision_encoder", "test_vit_tiny_patch8",
            "--model.text_encoder", "test_text_tiny", "--model.embed_dim", "16",
            "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(dataset), "--data.img_size", "32",
            "--data.batch_size", "4", "--data.cache_dir", str(cache), "--data.cache_workers", "2",
            "--data.num_workers", "2",
            "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(run)]
    done = run_python(["-c", SCRIPT, *args], timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((cache / "spec.json").read_text())["spec"]["img_size"] == 32
    assert not list(cache.rglob("*.tmp"))
    assert len(read_cache_manifest(cache)) == 24  # every study cached, none lost
    assert sorted(run.rglob("*.ckpt")), "the fit did not finish"
