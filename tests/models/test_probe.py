"""Classifier: linear probe and fine-tune from an exported encoder, through the CLI, and its parts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

import medvl
from medvl.cli import main
from medvl.encoders import create_encoder
from medvl.export import export_encoder
from medvl.losses import MaskedBCELoss
from medvl.models import Classifier
from medvl.networks import ImageClassifier

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
          "--model.text_encoder", "test_text_tiny", "--model.embed_dim", "16",
          "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(data), "--data.image_mean", "0.4",
          "--data.img_size", "32", "--data.batch_size", "8", *_trainer(run)])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    assert main(["export", str(ckpt), "--out", str(tmp / "export")]) == 0
    return data, tmp / "export"


def _fit(data: Path, export: Path, run: Path, mode: str) -> Path:
    main(["fit", "--model", "medvl.models.Classifier", "--model.pretrained", str(export), "--model.mode", mode,
          "--model.lr", "1e-2", "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(data),
          "--data.img_size", "32", "--data.image_mean", "0.4", "--data.batch_size", "8", *_trainer(run)])
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
        torch.testing.assert_close(state["state_dict"][f"model.visual.{name}"], value, rtol=0, atol=0)
    assert state["state_dict"]["model.head.weight"].abs().max() > 0.02  # the head moved from its N(0, 0.01) init

    main(["test", "--model", "medvl.models.Classifier", "--model.pretrained", str(export),
          "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(data), "--data.img_size", "32",
          "--data.image_mean", "0.4", *_trainer(tmp_path / "run"), "--ckpt_path", str(ckpt)])
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

    # A probe checkpoint follows the export contract, so it exports again and loads with torch alone.
    assert main(["export", str(ckpt), "--out", str(tmp_path / "again")]) == 0
    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert again.keys() == exported_weights.keys()
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["task"] == "medvl.models.Classifier" and cfg["projection"] is None
    assert (cfg["preprocessing"]["mean"], cfg["preprocessing"]["std"]) == (0.4, 0.25)
    assert cfg["label_names"] == hp["label_names"]
    encoder = medvl.load_encoder(tmp_path / "again")
    x = torch.randn(2, 1, 32, 32)
    module = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder.forward_head(encoder.forward_features(x), pre_logits=True),
                                   module(x)["image_features"])


def test_finetune_moves_the_encoder(exported, tmp_path):
    data, export = exported
    ckpt = _fit(data, export, tmp_path / "run", "finetune")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    before = load_file(str(export / "model.safetensors"))
    assert not torch.equal(state["model.visual.blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"])
    # The checkpoint reloads without the export folder (resolved hyper-parameters suffice).
    module = Classifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True,
                                             pretrained=str(tmp_path / "gone"))
    torch.testing.assert_close(module.model.visual.blocks[0].attn.qkv.weight,
                               state["model.visual.blocks.0.attn.qkv.weight"])


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> Path:
    """An export of a random tiny encoder, recorded with mean 0.4 / std 0.25 and the lung window."""
    torch.manual_seed(0)
    enc = create_encoder("test_vit_tiny_patch8", img_size=32).eval()
    return export_encoder(enc, tmp_path_factory.mktemp("small") / "export", formats=(), image_mean=0.4,
                          image_std=0.25, window="lung")


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
    torch.testing.assert_close(m.loss_fn(logits, labels), want)
    # the output dict goes in as is; bf16 logits under autocast give the fp32 value
    torch.testing.assert_close(MaskedBCELoss(policy)(logits=logits, labels=labels, image_features=None), want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert MaskedBCELoss(policy)(logits.bfloat16(), labels).dtype == torch.float32


def test_masked_bce_checks_its_input():
    with pytest.raises(ValueError, match="uncertain must be one of"):
        MaskedBCELoss("maybe")
    with pytest.raises(ValueError, match="differ in shape"):
        MaskedBCELoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    assert MaskedBCELoss()(torch.zeros(1, 2), -torch.ones(1, 2)) == 0.0  # nothing labelled


def test_linear_mode_keeps_encoder_in_eval():
    m = Classifier(vision_encoder="test_vitc_tiny_patch8", img_size=32, label_names=["a"], mode="linear").train()
    assert m.training and m.model.head.training and not m.model.visual.training
    assert not any(p.requires_grad for p in m.model.visual.parameters())
    m.model.visual.train()  # as Lightning restores submodule modes one by one after validation
    m(torch.rand(2, 1, 32, 32))
    assert not m.model.visual.training


def test_network_is_plain_torch_and_does_not_normalise():
    net = ImageClassifier(num_classes=3, vision_encoder="test_vit_tiny_patch8", img_size=32).eval()
    x = torch.randn(2, 1, 32, 32)  # already normalised by the data
    with torch.no_grad():
        out = net(x)
        feats = net.visual.forward_head(net.visual.forward_features(x), pre_logits=True)
    assert out["logits"].shape == (2, 3)
    torch.testing.assert_close(out["image_features"], feats)
    m = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a"]).eval()
    assert m.tokenizers() == {}
    with pytest.raises(ValueError, match="no label_names"):
        Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32)


def test_pretrained_fixes_the_data_settings(small_export):
    m = Classifier(pretrained=str(small_export), label_names=["a", "b"])
    hp = m.hparams
    assert (hp.vision_encoder, hp.img_size, hp.in_chans, hp.image_mean, hp.image_std) == (
        "test_vit_tiny_patch8", 32, 1, 0.4, 0.25)
    assert hp.window == "lung"  # as the export recorded it
    encoder = medvl.load_encoder(small_export)
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(m.model.visual.state_dict()[k], v, rtol=0, atol=0)
    # the data module's values, linked by the CLI, agree ...
    Classifier(pretrained=str(small_export), img_size=32, in_chans=1, image_mean=0.4, image_std=[0.25],
               window="lung", label_names=["a"])
    # ... or the pairing fails at start-up, naming both values and the export
    with pytest.raises(ValueError, match=r"img_size 64 given, 32 recorded.*mean 0.5 given, 0.4 recorded") as err:
        Classifier(pretrained=str(small_export), img_size=64, image_mean=0.5, label_names=["a"])
    assert str(small_export) in str(err.value)
    with pytest.raises(ValueError, match="vision_encoder 'test_vitc_tiny_patch8' given"):
        Classifier(pretrained=str(small_export), vision_encoder="test_vitc_tiny_patch8", label_names=["a"])
    with pytest.raises(FileNotFoundError, match="nowhere: no such export folder"):
        Classifier(pretrained=str(small_export.parent / "nowhere"), label_names=["a"])
    # overrides rebuild the encoder and keep the weights
    tuned = Classifier(pretrained=str(small_export), label_names=["a"], mode="finetune",
                       vision_kwargs={"drop_path_rate": 0.1})
    assert tuned.hparams.vision_kwargs["drop_path_rate"] == 0.1
    torch.testing.assert_close(tuned.model.visual.pos_embed, encoder.pos_embed, rtol=0, atol=0)


def test_label_names_come_from_a_pretrained_classifier(tmp_path):
    first = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["x", "y"])
    ckpt = tmp_path / "first.ckpt"
    torch.save({"hyper_parameters": dict(first.hparams), "state_dict": first.state_dict()}, ckpt)
    second = Classifier(pretrained=str(ckpt))
    assert second.label_names == ["x", "y"] and second.model.head.out_features == 2
    assert (second.hparams.image_mean, second.hparams.image_std) == (0.5, 0.25)


def test_optimiser_groups():
    with_trainer = mock.patch.object(Classifier, "trainer", new_callable=mock.PropertyMock,
                                     return_value=SimpleNamespace(estimated_stepping_batches=10))
    ft = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a"], mode="finetune",
                    lr=1e-2, encoder_lr_scale=0.1, weight_decay=0.05)
    with with_trainer:
        opt = ft.configure_optimizers()["optimizer"]
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(by_param) == sum(1 for _ in ft.parameters())  # every parameter, once
    head = by_param[id(ft.model.head.weight)]
    assert head["lr"] == 1e-2 and head["weight_decay"] == 0.05
    assert by_param[id(ft.model.head.bias)]["weight_decay"] == 0.0
    qkv = ft.model.visual.blocks[0].attn.qkv.weight
    assert by_param[id(qkv)]["lr"] == pytest.approx(1e-3) and by_param[id(qkv)]["weight_decay"] == 0.05
    assert by_param[id(ft.model.visual.pos_embed)]["weight_decay"] == 0.0  # named by no_weight_decay()
    lin = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a"], mode="linear")
    with with_trainer:
        opt = lin.configure_optimizers()["optimizer"]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in lin.model.head.parameters()}


def test_compile_flag_keeps_parameter_names_and_outputs():
    torch.manual_seed(0)
    eager = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a"], mode="finetune").eval()
    compiled = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["a"], mode="finetune",
                          compile=True).eval()
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    compiled.load_state_dict(eager.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x)["logits"], eager(x)["logits"], rtol=1e-4, atol=1e-5)
