"""Classifier: linear probe and fine-tune from an exported encoder, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medvl.cli import main
from medvl.models import Classifier

TRAINER = ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
           "--trainer.enable_progress_bar", "false", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]


def _trainer(root: Path) -> list[str]:
    return [*TRAINER, "--trainer.default_root_dir", str(root), "--trainer.logger.save_dir", str(root)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, make_synthetic) -> tuple[Path, Path]:
    """A tiny synthetic dataset and the encoder a tiny contrastive run exported from it."""
    tmp = tmp_path_factory.mktemp("probe")
    data = make_synthetic(80, 5)
    run = tmp / "clip"
    main(["fit", "--model", "medvl.models.ContrastivePretraining", "--model.vision_encoder", "test_vitc_tiny_patch8",
          "--model.text_encoder", "test_text_tiny", "--model.img_size", "32", "--model.embed_dim", "16",
          "--model.image_mean", "0.4", "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(data),
          "--data.img_size", "32", "--data.batch_size", "8", *_trainer(run)])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    assert main(["export", str(ckpt), "--out", str(tmp / "export")]) == 0
    return data, tmp / "export"


def _fit(data: Path, export: Path, run: Path, mode: str) -> Path:
    main(["fit", "--model", "medvl.models.Classifier", "--model.pretrained", str(export), "--model.mode", mode,
          "--model.lr", "1e-2", "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(data),
          "--data.img_size", "32", "--data.batch_size", "8", *_trainer(run)])
    return sorted(run.rglob("*.ckpt"))[-1]


def test_linear_probe_keeps_encoder_and_reports_auroc(exported, tmp_path, capsys):
    data, export = exported
    ckpt = _fit(data, export, tmp_path / "run", "linear")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = state["hyper_parameters"]
    # Architecture and preprocessing were taken from the export, not the defaults.
    assert (hp["vision_encoder"], hp["img_size"], hp["image_mean"]) == ("test_vitc_tiny_patch8", 32, 0.4)
    exported_weights = load_file(str(export / "model.safetensors"))
    for name, value in exported_weights.items():  # frozen, BatchNorm statistics included
        torch.testing.assert_close(state["state_dict"][f"visual.{name}"], value, rtol=0, atol=0)
    assert state["state_dict"]["head.weight"].abs().max() > 0.02  # the head moved from its N(0, 0.01) init

    main(["test", "--model", "medvl.models.Classifier", "--model.pretrained", str(export),
          "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(data), "--data.img_size", "32",
          *_trainer(tmp_path / "run"), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    assert "mean AUROC:" in out
    metrics = json.loads(next((tmp_path / "run").rglob("test_metrics.json")).read_text())
    assert set(metrics) >= {"auroc/cardiomegaly", "auroc/nodule", "auroc_mean"}
    from medvl.data.dataset import read_manifest

    test_rows = read_manifest(data / "manifest.jsonl", split="test")
    defined = 0
    for name in ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "nodule", "support_device"):
        values = {r["labels"][name] for r in test_rows}
        if {0, 1} <= values:  # AUROC is defined only with both classes present
            assert 0.0 <= metrics[f"auroc/{name}"] <= 1.0
            defined += 1
        else:
            assert metrics[f"auroc/{name}"] != metrics[f"auroc/{name}"]  # NaN
    assert defined >= 1 and 0.0 <= metrics["auroc_mean"] <= 1.0
    assert next((tmp_path / "run").rglob("roc_curves.png")).stat().st_size > 1000

    # A probe checkpoint follows the export contract, so it exports again.
    assert main(["export", str(ckpt), "--out", str(tmp_path / "again")]) == 0
    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert again.keys() == exported_weights.keys()


def test_finetune_moves_the_encoder(exported, tmp_path):
    data, export = exported
    ckpt = _fit(data, export, tmp_path / "run", "finetune")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    before = load_file(str(export / "model.safetensors"))
    assert not torch.equal(state["visual.blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    # The checkpoint reloads without the export folder (resolved hyper-parameters suffice).
    module = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True, pretrained=str(tmp_path / "gone"))
    torch.testing.assert_close(module.visual.blocks[0].attn.qkv.weight, state["visual.blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize(("policy", "expected_target"), [("ignore", None), ("ones", 1.0), ("zeros", 0.0)])
def test_uncertain_label_policies(policy, expected_target):
    m = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a", "b"], uncertain=policy)
    logits = torch.tensor([[0.3, -1.2]])
    labels = torch.tensor([[1.0, -1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    if expected_target is None:
        want = bce(logits[:, :1], labels[:, :1])
    else:
        want = bce(logits, torch.tensor([[1.0, expected_target]]))
    torch.testing.assert_close(m.loss(logits, labels), want)


def test_linear_mode_keeps_encoder_in_eval():
    m = Classifier(vision_encoder="test_vitc_tiny_patch8", img_size=32, mode="linear").train()
    assert m.training and m.head.training and not m.visual.training
    assert not any(p.requires_grad for p in m.visual.parameters())


def test_compile_flag_keeps_parameter_names_and_outputs():
    torch.manual_seed(0)
    eager = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, mode="finetune").eval()
    compiled = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, mode="finetune", compile=True).eval()
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    compiled.load_state_dict(eager.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x)["logits"], eager(x)["logits"], rtol=1e-4, atol=1e-5)
