"""ImageTextModel with torch alone: build, forward, towers, tokenizers, temperature, gradients."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from medvl.losses import ClipLoss, SigLipLoss
from medvl.networks import ImageTextModel

REPORTS = ["No pleural effusion.", "Large right pleural effusion.", "Moderate cardiomegaly.",
           "Endotracheal tube 4 cm above the carina."]


def _tiny(**kw) -> ImageTextModel:
    torch.manual_seed(0)
    return ImageTextModel(vision_encoder="test_vit_tiny_patch8", text_encoder="test_text_tiny", img_size=32,
                          embed_dim=16, **kw)


def test_importing_networks_does_not_import_lightning():
    probe = ("import sys, medvl.networks; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]; "
             "print(bad[:5]); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert res.returncode == 0, f"medvl.networks imports Lightning: {res.stdout} {res.stderr[-2000:]}"


@pytest.mark.parametrize("bias", [None, -10.0])
def test_forward_returns_the_features_the_losses_take(bias):
    model = _tiny(init_logit_bias=bias)
    image = torch.randn(4, 1, 32, 32)
    out = model(image, REPORTS)
    assert out["image_features"].shape == out["text_features"].shape == (4, 16)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(out["text_features"].norm(dim=-1), torch.ones(4))
    assert out["patch_tokens"].shape == (4, 16, model.visual.num_features)  # class token dropped
    torch.testing.assert_close(out["logit_scale"], torch.tensor(1 / 0.07))
    assert ("logit_bias" in out) == (bias is not None)
    loss = (SigLipLoss() if bias is not None else ClipLoss())(**out)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_network_does_not_normalise_images():
    model = _tiny().eval()
    x = torch.randn(2, 1, 32, 32)  # already normalised by the data pipeline
    with torch.no_grad():
        pooled = model.visual.forward_head(model.visual.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.encode_image(x), F.normalize(model.image_proj(pooled), dim=-1))
        torch.testing.assert_close(model.encode_image(x, normalize=False), model.image_proj(pooled))


def test_text_as_strings_tokens_or_ids_agree_and_the_tokenizer_pickles():
    model = _tiny().eval()
    tokenizer = pickle.loads(pickle.dumps(model.tokenizer))  # as sent to a loader worker
    tokens = tokenizer(REPORTS)
    assert set(tokens) == {"input_ids", "attention_mask"} and tokens["input_ids"].dtype == torch.long
    with torch.no_grad():
        from_text = model.encode_text(REPORTS)
        torch.testing.assert_close(model.encode_text(tokens), from_text)
        torch.testing.assert_close(model.encode_text(tokens["input_ids"]), from_text, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_text(REPORTS[0]), from_text[:1])


def test_logit_scale_is_clamped():
    model = _tiny(max_logit_scale=50.0)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    torch.testing.assert_close(model.scale(), torch.tensor(50.0))
    assert model(torch.randn(2, 1, 32, 32), REPORTS[:2])["logit_scale"].item() == pytest.approx(50.0)


def test_hf_text_tower_has_a_picklable_tokenizer():
    from medvl.encoders.text import HFTokenizer, minilm_path

    model = ImageTextModel(vision_encoder="test_vit_tiny_patch8", text_encoder="hf_text", img_size=32, embed_dim=8,
                           text_kwargs={"model_path": minilm_path(), "pretrained": False}).eval()
    assert isinstance(model.tokenizer, HFTokenizer)
    blob = pickle.dumps(model.tokenizer)
    assert len(blob) < 2000  # the folder and length travel, not the vocabulary
    tokens = pickle.loads(blob)(REPORTS)
    torch.testing.assert_close(tokens["input_ids"], model.tokenizer(REPORTS)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), model.encode_text(REPORTS))


@pytest.mark.parametrize("bias", [None, -10.0])
def test_no_parameter_is_0d_and_the_outputs_are_0d_scalars(bias):
    # FSDP refuses 0-d parameters: the temperature and bias are (1,); the losses get 0-d scalars.
    model = _tiny(init_logit_bias=bias)
    assert all(p.ndim > 0 for p in model.parameters())
    assert model.logit_scale.shape == (1,) and model.scale().shape == ()
    out = model(torch.randn(2, 1, 32, 32), REPORTS[:2])
    assert out["logit_scale"].shape == ()
    if bias is not None:
        assert model.logit_bias.shape == (1,) and out["logit_bias"].shape == () and out["logit_bias"].item() == bias


@pytest.mark.parametrize("bias", [None, -10.0])
def test_a_state_dict_with_0d_temperature_loads(bias):
    # written by medvl before the (1,) parameters
    model = _tiny(init_logit_bias=bias)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    old["logit_scale"] = torch.tensor(2.5)
    if bias is not None:
        old["logit_bias"] = torch.tensor(-4.0)
    given = dict(old)
    fresh = _tiny(init_logit_bias=bias)
    fresh.load_state_dict(old)  # strict
    assert fresh.logit_scale.shape == (1,) and fresh.logit_scale.item() == 2.5
    if bias is not None:
        assert fresh.logit_bias.shape == (1,) and fresh.logit_bias.item() == -4.0
    assert old["logit_scale"].shape == () and old.keys() == given.keys()  # the caller's dict is left alone


def test_one_tower_forwards_are_the_towers():
    model = _tiny(init_logit_bias=-10.0).eval()
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        both = model(image, REPORTS[:2])
        text = model(text=REPORTS[:2])
        img = model(image=image)
    assert set(text) == {"text_features", "logit_scale", "logit_bias"}
    assert set(img) == {"image_features", "patch_tokens", "logit_scale", "logit_bias"}
    torch.testing.assert_close(text["text_features"], both["text_features"])
    torch.testing.assert_close(img["image_features"], both["image_features"])
    torch.testing.assert_close(text["logit_scale"], model.scale())
    with pytest.raises(ValueError, match="needs an image, a text or both"):
        model()
