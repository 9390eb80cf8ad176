"""ReportGeneration end to end through the CLI (both decoders, staged LM training, test and predict), and the
task's own rules (pretrained encoders and their preprocessing, optimiser groups, tokens from the loader)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medvl.cli import main
from medvl.models import ReportGeneration
from tests.heads.test_report_decoder import make_tiny_lm

TRAINER = ["--trainer.accelerator", "cpu", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
           "--trainer.enable_progress_bar", "false", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger"]


def _trainer(root: Path, epochs: int = 1) -> list[str]:
    return [*TRAINER, "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(root),
            "--trainer.logger.save_dir", str(root)]


@pytest.fixture(scope="module")
def dataset(make_synthetic) -> Path:
    return make_synthetic(40, 9)


def _data(root: Path) -> list[str]:
    return ["--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(root), "--data.img_size", "32",
            "--data.batch_size", "8", "--data.text_key", "impression"]


MODEL = ["--model", "medvl.models.ReportGeneration", "--model.vision_encoder", "test_vit_tiny_patch8",
         "--model.max_length", "24", "--model.num_beams", "2"]


def test_transformer_decoder_fit_test_predict(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    model = [*MODEL, "--model.decoder_kwargs", '{"dim": 32, "depth": 1, "num_heads": 2, "memory_slots": 16, "memory_topk": 4}']
    main(["fit", *model, *_data(dataset), *_trainer(run)])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    vocab = state["hyper_parameters"]["vocab"]
    assert vocab[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and "effusion" in vocab
    main(["test", *model, *_data(dataset), *_trainer(run), "--ckpt_path", str(ckpt)])
    assert "Report generation (test split" in capsys.readouterr().out
    metrics = json.loads(next(run.rglob("test_metrics.json")).read_text())
    for key in ("bleu1", "bleu4", "meteor", "rougeL", "cider", "ce_micro_f1", "ce_macro_f1"):
        assert key in metrics and metrics[key] == metrics[key]
    rows = [json.loads(line) for line in next(run.rglob("test_reports.jsonl")).read_text().splitlines()]
    assert rows and set(rows[0]) == {"study_id", "generated", "reference"}
    assert next(run.rglob("test_metrics.md")).read_text().startswith("| metric | value |")

    main(["predict", *model, *_data(dataset), *_trainer(run), "--ckpt_path", str(ckpt)])
    preds = [json.loads(line) for line in next(run.rglob("predictions.jsonl")).read_text().splitlines()]
    assert preds and all(set(p) == {"study_id", "report"} for p in preds)
    # Reloads from the checkpoint alone (vocabulary in the hyper-parameters) and generates.
    module = ReportGeneration.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    texts = module.generate(torch.rand(2, 1, 32, 32), decoding="greedy")
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # Its encoder exports like any task's, with the same features.
    assert main(["export", str(ckpt), "--out", str(tmp_path / "export"), "--formats", "torchscript"]) == 0
    import medvl

    encoder = medvl.load_encoder(tmp_path / "export")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder.forward_features(x), module.model.visual.forward_features(x))


def test_prefix_lm_two_stages(dataset, tmp_path):
    lm = make_tiny_lm(tmp_path / "lm")
    run = tmp_path / "run"
    model = [*MODEL, "--model.decoder", "prefix_lm", "--model.lm_path", str(lm), "--model.lm_stage1_epochs", "1",
             "--model.decoder_kwargs", '{"num_prefix_tokens": 4}', "--model.decoding", "greedy"]
    main(["fit", *model, *_data(dataset), *_trainer(run, epochs=1)])
    after_stage1 = torch.load(sorted(run.rglob("*.ckpt"))[-1], map_location="cpu", weights_only=True)["state_dict"]
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(lm).state_dict()
    key = "transformer.h.0.attn.c_attn.weight"
    torch.testing.assert_close(after_stage1[f"model.decoder.lm.{key}"], original[key])  # stage 1: LM frozen
    run2 = tmp_path / "run2"
    main(["fit", *model, *_data(dataset), *_trainer(run2, epochs=2)])
    after_stage2 = torch.load(sorted(run2.rglob("*.ckpt"))[-1], map_location="cpu", weights_only=True)["state_dict"]
    assert not torch.equal(after_stage2[f"model.decoder.lm.{key}"], original[key])  # stage 2: LM trained
    assert not torch.equal(after_stage2["model.decoder.projector.0.weight"], after_stage1["model.decoder.projector.0.weight"])


@pytest.mark.parametrize("fc_norm", [False, True])
def test_partial_freeze_trains_last_blocks_and_the_final_norm(fc_norm):
    module = ReportGeneration(vision_encoder="test_vit_tiny_gap_patch8", img_size=32, freeze="partial",
                              unfreeze_last=1, vision_kwargs={"fc_norm": fc_norm},
                              vocab=["<pad>", "<bos>", "<eos>", "<unk>"])
    final = module.model.visual.fc_norm if fc_norm else module.model.visual.norm
    assert all(p.requires_grad for p in final.parameters()) and any(True for _ in final.parameters())
    assert all(p.requires_grad for p in module.model.visual.blocks[-1].parameters())
    assert not any(p.requires_grad for p in module.model.visual.blocks[0].parameters())


# -- the task without the CLI -----------------------------------------------------------

VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", "no", "effusion", "."]
TINY_DECODER = {"dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    import medvl

    torch.manual_seed(0)
    encoder = medvl.create_encoder("test_vit_tiny_patch8", img_size=32, in_chans=1)
    out = tmp_path_factory.mktemp("export") / "tiny"
    return medvl.export_encoder(encoder, out, formats=(), image_mean=0.4, image_std=0.3)


def test_pretrained_export_gives_encoder_weights_and_data_settings(tiny_export):
    from safetensors.torch import load_file

    module = ReportGeneration(pretrained=str(tiny_export), vocab=VOCAB, decoder_kwargs=TINY_DECODER)
    hp = module.hparams
    assert (hp.vision_encoder, hp.img_size, hp.in_chans) == ("test_vit_tiny_patch8", 32, 1)
    assert (hp.image_mean, hp.image_std) == (0.4, 0.3)
    for name, value in load_file(str(tiny_export / "model.safetensors")).items():
        torch.testing.assert_close(module.model.visual.state_dict()[name], value, rtol=0, atol=0)
    # Agreeing data settings are fine; disagreeing ones name both values.
    ReportGeneration(pretrained=str(tiny_export), img_size=32, image_mean=0.4, vocab=VOCAB, decoder_kwargs=TINY_DECODER)
    with pytest.raises(ValueError, match=r"img_size 64 given, 32 recorded"):
        ReportGeneration(pretrained=str(tiny_export), img_size=64, vocab=VOCAB, decoder_kwargs=TINY_DECODER)
    with pytest.raises(ValueError, match=r"mean 0.5 given, 0.4 recorded"):
        ReportGeneration(pretrained=str(tiny_export), image_mean=0.5, vocab=VOCAB, decoder_kwargs=TINY_DECODER)
    # Extra encoder overrides rebuild the encoder around the same weights.
    module = ReportGeneration(pretrained=str(tiny_export), vision_kwargs={"drop_path_rate": 0.1}, vocab=VOCAB,
                              decoder_kwargs=TINY_DECODER)
    assert module.hparams.vision_kwargs["drop_path_rate"] == 0.1
    for name, value in load_file(str(tiny_export / "model.safetensors")).items():
        torch.testing.assert_close(module.model.visual.state_dict()[name], value, rtol=0, atol=0)


def test_defaults_without_pretrained_and_no_weights_reader_left():
    import medvl.models.report as report

    module = ReportGeneration(vision_encoder="test_vit_tiny_patch8", vocab=VOCAB, decoder_kwargs=TINY_DECODER)
    hp = module.hparams
    assert (hp.img_size, hp.in_chans, hp.image_mean, hp.image_std, hp.window) == (224, 1, 0.5, 0.25, None)
    assert not hasattr(report, "load_encoder_weights")


def _optimiser(module):
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)  # configure_optimizers asks for the step count
    return module.configure_optimizers()["optimizer"]


def test_optimiser_groups_encoder_lr_and_frozen_parts():
    module = ReportGeneration(vision_encoder="test_vit_tiny_patch8", img_size=32, freeze="partial", unfreeze_last=1,
                              vocab=VOCAB, decoder_kwargs=TINY_DECODER, lr=1e-3, encoder_lr_scale=0.1)
    opt = _optimiser(module)
    ids = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    visual = dict(module.model.visual.named_parameters())
    assert all(ids[id(p)] == pytest.approx(1e-4) for p in visual.values() if p.requires_grad)
    assert not any(id(p) in ids for p in visual.values() if not p.requires_grad)  # frozen: never trained
    assert all(ids[id(p)] == pytest.approx(1e-3) for p in module.model.decoder.parameters())
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(module.model.decoder.pos)] == 0.0 and decay[id(module.model.decoder.embed.weight)] == 0.0


def test_staged_lm_stays_in_the_optimiser(tmp_path):
    lm = make_tiny_lm(tmp_path / "lm")
    module = ReportGeneration(vision_encoder="test_vit_tiny_patch8", img_size=32, freeze="all", decoder="prefix_lm",
                              lm_path=str(lm), decoder_kwargs={"num_prefix_tokens": 4})
    assert not any(p.requires_grad for p in module.model.decoder.lm.parameters())
    opt = _optimiser(module)
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in ids for p in module.model.decoder.lm.parameters())  # unfrozen at stage 2
    assert not any(id(p) in ids for p in module.model.visual.parameters())
    tok = pickle.loads(pickle.dumps(module.tokenizers()["report"]))
    assert tok(["no effusion ."])["input_ids"][0, 0] == tok.bos_id


def test_steps_use_the_loader_tokens():
    module = ReportGeneration(vision_encoder="test_vit_tiny_patch8", img_size=32, vocab=VOCAB,
                              decoder_kwargs={**TINY_DECODER, "dropout": 0.0}).eval()
    tokenizer = pickle.loads(pickle.dumps(module.tokenizers()["report"]))
    image = torch.randn(2, 1, 32, 32)
    reports = ["no effusion.", "effusion."]
    with torch.no_grad():
        loss = module.training_step({"image": image, "report": ["x", "y"], "report_tokens": tokenizer(reports)}, 0)
        expected = module.loss_fn(**module.model(image, reports))
    torch.testing.assert_close(loss, expected)


def test_vocabulary_waits_for_setup():
    module = ReportGeneration(vision_encoder="test_vit_tiny_patch8", img_size=32, decoder_kwargs=TINY_DECODER)
    assert module.tokenizers() == {}
    module.trainer = SimpleNamespace(datamodule=SimpleNamespace(train_texts=lambda: ["no effusion."] * 3))
    module.setup("fit")
    vocab = module.hparams.vocab
    assert sorted(vocab) == sorted(VOCAB) and module.tokenizers()["report"].vocab == vocab == module.model.vocab
