import torch

from medvl.encoders import create_encoder, list_encoders
from medvl.encoders.text import BPETokenizer, HFTextEncoder, minilm_path


def test_tokenizer_pads_truncates_and_keeps_end_token():
    tok = BPETokenizer(context_length=8)
    out = tok(["no pneumothorax", "a very long report " * 10])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == (2, 8)
    assert ids[0, 0] == tok.sot_id and ids[1, 0] == tok.sot_id
    n0 = int(mask[0].sum())
    assert ids[0, n0 - 1] == tok.eot_id and (ids[0, n0:] == 0).all()
    assert int(mask[1].sum()) == 8 and ids[1, -1] == tok.eot_id


def test_text_transformer_padding_does_not_change_features():
    torch.manual_seed(0)
    enc = create_encoder("test_text_tiny").eval()
    short = enc.tokenize(["no pleural effusion"])
    batch = enc.tokenize(["no pleural effusion", "there is a large right pleural effusion with atelectasis"])
    with torch.no_grad():
        a = enc(**short)[0]
        b = enc(**batch)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_text_transformer_backward_reaches_every_parameter():
    enc = create_encoder("test_text_tiny")
    feats = enc(**enc.tokenize(["heart size is normal", "cardiomegaly"]))
    assert feats.shape == (2, enc.num_features)
    feats.square().sum().backward()
    unused = [n for n, p in enc.named_parameters() if p.grad is None]
    assert not unused
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters())


def test_text_encoders_are_registered_with_their_kind():
    assert {"test_text_tiny", "text_transformer_small", "hf_text"} <= set(list_encoders(kind="text"))
    assert "test_text_tiny" not in list_encoders(kind="vision")


def test_minilm_loads_offline_from_the_packaged_folder():
    enc = HFTextEncoder(minilm_path()).eval()
    with torch.no_grad():
        f = enc(**enc.tokenize(["No pneumothorax.", "There is no pneumothorax.", "The heart is enlarged."]))
    f = torch.nn.functional.normalize(f, dim=-1)
    assert f.shape == (3, 384)
    # A pretrained sentence encoder puts paraphrases closer than unrelated findings.
    assert f[0] @ f[1] > f[0] @ f[2]
