"""Every models/*.yaml with every datamodules/*.yaml through the CLI: the model is told what the data is.

Each public layout gets a tiny fixture in its official layout; each pairing is instantiated
by ``medvl``'s LightningCLI exactly as ``medvl fit --model M --data D`` would, and the
model's label names, image size, channels and normalisation must be the data module's.
Pairings that cannot work (a classifier on caption-only data) must fail at start-up with
an error that says why, never train on the wrong columns. A task only meets the data
modules of its kind (:func:`takes`): VQA tasks the question-level ``VQADataModule``, the
others the image-text data modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvl.cli import _lightning_cli
from tests.data.formats.fixtures import (make_chexpert, make_iu, make_mimic, make_pathvqa, make_pmc_oa, make_roco,
                                         make_slake, make_vqa_rad)

REPO = Path(__file__).resolve().parents[1]
MODELS = sorted(p.stem for p in (REPO / "models").glob("*.yaml"))
DATAMODULES = sorted(p.stem for p in (REPO / "datamodules").glob("*.yaml"))
PUBLIC = {"mimic_cxr": make_mimic, "chexpert": make_chexpert, "iu_xray": make_iu, "roco": make_roco,
          "pmc_oa": make_pmc_oa, "vqa_rad": make_vqa_rad, "slake": make_slake, "pathvqa": make_pathvqa}
NEEDS_LABELS = {"classifier_probe", "classifier_finetune"}
SIZE = 32
SYNTH = (24, 5)

VQA_DATA_CLASSES = {"VQADataModule"}
"""Data module classes whose samples are questions (``question``, ``answer``, ...), not image-report pairs."""


def _class_name(group: str, name: str) -> str:
    return yaml.safe_load((REPO / group / f"{name}.yaml").read_text())["class_path"].rsplit(".", 1)[-1]


def takes(model: str, data: str) -> bool:
    """Whether the task of ``models/<model>.yaml`` takes ``datamodules/<data>.yaml``.

    A model class whose name says VQA (``...VQA...``, ``...QuestionAnswering``) takes the
    VQA data modules and only those; every other task takes every other data module.
    """
    model_class = _class_name("models", model)
    vqa_model = "VQA" in model_class or "QuestionAnswering" in model_class
    return vqa_model == (_class_name("datamodules", data) in VQA_DATA_CLASSES)


PAIRS = [(model, data) for model in MODELS for data in DATAMODULES if takes(model, data)]


@pytest.fixture(scope="module")
def data_args(make_synthetic, tmp_path_factory) -> dict[str, list[str]]:
    synth = make_synthetic(*SYNTH)
    args = {"synthetic_cxr": ["--data.init_args.root", str(synth)],
            "manifest": ["--data.init_args.manifest", str(synth / "manifest.jsonl")],
            "synthetic_vqa": ["--data.init_args.source.init_args.root", str(synth),
                              "--data.init_args.source.init_args.n", str(SYNTH[0]),
                              "--data.init_args.source.init_args.seed", str(SYNTH[1])]}
    for name, make in PUBLIC.items():
        root = make(tmp_path_factory.mktemp(name))
        args[name] = ["--data.init_args.source.init_args.root", str(root), "--data.init_args.cache_dir", "null"]
    for name in args:
        args[name] += ["--data.init_args.img_size", str(SIZE), "--data.init_args.num_workers", "0"]
    return args


@pytest.fixture(scope="module")
def model_args(tmp_path_factory) -> dict[str, list[str]]:
    import medvl
    from tests.heads.test_report_decoder import make_tiny_lm

    encoder = medvl.create_encoder("test_vit_tiny_patch8", img_size=SIZE, in_chans=1)
    export = medvl.export_encoder(encoder, tmp_path_factory.mktemp("export") / "tiny", formats=(),
                                  image_mean=0.5, image_std=0.25)
    lm = make_tiny_lm(tmp_path_factory.mktemp("lm"))
    pretrained = ["--model.init_args.pretrained", str(export)]
    args = {name: [] for name in MODELS}
    for name in MODELS:
        if name.startswith(("classifier_", "report_", "vqa_")):
            args[name] += pretrained
    args["report_prefix_lm"] += ["--model.init_args.lm_path", str(lm)]
    return args


def _cli(model: str, data: str, model_args, data_args, tmp_path):
    args = ["--model", str(REPO / "models" / f"{model}.yaml"), "--data", str(REPO / "datamodules" / f"{data}.yaml"),
            *model_args[model], *data_args[data],
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)]
    return _lightning_cli(args, run=False)


def test_every_data_yaml_has_test_arguments_and_a_kind(data_args):
    assert set(data_args) == set(DATAMODULES)
    assert {d for d in DATAMODULES if _class_name("datamodules", d) in VQA_DATA_CLASSES} == {
        "vqa_rad", "slake", "pathvqa", "synthetic_vqa"}
    assert not takes("clip_vitc_nano", "vqa_rad") and takes("clip_vitc_nano", "synthetic_cxr")


@pytest.mark.parametrize(("model", "data"), PAIRS)
def test_the_model_is_told_what_the_data_is(model, data, model_args, data_args, tmp_path):
    if model in NEEDS_LABELS and data in ("iu_xray", "roco", "pmc_oa"):
        with pytest.raises((ValueError, SystemExit), match="label"):
            _cli(model, data, model_args, data_args, tmp_path)
        return
    cli = _cli(model, data, model_args, data_args, tmp_path)
    dm, hp = cli.datamodule, cli.model.hparams
    assert hp.label_names == dm.label_names
    assert (hp.img_size, hp.in_chans) == (dm.img_size, dm.in_chans) == (SIZE, 1)
    assert (hp.image_mean, hp.image_std) == (dm.image_mean, dm.image_std)
    if data in ("mimic_cxr", "chexpert"):
        assert "lung_opacity" in dm.label_names and "nodule" not in dm.label_names
    if model.startswith(("clip_", "siglip_")):
        scored = list(cli.model.prompts)
        assert scored and set(scored) <= set(dm.label_names) if dm.label_names else not scored
    if model in NEEDS_LABELS:
        assert cli.model.model.head.out_features == len(dm.label_names)


def test_prompts_for_a_finding_the_data_lacks_name_both_lists(model_args, data_args, tmp_path):
    model_args = {**model_args, "clip_vitc_nano": ['--model.init_args.prompts={"nodule": {"positive": ["A nodule."], '
                                                   '"negative": ["No nodule."]}}']}
    with pytest.raises(ValueError, match=r"nodule.*lung_opacity|lung_opacity.*nodule"):
        _cli("clip_vitc_nano", "mimic_cxr", model_args, data_args, tmp_path)
