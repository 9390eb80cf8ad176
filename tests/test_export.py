"""medvl export: a tiny task checkpoint -> safetensors, timm, TorchScript, ONNX, model card; load_encoder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import medvl
from medvl._preprocess import Preprocessor, resize_longest_pad
from medvl.data.dicom import WINDOW_PRESETS
from medvl.encoders import create_encoder
from medvl.export import export_encoder, load_encoder
from tests._multiprocess import run_python


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A 1-epoch contrastive checkpoint made through the CLI, exported through the CLI."""
    from medvl.cli import main

    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    assert main(["synth", "--out", str(data), "--n", "8", "--seed", "1", "--workers", "1"]) == 0
    main([
        "fit", "--model", "medvl.models.ContrastivePretraining",
        "--model.vision_encoder", "test_vit_tiny_patch8", "--model.text_encoder", "test_text_tiny",
        "--model.embed_dim", "16",
        "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(data), "--data.img_size", "32",
        "--data.batch_size", "4",
        "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root / "run"), "--trainer.logger", "false",
    ])
    ckpt = sorted((root / "run").rglob("*.ckpt"))[-1]
    out = root / "exported"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    return {"ckpt": ckpt, "out": out, "data": data, "dicom": sorted((data / "images").glob("*.dcm"))[0]}


def _features(model, x):
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def test_export_writes_every_format_and_a_card(run):
    out = run["out"]
    cfg = json.loads((out / "config.json").read_text())
    for name in ("model.safetensors", "projection.safetensors", "README.md", "timm/model.safetensors",
                 "model.torchscript.pt"):
        assert (out / name).is_file(), name
    if importlib.util.find_spec("onnxruntime") is None:  # the optional export dependency
        assert cfg["onnx"] is None and "onnxruntime" in cfg["onnx_unavailable"]
    else:
        assert (out / "model.onnx").is_file() and not (out / "model.onnx.data").exists()  # one self-contained file
    encoder = load_encoder(out)
    assert cfg["architecture"] == "test_vit_tiny_patch8" and cfg["task"] == "medvl.models.ContrastivePretraining"
    assert cfg["num_params"] == sum(p.numel() for p in encoder.parameters())
    pre = cfg["preprocessing"]
    assert (pre["in_chans"], pre["img_size"], pre["mean"], pre["std"]) == (1, 32, 0.5, 0.25)
    assert "window" in pre and cfg["timm"]["kwargs"]["in_chans"] == 1
    hp = torch.load(run["ckpt"], map_location="cpu", weights_only=True)["hyper_parameters"]
    assert cfg["label_names"] == hp["label_names"]  # what the data module linked into the task
    card = (out / "README.md").read_text()
    for section in ("## Architecture", "## Preprocessing", "## Intended use", "## How to load", "## Training data",
                    "## Metrics", "timm.create_model", "torch.jit.load", f"{cfg['num_params']:,}"):
        assert section in card, section


def test_timm_file_loads_with_pretrained_cfg_overlay(run):
    timm = pytest.importorskip("timm")
    out = run["out"]
    spec = json.loads((out / "config.json").read_text())["timm"]
    model = timm.create_model(spec["arch"], pretrained=True, pretrained_cfg_overlay=dict(file=str(out / spec["file"])),
                              **spec["kwargs"]).eval()
    encoder = load_encoder(out)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _features(encoder, x), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.forward_features(x), encoder.forward_features(x), atol=1e-5, rtol=0)


def test_torchscript_and_onnx_match_eager(run):
    out = run["out"]
    encoder = load_encoder(out)
    x = torch.randn(5, 1, 32, 32)  # neither batch size used at export
    with torch.no_grad():
        tokens = encoder.forward_features(x)
        pooled = encoder.forward_head(tokens, pre_logits=True)
        ts_pooled, ts_tokens = torch.jit.load(str(out / "model.torchscript.pt"))(x)
    torch.testing.assert_close(ts_pooled, pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(ts_tokens, tokens, atol=1e-5, rtol=0)

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_pooled, onnx_tokens = session.run(["features", "tokens"], {"image": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_pooled), pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.from_numpy(onnx_tokens), tokens, atol=1e-5, rtol=0)
    onnx_cfg = json.loads((out / "config.json").read_text())["onnx"]
    assert 0.0 <= onnx_cfg["max_abs_diff"] < 1e-4 and onnx_cfg["dynamic_axes"] == {"image": [0]}


def test_encode_accepts_dicom_numpy_and_tensor(run):
    encoder = load_encoder(run["out"])
    path = run["dicom"]
    pixels = encoder.preprocess.read(path)  # (1, H, W) in [0, 1], window applied
    assert pixels.ndim == 3 and pixels.shape[0] == 1 and 0.0 <= pixels.min() and pixels.max() <= 1.0
    from_path = encoder.encode(path)
    from_str = encoder.encode(str(path))
    from_numpy = encoder.encode(pixels[0])  # (H, W)
    from_tensor = encoder.encode(torch.from_numpy(pixels)[None])  # (1, 1, H, W)
    assert from_path.shape == (1, encoder.num_features)
    for other in (from_str, from_numpy, from_tensor):
        torch.testing.assert_close(other, from_path, atol=1e-6, rtol=0)
    both = encoder.encode([path, pixels])  # a list batches
    torch.testing.assert_close(both, from_path.expand(2, -1), atol=1e-6, rtol=0)

    # The inference preprocessing is the training pipeline's eval branch, normalised.
    from medvl.data.transforms import build_image_transforms

    train_eval = build_image_transforms(32, train=False)({"image": str(path)})["image"]  # (1, 32, 32) in [0, 1]
    torch.testing.assert_close(encoder.preprocess(path)[0], (train_eval - 0.5) / 0.25, atol=1e-6, rtol=0)
    torch.testing.assert_close(from_path, _features(encoder, ((train_eval - 0.5) / 0.25)[None]), atol=1e-6, rtol=0)


def test_preprocessing_resize_channels_and_errors():
    pre = Preprocessor(16, 1, mean=0.5, std=0.5)
    wide = torch.rand(1, 1, 10, 40)
    x = pre(wide)
    assert x.shape == (1, 1, 16, 16)
    assert torch.all(x[..., :6, :] == -1.0) and torch.all(x[..., -6:, :] == -1.0)  # zero padding, normalised
    rgb = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    torch.testing.assert_close(pre(rgb), pre(luma), atol=1e-6, rtol=0)
    three = Preprocessor(16, 3, mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 4.0])
    y = three(torch.ones(2, 1, 16, 16))
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([0.9, 0.4, 0.175]))
    assert resize_longest_pad(torch.ones(2, 3, 8, 8), 8).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="2-channel"):
        pre(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="mean has 2 values"):
        Preprocessor(16, 3, mean=[0.1, 0.2])


def test_load_encoder_needs_no_lightning(run):
    code = (
        "import sys, json, medvl\n"
        f"enc = medvl.load_encoder({str(run['out'])!r})\n"
        f"f = enc.encode({str(run['dicom'])!r})\n"
        "print(json.dumps({'lightning': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning')), 'features': f[0].tolist()}))\n"
    )
    res = run_python(["-c", code], timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["lightning"] == []
    expected = load_encoder(run["out"]).encode(run["dicom"])[0]
    torch.testing.assert_close(torch.tensor(got["features"]), expected, atol=1e-6, rtol=0)


def test_existing_load_encoder_contract(run):
    encoder, proj = medvl.load_encoder(run["out"], with_projection=True)
    from medvl.models import ContrastivePretraining

    module = ContrastivePretraining.load_from_checkpoint(run["ckpt"], map_location="cpu", weights_only=True).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        xn = (x - encoder.pretrained_cfg["mean"]) / encoder.pretrained_cfg["std"]  # the data normalises, not the task
        expected = module.model.encode_image(xn)
        got = torch.nn.functional.normalize(proj(_features(encoder, xn)), dim=-1)
        torch.testing.assert_close(got, expected)
        # encode() does the same normalisation itself
        torch.testing.assert_close(torch.nn.functional.normalize(proj(encoder.encode(x)), dim=-1), expected)


def test_reexport_folder_and_plain_state_dict(run, tmp_path):
    again = export_encoder(run["out"], tmp_path / "again", formats=())
    cfg_a = json.loads((run["out"] / "config.json").read_text())
    cfg_b = json.loads((again / "config.json").read_text())
    for key in ("architecture", "encoder_kwargs", "vision_config", "preprocessing", "projection", "embed_dim", "task",
                "label_names"):
        assert cfg_b[key] == cfg_a[key], key
    assert cfg_b["source"] == "export folder" and "timm" not in cfg_b

    encoder = load_encoder(run["out"])
    sd_file = tmp_path / "encoder.pth"
    torch.save({"state_dict": {f"visual.{k}": v for k, v in encoder.state_dict().items()}}, sd_file)
    with pytest.raises(ValueError, match="encoder.pth: a plain state dict.*pass arch="):
        export_encoder(sd_file, tmp_path / "plain", formats=())
    plain = export_encoder(sd_file, tmp_path / "plain", arch="test_vit_tiny_patch8", formats=(), image_mean=0.5,
                           image_std=0.25)
    cfg_c = json.loads((plain / "config.json").read_text())
    assert cfg_c["encoder_kwargs"] == {"img_size": 32, "in_chans": 1}  # read off the weights' shapes
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(_features(load_encoder(plain), x), _features(encoder, x))
    with pytest.raises(ValueError, match="not a medvl task checkpoint"):
        bad = tmp_path / "bad.ckpt"
        torch.save({"hyper_parameters": {"lr": 1.0}, "state_dict": {}}, bad)
        export_encoder(bad, tmp_path / "bad", formats=())


def test_converted_open_clip_tower_exports_to_timm(tmp_path):
    """A pre-norm (CLIP) encoder: timm's patch embedding has no bias, so it is folded into pos_embed."""
    timm = pytest.importorskip("timm")
    open_clip = pytest.importorskip("open_clip")
    from medvl.encoders.interop import load_open_clip_visual

    tower = open_clip.transformer.VisionTransformer(image_size=32, patch_size=8, width=64, layers=2, heads=1,
                                                    mlp_ratio=4.0, output_dim=16)
    enc, proj = load_open_clip_visual(tower.state_dict(), in_chans=1)
    with torch.no_grad():
        enc.patch_embed.proj.bias.normal_()  # as after fine-tuning in medvl: a bias timm's CLIP ViT lacks
    out = export_encoder(enc, tmp_path / "clip", formats=("timm",), image_mean=0.5, image_std=0.25)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vision_config"]["pre_norm"] and not cfg["vision_config"]["fc_norm"] and "norms" not in cfg
    assert cfg["timm"]["arch"].endswith("clip_224") and cfg["vision_config"]["norm_eps"] == 1e-5
    model = timm.create_model(cfg["timm"]["arch"], pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out / cfg["timm"]["file"])),
                              **cfg["timm"]["kwargs"]).eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model(x), _features(enc, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(_features(load_encoder(out), x), _features(enc, x), atol=1e-6, rtol=0)
    # the architecture name + overrides recorded for the registry rebuild the same geometry
    rebuilt = create_encoder(cfg["architecture"], **cfg["encoder_kwargs"])
    assert rebuilt.config == enc.config


def test_timm_state_dict_round_trip(tmp_path):
    """timm weights -> medvl export (arch='timm:<name>') -> timm again: the same model."""
    timm = pytest.importorskip("timm")
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            embed_dim=64, depth=2, num_heads=2, class_token=False, global_pool="avg").eval()
    src = tmp_path / "timm_vit.pth"
    torch.save(ref.state_dict(), src)
    # heads are not in the weights: 2, where width // 64 would say 1; through the command line
    from medvl.cli import main

    out = tmp_path / "out"
    assert main(["export", str(src), "--out", str(out), "--arch", "timm", "--num-heads", "2", "--formats", "timm",
                 "--window", "lung"]) == 0
    assert not (out / "model.onnx").exists() and not (out / "model.torchscript.pt").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["source"] == "timm state dict" and cfg["vision_config"]["fc_norm"]
    assert cfg["preprocessing"]["window"] == list(WINDOW_PRESETS["lung"])
    spec = cfg["timm"]
    again = timm.create_model(spec["arch"], pretrained=True, pretrained_cfg_overlay=dict(file=str(out / spec["file"])),
                              **spec["kwargs"]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), ref(x), atol=1e-5, rtol=0)


def test_conv_stem_has_no_timm_file_and_says_why(tmp_path):
    enc = create_encoder("test_vitc_tiny_patch8").eval()
    out = export_encoder(enc, tmp_path / "vitc", formats=("timm", "torchscript"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["timm"] is None and "convolutional stem" in cfg["timm_unavailable"]
    assert not (out / "timm").exists()
    assert "No timm file: the convolutional stem" in (out / "README.md").read_text()
    assert cfg["architecture"] == "test_vitc_tiny_patch8" and cfg["encoder_kwargs"] == {"img_size": 32, "in_chans": 1}
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ts = torch.jit.load(str(out / "model.torchscript.pt"))(x)[0]
    torch.testing.assert_close(ts, _features(enc, x), atol=1e-5, rtol=0)


def test_the_text_tower_travels_in_the_export_and_starts_a_vqa_question_encoder(run, tmp_path):
    from medvl.encoders.source import read_text_source
    from medvl.models import VQA

    out = run["out"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["text_encoder"] == {"architecture": "test_text_tiny", "kwargs": {}}
    assert "text.safetensors" in (out / "README.md").read_text()
    state = torch.load(run["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    tower = {k[len("model.text."):]: v for k, v in state.items() if k.startswith("model.text.")}
    from_export = read_text_source(out).encoder.state_dict()
    assert set(from_export) == set(tower)
    for name, value in from_export.items():
        torch.testing.assert_close(value, tower[name], rtol=0, atol=0)
    vqa = VQA(pretrained=str(out), text_pretrained=str(out), answers=["yes", "no"],
              fusion_kwargs={"dim": 16, "depth": 1, "num_heads": 2})
    assert vqa.hparams.text_encoder == "test_text_tiny"
    torch.testing.assert_close(vqa.model.text.token_embedding.weight, tower["token_embedding.weight"], rtol=0, atol=0)
    # re-exported in place, the folder keeps its tower; an encoder alone has none to write
    import shutil

    copy = shutil.copytree(out, tmp_path / "copy")
    export_encoder(copy, copy, formats=())
    assert (copy / "text.safetensors").is_file()
    torch.testing.assert_close(read_text_source(copy).encoder.token_embedding.weight, tower["token_embedding.weight"])
    bare = export_encoder(load_encoder(out), tmp_path / "bare", formats=())
    assert json.loads((bare / "config.json").read_text())["text_encoder"] is None
    assert not (bare / "text.safetensors").exists()
    with pytest.raises(ValueError, match="the export has no text tower"):
        read_text_source(bare)
