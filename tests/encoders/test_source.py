"""read_encoder_source: every kind of source, the preprocessing check, and errors that name the file."""

from __future__ import annotations

import json

import pytest
import torch

from medvl.encoders import EncoderSource, create_encoder, read_encoder_source
from medvl.export import export_encoder
from medvl.heads import ProjectionHead


def _features(encoder, x):
    with torch.no_grad():
        return encoder.forward_head(encoder.forward_features(x), pre_logits=True)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


@pytest.fixture()
def encoder():
    torch.manual_seed(0)
    return create_encoder("test_vit_tiny_patch8", img_size=32).eval()


def _task_checkpoint(path, encoder, **hp):
    """A checkpoint as every medvl task saves it: the network under ``model.``, the data settings in hparams."""
    proj = ProjectionHead(encoder.num_features, 16, "linear")
    state = {**{f"model.visual.{k}": v for k, v in encoder.state_dict().items()},
             **{f"model.image_proj.{k}": v for k, v in proj.state_dict().items()},
             "model.logit_scale": torch.tensor(2.0)}
    hparams = {"vision_encoder": "test_vit_tiny_patch8", "img_size": 32, "in_chans": 1, "vision_kwargs": None,
               "image_mean": 0.4, "image_std": 0.3, "window": (40.0, 400.0), "embed_dim": 16, "projection": "linear",
               "label_names": ["a", "b"], "_class_path": "medvl.models.ContrastivePretraining", **hp}
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return proj


def test_task_checkpoint(tmp_path, encoder):
    ckpt = tmp_path / "task.ckpt"
    proj = _task_checkpoint(ckpt, encoder)
    src = read_encoder_source(ckpt)
    assert isinstance(src, EncoderSource) and src.origin == "task checkpoint" and src.location == str(ckpt)
    assert src.architecture == "test_vit_tiny_patch8" and src.encoder_kwargs == {"img_size": 32, "in_chans": 1}
    _same_weights(src.encoder, encoder)
    pre = src.preprocessing
    got = (pre["img_size"], pre["in_chans"], pre["mean"], pre["std"], pre["window"])
    assert got == (32, 1, 0.4, 0.3, [40.0, 400.0])
    assert src.projection.keys() == proj.state_dict().keys() and src.projection_kind == "linear"
    assert src.embed_dim == 16 and src.task == "medvl.models.ContrastivePretraining" and src.label_names == ["a", "b"]


def test_classifier_checkpoint_is_a_task_checkpoint(tmp_path):
    """The Classifier's own state dict and hyper-parameters follow the contract (no Trainer needed)."""
    from medvl.models import Classifier

    m = Classifier(vision_encoder="test_vit_tiny_patch8", img_size=32, label_names=["x", "y", "z"])
    ckpt = tmp_path / "classifier.ckpt"
    torch.save({"hyper_parameters": dict(m.hparams), "state_dict": m.state_dict()}, ckpt)
    src = read_encoder_source(ckpt)
    _same_weights(src.encoder, m.model.visual)
    assert src.projection is None and src.label_names == ["x", "y", "z"]
    assert (src.preprocessing["mean"], src.preprocessing["std"]) == (0.5, 0.25)


def test_export_folder(tmp_path, encoder):
    ckpt = tmp_path / "task.ckpt"
    _task_checkpoint(ckpt, encoder)
    out = export_encoder(ckpt, tmp_path / "export", formats=())
    src = read_encoder_source(out)
    assert src.origin == "export folder" and src.location == str(out)
    assert src.architecture == "test_vit_tiny_patch8" and src.encoder_kwargs == {"img_size": 32, "in_chans": 1}
    _same_weights(src.encoder, encoder)
    assert src.preprocessing == json.loads((out / "config.json").read_text())["preprocessing"]
    assert src.projection_kind == "linear" and src.embed_dim == 16 and src.label_names == ["a", "b"]


@pytest.mark.parametrize("prefix", ["", "visual.", "model.visual."])
def test_medvl_state_dict_with_registry_arch(tmp_path, encoder, prefix):
    sd = tmp_path / "encoder.pth"
    torch.save({f"{prefix}{k}": v for k, v in encoder.state_dict().items()}, sd)
    src = read_encoder_source(sd, arch="test_vit_tiny_patch8")
    assert src.origin == "state dict" and src.encoder_kwargs == {"img_size": 32, "in_chans": 1}  # off the shapes
    _same_weights(src.encoder, encoder)
    assert src.preprocessing["mean"] is None and src.preprocessing["std"] is None  # not recorded


def test_timm_state_dict(tmp_path):
    timm = pytest.importorskip("timm")
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            embed_dim=64, depth=2, num_heads=2).eval()
    sd = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), sd)
    src = read_encoder_source(sd, arch="timm", encoder_kwargs={"num_heads": 2})
    assert src.origin == "timm state dict" and src.projection is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(_features(src.encoder, x), ref(x), atol=1e-5, rtol=0)
    # the registry name recorded rebuilds the same architecture
    assert create_encoder(src.architecture, **src.encoder_kwargs).config == src.encoder.config


def test_open_clip_state_dict_keeps_the_projection(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    tower = open_clip.transformer.VisionTransformer(image_size=32, patch_size=8, width=64, layers=2, heads=1,
                                                    mlp_ratio=4.0, output_dim=16)
    sd = tmp_path / "clip.pth"
    torch.save({f"visual.{k}": v for k, v in tower.state_dict().items()}, sd)
    src = read_encoder_source(sd, arch="open_clip")
    assert src.origin == "open_clip state dict" and src.projection_kind == "linear" and src.embed_dim == 16
    assert src.encoder.config.pre_norm


def test_module_is_copied(encoder):
    src = read_encoder_source(encoder)
    assert src.origin == "module" and src.encoder is not encoder and src.architecture == "test_vit_tiny_patch8"
    _same_weights(src.encoder, encoder)


def test_check_preprocessing(tmp_path, encoder):
    ckpt = tmp_path / "task.ckpt"
    _task_checkpoint(ckpt, encoder)
    src = read_encoder_source(ckpt)
    # equal values in other spellings, and None (not given) pass
    src.check_preprocessing(img_size=[32, 32], in_chans=1, mean=[0.4], std=0.3, window=[40, 400], where="T")
    src.check_preprocessing(img_size=None, in_chans=None, mean=None, std=None, where="T")
    with pytest.raises(ValueError) as err:
        src.check_preprocessing(img_size=64, in_chans=1, mean=0.5, std=0.3, window="lung", where="Classifier")
    msg = str(err.value)
    assert msg.startswith("Classifier:") and str(ckpt) in msg
    assert "img_size 64 given, 32 recorded" in msg and "mean 0.5 given, 0.4 recorded" in msg and "window 'lung'" in msg
    assert "std 0.3" not in msg  # the agreeing std is not reported
    # a source that records no normalisation does not object to one
    read_encoder_source(encoder).check_preprocessing(img_size=32, in_chans=1, mean=0.5, std=0.25, where="T")


def test_bad_sources_name_the_file(tmp_path, encoder):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        read_encoder_source(tmp_path / "nowhere.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.ckpt: cannot read as a checkpoint"):
        read_encoder_source(garbage)
    garbage_st = tmp_path / "garbage.safetensors"
    garbage_st.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="garbage.safetensors"):
        read_encoder_source(garbage_st, arch="test_vit_tiny_patch8")
    plain = tmp_path / "plain.pth"
    torch.save(encoder.state_dict(), plain)
    with pytest.raises(ValueError, match="plain.pth: a plain state dict.*pass arch="):
        read_encoder_source(plain)
    with pytest.raises(ValueError, match="plain.pth: weights do not fit"):
        read_encoder_source(plain, arch="test_vit_tiny_patch8", encoder_kwargs={"embed_dim": 128, "num_heads": 2})
    old = tmp_path / "old_layout.ckpt"  # the network must sit under model.
    torch.save({"hyper_parameters": {"vision_encoder": "test_vit_tiny_patch8", "img_size": 32, "in_chans": 1,
                                     "image_mean": 0.5, "image_std": 0.25},
                "state_dict": {f"visual.{k}": v for k, v in encoder.state_dict().items()}}, old)
    with pytest.raises(ValueError, match=r"old_layout.ckpt: no 'model.visual.\*' weights"):
        read_encoder_source(old)
    lacking = tmp_path / "lacking.ckpt"
    torch.save({"hyper_parameters": {"lr": 1.0}, "state_dict": {}}, lacking)
    with pytest.raises(ValueError, match="lacking.ckpt: not a medvl task checkpoint"):
        read_encoder_source(lacking)

    out = export_encoder(encoder, tmp_path / "export", formats=())
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "format": "other/9"}))
    with pytest.raises(ValueError, match="config.json: unsupported export format 'other/9'"):
        read_encoder_source(out)
    (out / "config.json").write_text(json.dumps({**cfg, "vision_config": {**cfg["vision_config"], "depth": 3}}))
    with pytest.raises(ValueError, match="model.safetensors: weights do not fit"):
        read_encoder_source(out)
    (out / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        read_encoder_source(out)
    (out / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        read_encoder_source(out)
