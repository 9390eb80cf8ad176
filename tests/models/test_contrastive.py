"""End-to-end: synthetic DICOM -> SyntheticCXR -> ContrastivePretraining through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
import torch

from medvl.cli import main
from medvl.data.dataset import read_manifest

TINY_MODEL = [
    "--model", "medvl.models.ContrastivePretraining",
    "--model.vision_encoder", "test_vit_tiny_patch8",
    "--model.text_encoder", "test_text_tiny",
    "--model.img_size", "32",
    "--model.embed_dim", "16",
]


def _trainer_args(root: Path) -> list[str]:
    return [
        "--trainer.accelerator", "cpu",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root),
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(root),
    ]


def _data_args(dataset: Path, **extra: str) -> list[str]:
    args = ["--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(dataset),
            "--data.img_size", "32", "--data.batch_size", "8"]
    for k, v in extra.items():
        args += [f"--data.{k}", v]
    return args


@pytest.fixture(scope="module")
def dataset(make_synthetic) -> Path:
    return make_synthetic(40, 3)


def test_cli_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("fit", "validate", "test", "predict", "synth"):
        assert f"\n  {cmd} " in out


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_fit_then_test_then_export(dataset, tmp_path, loss, capsys):
    run = tmp_path / "run"
    main(["fit", *TINY_MODEL, "--model.loss", loss, *_data_args(dataset), *_trainer_args(run)])
    ckpts = sorted(run.rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=True)  # loads without pickled code
    assert ckpt["global_step"] == 3
    if loss == "siglip":
        assert "logit_bias" in ckpt["state_dict"]

    main(["test", *TINY_MODEL, "--model.loss", loss, *_data_args(dataset), *_trainer_args(run),
          "--ckpt_path", str(ckpts[-1])])
    out = capsys.readouterr().out
    assert "mean zero-shot AUROC:" in out
    metrics_file = next(run.rglob("test_metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    for key in ("auroc/cardiomegaly", "auroc_mean", "i2t_R@1", "t2i_R@10"):
        assert key in metrics
    assert 0.0 <= metrics["i2t_R@1"] <= metrics["i2t_R@5"] <= metrics["i2t_R@10"] <= 1.0
    assert (metrics_file.parent / "roc_curves.png").stat().st_size > 1000

    # The exported encoder reproduces the checkpoint's image features with torch alone.
    import medvl
    from medvl.models import ContrastivePretraining

    export = tmp_path / "export"
    assert main(["export", str(ckpts[-1]), "--out", str(export)]) == 0
    encoder, proj = medvl.load_encoder(export, with_projection=True)
    module = ContrastivePretraining.load_from_checkpoint(ckpts[-1], map_location="cpu", weights_only=True).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected, _ = module.encode_image(x)
        xn = (x - encoder.pretrained_cfg["mean"]) / encoder.pretrained_cfg["std"]
        got = torch.nn.functional.normalize(proj(encoder.forward_head(encoder.forward_features(xn), pre_logits=True)), dim=-1)
    torch.testing.assert_close(got, expected)
    cfg = json.loads((export / "config.json").read_text())
    assert cfg["architecture"] == "test_vit_tiny_patch8" and cfg["encoder_kwargs"]["img_size"] == 32


def _identifying_values(dataset: Path) -> set[str]:
    values = set()
    for path in sorted((dataset / "images").glob("*.dcm"))[:10]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {str(ds.PatientName), str(ds.PatientID), str(ds.AccessionNumber)}
    return {v for v in values if len(v) >= 4}


def test_bad_file_is_skipped_counted_and_no_header_value_leaks(dataset, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    train = [r for r in read_manifest(data / "manifest.jsonl", split="train")]
    victim = data / train[0]["image"]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated mid-header
    run = tmp_path / "run"
    # One batch holds the whole training split, so the bad file is met whatever the order.
    main(["fit", *TINY_MODEL, *_data_args(data, preload="false", batch_size=str(len(train))), *_trainer_args(run),
          "--trainer.limit_train_batches", "1.0", "--trainer.limit_val_batches", "0"])
    out = capsys.readouterr().out
    assert "train: skipped 1 unreadable sample(s) this epoch" in out
    metrics = (next(run.rglob("metrics.csv"))).read_text()
    assert "train/skipped_samples" in metrics

    # No fake patient name, ID or accession number reaches the run's files.
    secrets = _identifying_values(dataset)
    assert secrets
    for path in run.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            leaked = [s for s in secrets if s.encode() in blob]
            assert not leaked, f"{path} contains {leaked}"


def test_ckpt_path_best_in_a_fresh_cli(dataset, tmp_path, capsys):
    """`medvl test --ckpt_path best` after a `medvl fit` in another process finds the recipe's best.ckpt."""
    run = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args:\n"
        f"        dirpath: {run / 'checkpoints'}\n"
        "        filename: best\n"
    )
    args = ["--config", str(recipe), *TINY_MODEL, *_data_args(dataset), *_trainer_args(run)]
    main(["fit", *args])
    assert (run / "checkpoints" / "best.ckpt").is_file()
    capsys.readouterr()
    main(["validate", *args, "--ckpt_path", "best"])
    assert f"--ckpt_path best -> {run / 'checkpoints' / 'best.ckpt'}" in capsys.readouterr().out
