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


def test_hf_tokenizer_wrappers_load_lazily_once_and_pickle_without_the_tokenizer(monkeypatch):
    import os
    import pickle

    import transformers

    from medvl.encoders.text import HFTokenizer
    from medvl.heads.report_decoder import PrefixLMTokenizer

    calls = []

    class _FakeTok:
        eos_token_id, bos_token_id, pad_token_id, sep_token_id = 2, 1, 0, None

        def __len__(self):
            return 10

    def fake_from_pretrained(path, **kwargs):
        calls.append((path, kwargs))
        return _FakeTok()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so teardown restores the caller's value
    monkeypatch.delenv("HF_HUB_OFFLINE")
    prefix = PrefixLMTokenizer("/lm", max_length=8)  # loads at construction for its special ids
    assert calls == [("/lm", {})] and "HF_HUB_OFFLINE" not in os.environ
    hf = HFTokenizer("/enc", context_length=16)
    assert hf._tok is None and len(calls) == 1  # nothing loaded before first use
    assert hf._load() is hf._load() and calls[-1] == ("/enc", {"local_files_only": True})
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # HFTokenizer never reaches a hub
    for tok in (prefix, hf):
        copy = pickle.loads(pickle.dumps(tok))
        assert copy._tok is None and tok._tok is not None
        assert {k: v for k, v in vars(copy).items() if k != "_tok"} == {
            k: v for k, v in vars(tok).items() if k != "_tok"}
