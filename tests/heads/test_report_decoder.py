"""Report decoders: causality, memory, the prefix LM on a locally built tiny GPT-2, the vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvl.data.vocab import SPECIAL_TOKENS, WordTokenizer, tokenize_words
from medvl.heads.memory import CrossModalMemory
from medvl.heads.report_decoder import PrefixLMDecoder, TransformerReportDecoder

REPORTS = [
    "The heart size is normal. No pleural effusion or pneumothorax.",
    "Small right pleural effusion. No pneumothorax.",
    "Moderate cardiomegaly. Left lower lobe opacity, possibly atelectasis.",
    "Endotracheal tube terminates 4 cm above the carina.",
]


def make_tiny_lm(folder: Path) -> Path:
    """A 2-layer GPT-2 and a word-level fast tokenizer, saved like a Hugging Face model folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted({w for r in REPORTS for w in tokenize_words(r)})
    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=96, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder


def test_word_tokenizer_round_trip_and_unknown_words():
    tok = WordTokenizer.build(REPORTS * 3, min_freq=3)
    assert tuple(tok.vocab[:4]) == SPECIAL_TOKENS
    ids = tok.encode(REPORTS[1])
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "small right pleural effusion. no pneumothorax."
    assert tok.encode("zygomatic")[1] == tok.unk_id
    batch = tok(["no effusion.", REPORTS[0]])
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][0].sum() == 5
    # Odd Unicode normalises instead of producing junk tokens.
    assert tokenize_words("No\u00a0pleural\u200b effusion\uff0e") == ["no", "pleural", "effusion", "."]


def test_transformer_decoder_is_causal_and_uses_the_image():
    torch.manual_seed(0)
    dec = TransformerReportDecoder(vocab_size=30, visual_dim=16, dim=32, depth=2, num_heads=4, max_length=20,
                                   dropout=0.0, memory_slots=64, memory_topk=8).eval()
    ids = torch.randint(4, 30, (2, 10))
    vis = dec.encode_visual(torch.randn(2, 7, 16))
    logits = dec(ids, vis)
    assert logits.shape == (2, 10, 30)
    changed = ids.clone()
    changed[:, 6:] = torch.randint(4, 30, (2, 4))
    torch.testing.assert_close(dec(changed, vis)[:, :6], logits[:, :6])  # the future does not leak
    other = dec.encode_visual(torch.randn(2, 7, 16))
    assert (dec(ids, other) - logits).abs().max() > 1e-3  # the image matters


def test_cross_modal_memory_reads_topk_slots():
    torch.manual_seed(0)
    mem = CrossModalMemory(dim=16, num_slots=32, num_heads=2, topk=4, dropout=0.0)
    x = torch.randn(3, 5, 16)
    out = mem(x)
    assert out.shape == x.shape
    # Dense reference: softmax over each query's top-k slot scores, everything else masked.
    with torch.no_grad():
        q = mem.q(x).view(3, 5, 2, 8).transpose(1, 2)  # (B, H, L, hd)
        k = mem.k(mem.memory).view(-1, 2, 8).transpose(0, 1)  # (H, S, hd)
        v = mem.v(mem.memory).view(-1, 2, 8).transpose(0, 1)
        scores = torch.einsum("bhld,hsd->bhls", q, k) / 8 ** 0.5
        kth = scores.topk(4, -1).values[..., -1:]
        attn = scores.masked_fill(scores < kth, float("-inf")).softmax(-1)
        resp = torch.einsum("bhls,hsd->bhld", attn, v).transpose(1, 2).reshape(3, 5, 16)
        torch.testing.assert_close(out, x + mem.out(resp))


def test_prefix_lm_decoder_matches_the_language_model_and_stages(tmp_path):
    folder = make_tiny_lm(tmp_path / "lm")
    dec = PrefixLMDecoder(str(folder), visual_dim=16, num_prefix_tokens=4, train_lm=False).eval()
    assert not any(p.requires_grad for p in dec.lm.parameters())
    assert all(p.requires_grad for p in dec.projector.parameters())
    tok = dec.tokenize(REPORTS[:2])
    vis = dec.encode_visual(torch.randn(2, 9, 16))
    assert vis.shape == (2, 4, 32)
    logits = dec(tok["input_ids"], vis, tok["attention_mask"])
    assert logits.shape == (*tok["input_ids"].shape, dec.lm.config.vocab_size)
    # The same as running the LM by hand on [prefix; word embeddings].
    emb = torch.cat([vis, dec.lm.get_input_embeddings()(tok["input_ids"])], 1)
    mask = torch.cat([torch.ones(2, 4, dtype=torch.long), tok["attention_mask"]], 1)
    torch.testing.assert_close(logits, dec.lm(inputs_embeds=emb, attention_mask=mask).logits[:, 4:])
    assert dec.decode(tok["input_ids"][1]) == "small right pleural effusion . no pneumothorax ."
    dec.set_train_lm(True)
    assert all(p.requires_grad for p in dec.lm.parameters())
