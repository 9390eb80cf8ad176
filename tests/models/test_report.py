"""ReportGeneration end to end through the CLI: both decoders, staged LM training, test and predict."""

from __future__ import annotations

import json
from pathlib import Path

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
         "--model.img_size", "32", "--model.max_length", "24", "--model.num_beams", "2"]


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
        torch.testing.assert_close(encoder.forward_features(x), module.visual.forward_features(x))


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
    torch.testing.assert_close(after_stage1[f"decoder.lm.{key}"], original[key])  # stage 1: LM frozen
    run2 = tmp_path / "run2"
    main(["fit", *model, *_data(dataset), *_trainer(run2, epochs=2)])
    after_stage2 = torch.load(sorted(run2.rglob("*.ckpt"))[-1], map_location="cpu", weights_only=True)["state_dict"]
    assert not torch.equal(after_stage2[f"decoder.lm.{key}"], original[key])  # stage 2: LM trained
    assert not torch.equal(after_stage2["decoder.projector.0.weight"], after_stage1["decoder.projector.0.weight"])


@pytest.mark.parametrize("fc_norm", [False, True])
def test_partial_freeze_trains_last_blocks_and_the_final_norm(fc_norm):
    module = ReportGeneration(vision_encoder="test_vit_tiny_gap_patch8", img_size=32, freeze="partial",
                              unfreeze_last=1, vision_kwargs={"fc_norm": fc_norm},
                              vocab=["<pad>", "<bos>", "<eos>", "<unk>"])
    final = module.visual.fc_norm if fc_norm else module.visual.norm
    assert all(p.requires_grad for p in final.parameters()) and any(True for _ in final.parameters())
    assert all(p.requires_grad for p in module.visual.blocks[-1].parameters())
    assert not any(p.requires_grad for p in module.visual.blocks[0].parameters())
