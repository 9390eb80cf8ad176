"""ContrastivePretraining: end to end (synthetic DICOM -> SyntheticCXR -> the task through the CLI),
and the task's own rules (data-linked arguments, label names and prompts, tokens from the loader)."""

from __future__ import annotations

import json
import logging
import pickle
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
        assert "model.logit_bias" in ckpt["state_dict"]
    assert ckpt["hyper_parameters"]["img_size"] == 32  # linked from the data module

    main(["test", *TINY_MODEL, "--model.loss", loss, *_data_args(dataset), *_trainer_args(run),
          "--ckpt_path", str(ckpts[-1])])
    out = capsys.readouterr().out
    assert "mean zero-shot AUROC:" in out
    assert "Test metric" not in out and "DataLoader 0" not in out  # medvl's table only, not Lightning's too
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
        xn = (x - encoder.pretrained_cfg["mean"]) / encoder.pretrained_cfg["std"]  # what the data pipeline does
        expected = module.model.encode_image(xn)
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


def test_bad_file_is_skipped_counted_and_no_header_value_leaks(dataset, tmp_path, caplog):
    import csv

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    train = [r for r in read_manifest(data / "manifest.jsonl", split="train")]
    val = [r for r in read_manifest(data / "manifest.jsonl", split="val")]
    for victim in (data / train[0]["image"], data / train[1]["image"], data / val[0]["image"]):
        victim.write_bytes(victim.read_bytes()[:300])  # truncated mid-header
    run = tmp_path / "run"
    # One batch holds the whole training split, so the bad file is met whatever the order.
    with caplog.at_level(logging.WARNING, logger="medvl"):
        main(["fit", *TINY_MODEL, *_data_args(data, preload="false", batch_size=str(len(train))), *_trainer_args(run),
              "--trainer.limit_train_batches", "1.0", "--trainer.num_sanity_val_steps", "0"])
    # Each split's skips under its own name (validation ends before the training epoch does).
    assert "train: skipped 2 unreadable sample(s) this epoch" in caplog.text
    assert "val: skipped 1 unreadable sample(s) this epoch" in caplog.text
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    logged = {k: float(r[k]) for r in rows for k in ("train/skipped_samples", "val/skipped_samples") if r.get(k)}
    assert logged == {"train/skipped_samples": 2.0, "val/skipped_samples": 1.0}

    # No fake patient name, ID or accession number reaches the run's files.
    secrets = _identifying_values(dataset)
    assert secrets
    for path in run.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            leaked = [s for s in secrets if s.encode() in blob]
            assert not leaked, f"{path} contains {leaked}"


def test_ckpt_path_best_in_a_fresh_cli(dataset, tmp_path, caplog):
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
    with caplog.at_level(logging.INFO, logger="medvl"):
        main(["validate", *args, "--ckpt_path", "best"])
    assert f"--ckpt_path best -> {run / 'checkpoints' / 'best.ckpt'}" in caplog.text



def test_a_checkpoint_of_another_task_is_refused(dataset, tmp_path):
    """A contrastive checkpoint given to a report-generation run stops it, naming both tasks.

    LightningCLI alone would replace the configured class by the checkpoint's and run a
    contrastive test under the report recipe, exiting 0.
    """
    run = tmp_path / "run"
    main(["fit", *TINY_MODEL, *_data_args(dataset), *_trainer_args(run)])
    ckpt = next(run.rglob("*.ckpt"))
    report = ["--model", "medvl.models.ReportGeneration", "--model.vision_encoder", "test_vit_tiny_patch8"]
    with pytest.raises(SystemExit) as e:
        main(["test", *report, *_data_args(dataset), *_trainer_args(run), "--ckpt_path", str(ckpt)])
    msg = str(e.value)
    assert "medvl.models.ContrastivePretraining checkpoint" in msg and "medvl.models.ReportGeneration" in msg
    assert str(ckpt) in msg
    # The matching task still loads it.
    main(["validate", *TINY_MODEL, *_data_args(dataset), *_trainer_args(run), "--ckpt_path", str(ckpt)])


def test_a_record_without_its_text_stops_the_run_naming_file_and_line(dataset, tmp_path):
    """A manifest row without ``report`` is an error (not an empty text trained on), located to its line."""
    rows = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    target = next(i for i, r in enumerate(rows) if r["split"] == "train")
    del rows[target]["report"]
    manifest = dataset / "no_text.jsonl"  # beside the images: its paths are relative to its folder
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        data = ["--data", "medvl.datamodules.ManifestDataModule", "--data.manifest", str(manifest),
                "--data.img_size", "32", "--data.batch_size", "8"]
        with pytest.raises(ValueError, match=rf"no_text\.jsonl:{target + 1}: no 'report' text \(1 of the"):
            main(["fit", *TINY_MODEL, *data, *_trainer_args(tmp_path / "run")])
    finally:
        manifest.unlink()

# -- the task without the CLI -----------------------------------------------------------

def _task(**kw):
    from medvl.models import ContrastivePretraining

    kw = {"vision_encoder": "test_vit_tiny_patch8", "text_encoder": "test_text_tiny", "img_size": 32,
          "embed_dim": 16, **kw}
    return ContrastivePretraining(**kw)


def test_data_settings_default_and_are_saved():
    from medvl.data.labels import FINDINGS

    module = _task(img_size=None)
    hp = module.hparams
    assert (hp.img_size, hp.in_chans, hp.image_mean, hp.image_std, hp.window) == (224, 1, 0.5, 0.25, None)
    assert hp.label_names == list(FINDINGS) and list(module.prompts) == list(FINDINGS)
    assert {k.split(".")[0] for k in module.state_dict()} == {"model"}  # model.visual.*, model.image_proj.*, ...


def test_prompts_follow_the_label_names_by_name():
    from medvl.data.labels import CHEXPERT_LABELS

    module = _task(label_names=list(CHEXPERT_LABELS))
    assert list(module.prompts) == list(CHEXPERT_LABELS) and not module.unscored
    reordered = _task(label_names=["pneumothorax", "my_finding", "cardiomegaly"])
    assert list(reordered.prompts) == ["pneumothorax", "cardiomegaly"]
    assert reordered._label_index == [0, 2] and reordered.unscored == ["my_finding"]
    only = _task(label_names=["pneumothorax", "cardiomegaly"],
                 prompts={"cardiomegaly": {"positive": ["a"], "negative": ["b"]}})
    assert only._label_index == [1]
    with pytest.raises(ValueError, match=r"\['edema'\].*\['pneumothorax', 'cardiomegaly'\]"):
        _task(label_names=["pneumothorax", "cardiomegaly"], prompts={"edema": {"positive": ["a"], "negative": ["b"]}})
    assert _task(label_names=[]).prompts == {}  # captions only: retrieval only


def test_unscored_labels_are_logged_once(caplog):
    with caplog.at_level(logging.WARNING, logger="medvl"):
        _task(label_names=["cardiomegaly", "my_finding"])
    assert caplog.text.count("my_finding") == 1


def test_steps_use_the_loader_tokens_and_check_the_label_width():
    module = _task().eval()
    tokenizer = pickle.loads(pickle.dumps(module.tokenizers()["report"]))
    torch.manual_seed(0)
    image = torch.randn(4, 1, 32, 32)
    reports = ["no effusion", "large effusion", "cardiomegaly", "normal"]
    batch = {"image": image, "report": ["ignored"] * 4, "report_tokens": tokenizer(reports)}
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        expected = module.loss_fn(**module.model(image, reports))
        by_text = module.training_step({"image": image, "report": reports}, 0)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(by_text, expected)
    with pytest.raises(ValueError, match="label columns"):
        module._labels({"image": image, "labels": torch.zeros(4, 3)})


def test_a_checkpoint_with_0d_temperature_loads_and_resumes(dataset, tmp_path):
    # Written by medvl before logit_scale/logit_bias became (1,) parameters (FSDP refuses 0-d ones):
    # 0-d parameters and 0-d AdamW moments for them. Loading reshapes both.
    import lightning as L

    from medvl.datamodules import SyntheticCXR
    from medvl.models import ContrastivePretraining

    def run(max_steps: int, ckpt: Path | None = None) -> tuple[ContrastivePretraining, L.Trainer]:
        task = ContrastivePretraining(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny",
                                      embed_dim=16, img_size=32, loss="siglip")
        trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, limit_val_batches=0, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                            callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)])
        trainer.fit(task, datamodule=SyntheticCXR(root=str(dataset), img_size=32, batch_size=8),
                    ckpt_path=str(ckpt) if ckpt else None)
        return task, trainer

    run(2)
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    for key in ("model.logit_scale", "model.logit_bias"):
        ckpt["state_dict"][key] = ckpt["state_dict"][key].reshape(())
    moments = [s for s in ckpt["optimizer_states"][0]["state"].values() if s["exp_avg"].shape == (1,)]
    assert len(moments) == 2  # the two scalars' AdamW state
    for state in moments:
        state["exp_avg"], state["exp_avg_sq"] = state["exp_avg"].reshape(()), state["exp_avg_sq"].reshape(())
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)

    loaded = ContrastivePretraining.load_from_checkpoint(old, map_location="cpu")
    assert loaded.model.logit_scale.shape == (1,)
    torch.testing.assert_close(loaded.model.logit_scale.reshape(()), ckpt["state_dict"]["model.logit_scale"])
    task, trainer = run(3, ckpt=old)  # resumes: AdamW steps with the reshaped moments
    assert trainer.global_step == 3 and task.model.logit_bias.shape == (1,)
    opt_state = trainer.optimizers[0].state[task.model.logit_scale]
    assert opt_state["exp_avg"].shape == (1,)
