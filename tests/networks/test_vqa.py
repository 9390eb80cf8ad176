"""VQA networks with torch alone: the fusion classifier, the generative head, their tokenizer and loss."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from medvl.data.vocab import SPECIAL_TOKENS, WordTokenizer
from medvl.heads import generation
from medvl.heads.vqa import ANSWER_TOKEN, QATokenizer, answer_log_likelihood
from medvl.losses import CaptioningLoss, VQALoss
from medvl.networks import FusionVQA, GenerativeVQA
from tests.heads.test_report_decoder import make_tiny_lm

QUESTIONS = ["is there a pleural effusion?", "which side is the effusion on?", "is the heart enlarged?",
             "which side is the effusion on?"]
ANSWERS = ["yes", "left", "no", "right"]
DECODER = {"dim": 32, "depth": 1, "num_heads": 2, "dropout": 0.0}


def _images(n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 32, 32, generator=g)


def _vocab() -> list[str]:
    words = WordTokenizer.build(QUESTIONS + ANSWERS, min_freq=1).vocab[len(SPECIAL_TOKENS):]
    return [*SPECIAL_TOKENS, ANSWER_TOKEN, *words]


def _fusion(**kw) -> FusionVQA:
    torch.manual_seed(0)
    kw = {"vision_encoder": "test_vit_tiny_patch8", "img_size": 32, "text_encoder": "test_text_tiny",
          "fusion_kwargs": {"dim": 32, "depth": 1, "num_heads": 2, "dropout": 0.0}, **kw}
    return FusionVQA(["yes", "no", "left", "right"], **kw)


def _generative(**kw) -> GenerativeVQA:
    torch.manual_seed(0)
    kw = {"vision_encoder": "test_vit_tiny_patch8", "img_size": 32, "decoder_kwargs": DECODER, **kw}
    return GenerativeVQA(**kw)


def test_vqa_loss_by_hand():
    logits = torch.zeros(2, 2)
    # BCE on soft scores, summed over the 2 answers: every element costs log 2.
    assert VQALoss("bce")(logits, torch.tensor([0, 1])).item() == pytest.approx(2 * math.log(2))
    # Cross-entropy of a uniform 2-way softmax: log 2.
    assert VQALoss("ce")(logits, torch.tensor([0, 1])).item() == pytest.approx(math.log(2))
    # An answer outside the vocabulary: an all-zero score row (BCE), no loss (CE).
    assert VQALoss("bce")(logits, torch.tensor([-1, -1])).item() == pytest.approx(2 * math.log(2))
    assert VQALoss("ce")(logits, torch.tensor([-1, -1])).item() == 0.0
    confident = torch.tensor([[10.0, -10.0]])
    assert VQALoss("ce")(confident, torch.tensor([0])).item() < 1e-4
    with pytest.raises(ValueError, match="kind"):
        VQALoss("mse")
    with pytest.raises(ValueError, match="do not fit"):
        VQALoss()(logits, torch.tensor([0]))


def test_qa_tokenizer_layout_and_pickling():
    tok = WordTokenizer(_vocab())
    qa = QATokenizer(tok)
    out = qa(["is the heart enlarged?"], ["no"])
    sep = tok.index[ANSWER_TOKEN]
    q = tok.encode("is the heart enlarged?")[1:-1]
    assert out["input_ids"][0].tolist() == [tok.bos_id, *q, sep, tok.index["no"], tok.eos_id]
    assert out["answer_mask"][0].tolist() == [0] * (len(q) + 2) + [1, 1]
    assert out["attention_mask"].sum().item() == len(q) + 4
    assert qa.decode([tok.index["no"], tok.eos_id, tok.index["yes"]]) == "no"
    assert pickle.loads(pickle.dumps(qa))(["a"], ["yes"])["input_ids"].shape == (1, 5)
    with pytest.raises(ValueError, match=ANSWER_TOKEN):
        QATokenizer(WordTokenizer(list(SPECIAL_TOKENS) + ["yes"]))
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        qa(["a", "b"], ["yes"])


def test_fusion_forward_freeze_and_vocabulary():
    model = _fusion(freeze="all")
    out = model(_images(), QUESTIONS)
    assert out["logits"].shape == (4, 4)
    VQALoss()(**out, targets=torch.tensor([0, 2, 1, 3])).backward()
    assert all(p.grad is None for p in model.visual.parameters())
    assert model.head.mlp[-1].weight.grad is not None and model.text.token_embedding.weight.grad is not None
    model.train()
    assert not model.visual.training and model.fusion.training  # the frozen encoder stays in eval mode
    model.set_answers(["yes", "no"])
    assert model(_images(2), QUESTIONS[:2])["logits"].shape == (2, 2)
    with pytest.raises(ValueError, match="repeats"):
        model.set_answers(["yes", "yes"])
    with pytest.raises(RuntimeError, match="no vocabulary"):
        FusionVQA(vision_encoder="test_vit_tiny_patch8", img_size=32, text_encoder="test_text_tiny")(
            _images(1), ["q"])


def test_fusion_learns_image_dependent_answers():
    # The same question, answered by the image alone: the classifier must read the patches.
    torch.manual_seed(0)
    images = _images(4)
    answers = torch.tensor([2, 3, 2, 3])  # left, right
    model = _fusion()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        opt.zero_grad()
        VQALoss("ce")(**model(images, ["which side?"] * 4), targets=answers).backward()
        opt.step()
    model.eval()
    assert model.answer(images, ["which side?"] * 4) == ["left", "right", "left", "right"]


def test_generative_head_learns_answers_greedy_beam_and_ranking():
    images = _images(4)
    model = _generative(vocab=_vocab())
    tokens = model.qa_tokenizer(QUESTIONS, ANSWERS)
    out = model(images, tokens)
    # Only the answer tokens and <eos> are targets: 2 per question.
    assert int((out["targets"] != -100).sum()) == 8
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        opt.zero_grad()
        CaptioningLoss()(**model(images, tokens)).backward()
        opt.step()
    model.eval()
    assert model.answer(images, QUESTIONS) == ANSWERS
    assert model.answer(images, QUESTIONS, decoding="beam", num_beams=2) == ANSWERS
    assert model.rank(images, QUESTIONS, ["yes", "no", "left", "right"]) == ANSWERS
    with pytest.raises(ValueError, match="decoding"):
        model.answer(images, QUESTIONS, decoding="sample")


def test_answer_log_likelihood_sums_target_positions():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75]]]))
    targets = torch.tensor([[-100, 1]])
    assert answer_log_likelihood(logits, targets).item() == pytest.approx(math.log(0.75))


def test_greedy_continues_a_prefix():
    prefix = torch.tensor([[1, 7, 8]])
    # A step that always prefers token 5, then <eos> (2) once 5 was written.
    def step(ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(ids.shape[0], 10)
        logits[:, 2 if (ids == 5).any() else 5] = 1.0
        return logits

    out = generation.greedy(step, 1, bos_id=1, eos_id=2, max_length=8, prefix=prefix)
    assert out[0].tolist() == [1, 7, 8, 5, 2]
    beam = generation.beam_search(step, 1, bos_id=1, eos_id=2, max_length=8, num_beams=2, prefix=prefix)
    assert beam[0].tolist()[:5] == [1, 7, 8, 5, 2]
    with pytest.raises(ValueError, match="prefix"):
        generation.greedy(step, 2, bos_id=1, eos_id=2, max_length=8, prefix=prefix)


def test_generative_prefix_lm_forward_and_answer(tmp_path):
    lm = make_tiny_lm(tmp_path / "lm")
    model = _generative(decoder="prefix_lm", lm_path=str(lm), decoder_kwargs={"num_prefix_tokens": 4})
    tokens = model.qa_tokenizer(["no effusion?"], ["no"])
    assert tokens["answer_mask"][0].sum() == 2  # "no" and <eos>
    out = model(_images(1), tokens)
    assert out["logits"].shape[:2] == out["targets"].shape
    answers = model.answer(_images(2), ["effusion?", "small effusion on the right?"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert pickle.loads(pickle.dumps(model.qa_tokenizer))(["a"], ["no"])["input_ids"].shape[0] == 1
