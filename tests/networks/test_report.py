"""ReportGenerator with torch alone: build, teacher-forced forward, loss, freezing, generation, tokenizers."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from medvl.data.vocab import WordTokenizer
from medvl.losses import CaptioningLoss
from medvl.networks import ReportGenerator
from tests.heads.test_report_decoder import REPORTS, make_tiny_lm

DECODER = {"dim": 32, "depth": 1, "num_heads": 2, "dropout": 0.0}


def _vocab() -> list[str]:
    return WordTokenizer.build(REPORTS, min_freq=1).vocab


def _tiny(**kw) -> ReportGenerator:
    torch.manual_seed(0)
    kw = {"vision_encoder": "test_vit_tiny_patch8", "img_size": 32, "decoder_kwargs": DECODER, "max_length": 16, **kw}
    return ReportGenerator(**kw)


def test_teacher_forced_forward_and_captioning_loss():
    model = _tiny(vocab=_vocab())
    image = torch.randn(4, 1, 32, 32)
    out = model(image, REPORTS)
    tokens = model.tokenizer(REPORTS)
    T = tokens["input_ids"].shape[1]
    assert out["logits"].shape == (4, T - 1, len(model.tokenizer))
    pad = tokens["attention_mask"][:, 1:] == 0
    assert pad.any() and (out["targets"][pad] == -100).all()
    torch.testing.assert_close(out["targets"][~pad], tokens["input_ids"][:, 1:][~pad])
    loss = CaptioningLoss()(**out)
    ref = F.cross_entropy(out["logits"].flatten(0, 1), out["targets"].flatten(), ignore_index=-100)
    torch.testing.assert_close(loss, ref)
    assert CaptioningLoss(label_smoothing=0.1)(**out) != loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # Tokens made elsewhere (a loader worker) give the same logits as raw strings.
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(image, REPORTS)["logits"], model(image, tokens)["logits"])


def test_captioning_loss_is_fp32_under_autocast_and_checks_shapes():
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    targets[0, 3:] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CaptioningLoss()(logits=logits.bfloat16(), targets=targets, unused=1)
    assert loss.dtype == torch.float32
    with pytest.raises(ValueError, match="do not fit"):
        CaptioningLoss()(logits, targets[:, :4])


def test_vocabulary_can_come_later():
    model = _tiny()
    assert model.decoder is None and model.vocab is None
    with pytest.raises(RuntimeError, match="vocabulary"):
        model(torch.randn(1, 1, 32, 32), REPORTS[:1])
    model.set_vocab(_vocab())
    assert model.vocab == _vocab() and model(torch.randn(1, 1, 32, 32), REPORTS[:1])["logits"].shape[0] == 1


@pytest.mark.parametrize("decoding", ["greedy", "beam", "sample"])
def test_generate_returns_one_report_per_image(decoding):
    model = _tiny(vocab=_vocab()).eval()
    image = torch.randn(3, 1, 32, 32)
    kw = {"generator": torch.Generator().manual_seed(0)} if decoding == "sample" else {}
    texts = model.generate(image, decoding=decoding, num_beams=2, max_length=8, **kw)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    if decoding == "sample":
        again = model.generate(image, decoding="sample", max_length=8, generator=torch.Generator().manual_seed(0))
        assert again == texts
    with pytest.raises(ValueError, match="decoding"):
        model.generate(image, decoding="nucleus")


def test_freeze_modes():
    frozen = _tiny(vocab=_vocab(), freeze="all").train()
    assert not any(p.requires_grad for p in frozen.visual.parameters())
    assert not frozen.visual.training and frozen.decoder.training  # a frozen encoder runs as at inference
    assert all(p.requires_grad for p in frozen.decoder.parameters())
    trained = _tiny(vocab=_vocab())
    assert all(p.requires_grad for p in trained.visual.parameters())
    partial = _tiny(vision_encoder="test_vit_tiny_gap_patch8", vision_kwargs={"fc_norm": True}, freeze="partial",
                    unfreeze_last=1, vocab=_vocab())
    assert all(p.requires_grad for p in partial.visual.blocks[-1].parameters())
    assert all(p.requires_grad for p in partial.visual.fc_norm.parameters())
    assert not any(p.requires_grad for p in partial.visual.blocks[0].parameters())
    with pytest.raises(ValueError, match="freeze"):
        _tiny(freeze="some")


def test_a_partly_frozen_conv_stem_keeps_its_batchnorm_statistics():
    # The frozen trunk runs as at inference: its BatchNorm neither normalises with the batch's
    # statistics nor updates its running ones; the trained last block is in training mode.
    model = _tiny(vision_kwargs={"stem": "conv"}, freeze="partial", unfreeze_last=1, vocab=_vocab()).train()
    bns = [m for m in model.visual.patch_embed.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns, "the conv stem has BatchNorm layers"
    before = [bn.running_mean.clone() for bn in bns]
    image = torch.randn(3, 1, 32, 32) * 3 + 1
    model(image, model.tokenizer(REPORTS[:3]))["logits"].sum().backward()
    for bn, old in zip(bns, before):
        assert not bn.training
        torch.testing.assert_close(bn.running_mean, old, rtol=0, atol=0)
    assert model.visual.blocks[-1].training and not model.visual.blocks[0].training
    assert model.visual.blocks[-1].attn.qkv.weight.grad is not None


def test_a_given_encoder_is_used_as_is():
    from medvl.encoders import create_encoder

    enc = create_encoder("test_vit_tiny_patch8", img_size=32, in_chans=1)
    assert _tiny(encoder=enc, vocab=_vocab()).visual is enc


def test_word_tokenizer_pickles():
    tok = WordTokenizer(_vocab(), max_length=16)
    copy = pickle.loads(pickle.dumps(tok))
    torch.testing.assert_close(copy(REPORTS)["input_ids"], tok(REPORTS)["input_ids"])


def test_prefix_lm_network_forward_generate_and_its_tokenizer_pickles(tmp_path):
    lm = make_tiny_lm(tmp_path / "lm")
    model = _tiny(decoder="prefix_lm", lm_path=str(lm), decoder_kwargs={"num_prefix_tokens": 4})
    assert not model.train_lm and not any(p.requires_grad for p in model.decoder.lm.parameters())
    tok = pickle.loads(pickle.dumps(model.tokenizer))
    assert tok._tok is None  # the Hugging Face tokenizer is reloaded in the worker, not pickled
    tokens = tok(REPORTS[:2])
    torch.testing.assert_close(tokens["input_ids"], model.tokenizer(REPORTS[:2])["input_ids"])
    image = torch.randn(2, 1, 32, 32)
    out = model(image, tokens)
    assert out["logits"].shape[:2] == out["targets"].shape
    texts = model.generate(image, decoding="greedy", max_length=6)
    assert len(texts) == 2
    model.set_train_lm(True)
    assert model.train_lm and all(p.requires_grad for p in model.decoder.lm.parameters())
    with pytest.raises(ValueError, match="lm_path"):
        _tiny(decoder="prefix_lm")
