"""The VQA task end to end through ``medvl fit/test/predict`` on tiny fixtures of every VQA layout, both heads;
and its own rules (vocabulary from the data module, saved with the checkpoint; options recorded with results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medvl.cli import main
from medvl.models import VQA
from tests.data.formats.fixtures import make_pathvqa, make_slake, make_vqa_rad, make_vqa_rad_split
from tests.heads.test_report_decoder import make_tiny_lm

TRAINER = ["--trainer.accelerator", "cpu", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
           "--trainer.enable_progress_bar", "false", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
           "--trainer.max_epochs", "1"]
FUSION = ["--model", "medvl.models.VQA", "--model.vision_encoder", "test_vit_tiny_patch8",
          "--model.text_encoder", "test_text_tiny", "--model.fusion_kwargs",
          '{"dim": 32, "depth": 1, "num_heads": 2}', "--model.n_bootstrap", "50"]
GENERATIVE = ["--model", "medvl.models.VQA", "--model.head", "generative", "--model.vision_encoder",
              "test_vit_tiny_patch8", "--model.decoder_kwargs", '{"dim": 32, "depth": 1, "num_heads": 2}',
              "--model.max_question_length", "12", "--model.max_answer_length", "4", "--model.n_bootstrap", "50"]


def _trainer(root: Path) -> list[str]:
    return [*TRAINER, "--trainer.default_root_dir", str(root), "--trainer.logger.save_dir", str(root)]


def _data(source: str, init: dict, **options) -> list[str]:
    data = {"class_path": "medvl.datamodules.VQADataModule",
            "init_args": {"source": {"class_path": source, "init_args": init}, "img_size": 32, "batch_size": 2,
                          **options}}
    return ["--data", json.dumps(data)]


@pytest.fixture(scope="module")
def synthetic(make_synthetic) -> Path:
    return make_synthetic(40, 9)


def _layout(name: str, tmp_path: Path, synthetic: Path) -> list[str]:
    """``--data`` arguments of a tiny dataset in one VQA layout (written under ``tmp_path``)."""
    folder = tmp_path / name
    folder.mkdir()
    if name == "vqa_rad":
        return _data("medvl.data.formats.VQARAD", {"root": str(make_vqa_rad(folder))}, val_fraction=0.5)
    if name == "vqa_rad_split":
        return _data("medvl.data.formats.VQARAD", {"root": str(make_vqa_rad_split(folder))}, val_fraction=0.5)
    if name == "slake":
        return _data("medvl.data.formats.SLAKE", {"root": str(make_slake(folder))})
    if name == "pathvqa":
        return _data("medvl.data.formats.PathVQA", {"root": str(make_pathvqa(folder))})
    return _data("medvl.data.sources.Synthetic", {"root": str(synthetic), "n": 40, "seed": 9}, preload=True)


def _check_test_outputs(run: Path, head: str) -> dict:
    result = json.loads(next(run.rglob("test_metrics.json")).read_text())
    metrics, options = result["metrics"], result["options"]
    assert metrics["n"] == metrics["n_closed"] + metrics["n_open"] > 0
    assert 0.0 <= metrics["overall_accuracy"] <= 1.0
    assert options["head"] == head and options["closed_rule"] == "answer_type"
    assert options["answer_vocabulary"] == "train split" and options["checkpoint"].endswith(".ckpt")
    rows = [json.loads(line) for line in next(run.rglob("test_answers.jsonl")).read_text().splitlines()]
    assert len(rows) == metrics["n"]
    assert {"question_id", "question", "answer", "prediction", "answer_type"} <= set(rows[0])
    assert "- closed_rule: answer_type" in next(run.rglob("test_metrics.md")).read_text()
    return result


@pytest.mark.parametrize("layout", ["vqa_rad", "vqa_rad_split", "slake", "pathvqa", "synthetic"])
def test_fusion_head_fit_test_on_every_layout(layout, tmp_path, synthetic, capsys):
    run = tmp_path / "run"
    data = _layout(layout, tmp_path, synthetic)
    main(["fit", *FUSION, *data, *_trainer(run)])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["answers"] and len(set(saved["answers"])) == len(saved["answers"])
    main(["test", *FUSION, *data, *_trainer(run), "--ckpt_path", str(ckpt)])
    assert "VQA (fusion head), test split" in capsys.readouterr().out
    _check_test_outputs(run, "fusion")


def test_fusion_predict_and_reload_from_the_checkpoint_alone(tmp_path, synthetic):
    run = tmp_path / "run"
    data = _layout("synthetic", tmp_path, synthetic)
    main(["fit", *FUSION, *data, *_trainer(run)])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    main(["predict", *FUSION, *data, *_trainer(run), "--ckpt_path", str(ckpt)])
    preds = [json.loads(line) for line in next(run.rglob("predictions.jsonl")).read_text().splitlines()]
    assert preds and all(set(p) == {"question_id", "study_id", "question", "answer"} for p in preds)
    assert len({p["question_id"] for p in preds}) == len(preds)
    module = VQA.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    batch = {"image": torch.rand(2, 1, 32, 32), "question": ["Is there a pneumothorax?", "Which side is it on?"]}
    answers = module.answer(batch)
    assert len(answers) == 2 and all(a in module.hparams.answers for a in answers)


def test_generative_head_transformer_generate_and_rank(tmp_path, synthetic, capsys):
    run = tmp_path / "run"
    data = _layout("vqa_rad_split", tmp_path, synthetic)
    main(["fit", *GENERATIVE, *data, *_trainer(run)])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["vocab"][4] == "<answer>" and "?" in saved["vocab"][5:]
    main(["test", *GENERATIVE, *data, *_trainer(run), "--ckpt_path", str(ckpt)])
    assert "VQA (generative head)" in capsys.readouterr().out
    result = _check_test_outputs(run, "generative")
    assert result["options"]["answer_mode"] == "generate"
    # The test split holds an answer ("pneumothorax") no training question has: counted, not hidden.
    assert result["metrics"]["n_answers_outside_vocab"] >= 1
    ranked = tmp_path / "ranked"
    main(["test", *GENERATIVE, "--model.answer_mode", "rank", *data, *_trainer(ranked), "--ckpt_path", str(ckpt)])
    result = _check_test_outputs(ranked, "generative")
    assert result["options"]["rank_candidates"].startswith("closed questions over")
    closed = [r for r in map(json.loads, next(ranked.rglob("test_answers.jsonl")).read_text().splitlines())
              if r["answer_type"] == "closed"]
    assert closed and all(r["prediction"] in saved["closed_candidates"] for r in closed)


def test_generative_head_prefix_lm(tmp_path, synthetic):
    run = tmp_path / "run"
    lm = make_tiny_lm(tmp_path / "lm")
    model = ["--model", "medvl.models.VQA", "--model.head", "generative", "--model.vision_encoder",
             "test_vit_tiny_patch8", "--model.decoder", "prefix_lm", "--model.lm_path", str(lm),
             "--model.decoder_kwargs", '{"num_prefix_tokens": 4}', "--model.max_answer_length", "3",
             "--model.n_bootstrap", "0"]
    data = _layout("slake", tmp_path, synthetic)
    main(["fit", *model, *data, *_trainer(run)])
    ckpt = sorted(run.rglob("*.ckpt"))[-1]
    main(["test", *model, *data, *_trainer(run), "--ckpt_path", str(ckpt)])
    result = _check_test_outputs(run, "generative")
    assert result["options"]["decoder"] == "prefix_lm" and "overall_accuracy_ci_low" not in result["metrics"]


def test_rules_of_the_task():
    with pytest.raises(ValueError, match="answer_mode='rank' is for the generative head"):
        VQA(vision_encoder="test_vit_tiny_patch8", answer_mode="rank")
    with pytest.raises(ValueError, match="head must be one of"):
        VQA(head="extractive")
    task = VQA(vision_encoder="test_vit_tiny_patch8", img_size=32, text_encoder="test_text_tiny",
               answers=["yes", "no"])
    assert task.hparams.answers == ["yes", "no"] and set(task.tokenizers()) == {"question"}
    with pytest.raises(ValueError, match="VQADataModule"):
        VQA(vision_encoder="test_vit_tiny_patch8", img_size=32, text_encoder="test_text_tiny").setup("fit")


def test_question_encoder_learning_rate_scale():
    from types import SimpleNamespace

    from medvl.models import VQA

    task = VQA(head="fusion", vision_encoder="test_vit_tiny_patch8", img_size=32, text_encoder="test_text_tiny",
               answers=["yes", "no"], freeze="partial", unfreeze_last=1, lr=1e-3, encoder_lr_scale=0.1,
               text_lr_scale=0.05, fusion_kwargs={"dim": 32, "depth": 1, "num_heads": 2})
    task._trainer = SimpleNamespace(estimated_stepping_batches=10)
    opt = task.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for part, lr in ((task.model.text, 5e-5), (task.model.fusion, 1e-3), (task.model.head, 1e-3),
                     (task.model.visual, 1e-4)):
        lrs = [lr_of[id(p)] for p in part.parameters() if p.requires_grad]
        assert lrs and lrs == pytest.approx([lr] * len(lrs))


def _contrastive_checkpoint(path: Path) -> Path:
    """A contrastive task checkpoint as Lightning writes one (hyper-parameters and state dict)."""
    from medvl.models import ContrastivePretraining

    torch.manual_seed(3)
    task = ContrastivePretraining(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny", embed_dim=16,
                                  img_size=32)
    hp = dict(task.hparams)
    torch.save({"hyper_parameters": hp, "state_dict": task.state_dict()}, path)
    return path


def test_question_encoder_starts_from_a_contrastive_checkpoints_text_tower(tmp_path, synthetic):
    ckpt = _contrastive_checkpoint(tmp_path / "clip.ckpt")
    tower = {k[len("model.text."):]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()
             if k.startswith("model.text.")}
    task = VQA(vision_encoder="test_vit_tiny_patch8", img_size=32, text_pretrained=str(ckpt), answers=["yes", "no"],
               fusion_kwargs={"dim": 32, "depth": 1, "num_heads": 2})
    assert task.hparams.text_encoder == "test_text_tiny"  # taken from the checkpoint
    for name, value in task.model.text.state_dict().items():
        torch.testing.assert_close(value, tower[name], rtol=0, atol=0)
    # through the CLI: fit, then test from the VQA checkpoint alone once the contrastive one is gone
    run = tmp_path / "run"
    model = [arg for arg in FUSION if arg not in ("--model.text_encoder", "test_text_tiny")]
    data = _layout("synthetic", tmp_path, synthetic)
    main(["fit", *model, "--model.text_pretrained", str(ckpt), *data, *_trainer(run)])
    vqa_ckpt = sorted(run.rglob("*.ckpt"))[-1]
    saved = torch.load(vqa_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["text_encoder"] == "test_text_tiny" and saved["text_pretrained"] == str(ckpt)
    ckpt.unlink()
    reloaded = VQA.load_from_checkpoint(vqa_ckpt, map_location="cpu", weights_only=True)
    trained = torch.load(vqa_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    torch.testing.assert_close(reloaded.model.text.token_embedding.weight, trained["model.text.token_embedding.weight"])


def test_text_pretrained_refusals(tmp_path):
    ckpt = _contrastive_checkpoint(tmp_path / "clip.ckpt")
    with pytest.raises(ValueError, match="text_encoder='text_transformer_tiny' but the checkpoint's tower is 'test_text_tiny'"):
        VQA(vision_encoder="test_vit_tiny_patch8", img_size=32, text_pretrained=str(ckpt),
            text_encoder="text_transformer_tiny", answers=["yes", "no"])
    with pytest.raises(ValueError, match="fusion head"):
        VQA(head="generative", vision_encoder="test_vit_tiny_patch8", img_size=32, text_pretrained=str(ckpt))
    bare = tmp_path / "probe.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("model.text.")}
    torch.save(state, bare)
    with pytest.raises(ValueError, match="probe.ckpt: has no text tower"):
        VQA(vision_encoder="test_vit_tiny_patch8", img_size=32, text_pretrained=str(bare), answers=["yes", "no"])
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt: cannot read as a checkpoint"):
        VQA(vision_encoder="test_vit_tiny_patch8", img_size=32, text_pretrained=str(tmp_path / "junk.ckpt"),
            answers=["yes", "no"])


def test_a_fit_whose_pretrained_source_is_missing_stops_but_a_resume_does_not(tmp_path, synthetic):
    ckpt = _contrastive_checkpoint(tmp_path / "clip.ckpt")
    model = [arg for arg in FUSION if arg not in ("--model.text_encoder", "test_text_tiny")]
    data = _layout("synthetic", tmp_path, synthetic)
    run = tmp_path / "run"
    for key in ("pretrained", "text_pretrained"):
        missing = str(tmp_path / "exports" / "nothing")
        with pytest.raises(FileNotFoundError, match=f"VQA: {key}='{missing}' does not exist.*random weights"):
            main(["fit", *model, f"--model.{key}", missing, *data, *_trainer(tmp_path / key)])
    main(["fit", *model, "--model.text_pretrained", str(ckpt), *data, *_trainer(run)])
    ckpt.unlink()  # the source is gone: resuming the run's own checkpoint still works
    (first,) = run.rglob("*.ckpt")
    step = torch.load(first, map_location="cpu", weights_only=True)["global_step"]
    main(["fit", *model, "--model.text_pretrained", str(ckpt), *data, *_trainer(run), "--trainer.max_epochs", "2",
          "--ckpt_path", str(first)])
    steps = [torch.load(p, map_location="cpu", weights_only=True)["global_step"] for p in run.rglob("*.ckpt")]
    assert max(steps) == 2 * step  # the second epoch trained
