"""Expected errors reach the user as one or two lines naming the file and the reason; --debug shows the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvl.cli import console

MODEL = ["--model", "medvl.models.ContrastivePretraining", "--model.vision_encoder", "test_vit_tiny_patch8",
         "--model.text_encoder", "test_text_tiny", "--model.embed_dim", "16"]


def _fit_missing_manifest(tmp_path, *extra: str) -> list[str]:
    return ["fit", *MODEL, "--data", "medvl.datamodules.ManifestDataModule",
            "--data.manifest", str(tmp_path / "absent.jsonl"), "--data.img_size", "32",
            "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.default_root_dir",
            str(tmp_path / "run"), *extra]


def test_a_missing_manifest_is_two_lines_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDVL_DEBUG", raising=False)
    assert console(_fit_missing_manifest(tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    last = [line for line in err if line.startswith("medvl: ")]
    assert last and "ManifestError" in last[-1] and "absent.jsonl" in last[-1] and "not found" in last[-1]
    assert "Traceback" not in "\n".join(err)


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDVL_DEBUG", raising=False)
    with pytest.raises(ValueError, match="absent.jsonl: manifest not found"):
        console(_fit_missing_manifest(tmp_path, "--debug"))
    monkeypatch.setenv("MEDVL_DEBUG", "1")
    with pytest.raises(ValueError, match="manifest not found"):
        console(_fit_missing_manifest(tmp_path))


def test_a_bug_keeps_its_traceback(monkeypatch):
    import medvl.cli as cli

    def broken(argv):
        raise TypeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "synth", broken)
    with pytest.raises(TypeError, match="a bug"):
        console(["synth"])


def test_a_misspelled_key_names_its_yaml_file_and_the_nearest_key(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"base:\n  model: {root / 'models/clip_vitc_nano.yaml'}\n"
                      f"  data: {root / 'datamodules/synthetic_cxr.yaml'}\n  trainer: {root / 'trainer/cpu.yaml'}\n"
                      "model:\n  init_args:\n    warmup_fracton: 0.1\n")
    trainer = tmp_path / "trainer.yaml"
    trainer.write_text("max_epoch: 3\n")
    with pytest.raises(SystemExit) as e:
        console(["fit", "--config", str(recipe)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert (f"medvl: {recipe}: unknown key model.init_args.warmup_fracton; "
            "nearest valid key: model.init_args.warmup_fraction") in err
    with pytest.raises(SystemExit):
        console(["fit", "--trainer", str(trainer), "--model", str(root / "models/clip_vitc_nano.yaml"),
                 "--data", str(root / "datamodules/synthetic_cxr.yaml")])
    assert f"medvl: {trainer}: unknown key trainer.max_epoch; nearest valid key: trainer.max_epochs" in \
        capsys.readouterr().err
