"""Recipes hold deltas over the models/, datamodules/ and trainer/ groups; outputs follow default_root_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvl.cli import _lightning_cli, expand_recipes

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_name_their_groups_and_restate_nothing(recipe):
    body = yaml.safe_load(recipe.read_text())
    base = body["base"]
    assert set(base) == {"model", "data", "trainer"}
    for group, rel in base.items():
        group_yaml = yaml.safe_load((recipe.parent / rel).read_text())
        delta = body.get(group, {})
        delta = delta.get("init_args", {}) if group != "trainer" else delta
        group_args = group_yaml.get("init_args", group_yaml) if group != "trainer" else group_yaml
        restated = {k for k, v in delta.items() if k in group_args and group_args[k] == v}
        assert not restated, f"{recipe.name} restates {group} values {sorted(restated)} of {rel}"
        assert "class_path" not in body.get(group, {}), f"{recipe.name} re-selects the {group} class"


def test_expansion_puts_the_groups_before_the_deltas():
    args = expand_recipes(["fit", "--config", str(REPO / "experiments" / "quickstart.yaml"), "--trainer.max_epochs", "1"])
    assert args[0] == "fit" and args[-2:] == ["--trainer.max_epochs", "1"]
    flags = [a for a in args if a.startswith("--")]
    assert flags[:4] == ["--trainer", "--model", "--data", "--config"]
    assert args[args.index("--model") + 1] == str(REPO / "models" / "clip_vitc_nano.yaml")
    with pytest.raises(SystemExit, match="not found"):
        bad = REPO / "experiments" / "quickstart.yaml"
        expand_recipes(["--config", _copy_with(bad, {"model": "../models/absent.yaml"})])


def _copy_with(recipe: Path, base: dict) -> str:
    import tempfile

    body = yaml.safe_load(recipe.read_text())
    body["base"] = {**body["base"], **base}
    folder = Path(tempfile.mkdtemp()) / "experiments"
    folder.mkdir()
    out = folder / recipe.name
    out.write_text(yaml.safe_dump(body))
    return str(out)


def test_quickstart_outputs_follow_default_root_dir(make_synthetic, tmp_path):
    synth = make_synthetic(24, 5)
    cli = _lightning_cli(["--config", str(REPO / "experiments" / "quickstart.yaml"),
                          "--trainer.default_root_dir", str(tmp_path / "run"),
                          "--data.init_args.root", str(synth)], run=False)
    assert type(cli.model).__name__ == "ContrastivePretraining"
    hp = cli.model.hparams
    assert hp.vision_encoder == "vitc_nano_patch16" and hp.lr == 2.0e-4  # from models/clip_vitc_nano.yaml
    assert hp.warmup_fraction == 0.1 and cli.datamodule.batch_size == 32  # the recipe's deltas
    assert hp.img_size == cli.datamodule.img_size == 112  # from datamodules/synthetic_cxr.yaml, linked
    assert cli.trainer.max_epochs == 24 and cli.trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    assert Path(cli.trainer.logger.save_dir) == tmp_path / "run"
    assert Path(cli.trainer.checkpoint_callback.dirpath) == tmp_path / "run" / "checkpoints"


def test_a_model_argument_that_belongs_to_the_data_is_refused(make_synthetic, tmp_path):
    synth = make_synthetic(24, 5)
    with pytest.raises(SystemExit, match=r"--data.img_size"):
        _lightning_cli(["--config", str(REPO / "experiments" / "quickstart.yaml"),
                        "--trainer.default_root_dir", str(tmp_path), "--data.init_args.root", str(synth),
                        "--model.init_args.img_size", "224"], run=False)
