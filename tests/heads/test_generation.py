"""Decoding strategies against brute force on a small Markov 'language model'."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from medvl.heads.generation import _banned_ngram_tokens, beam_search, greedy, sample

V, BOS, EOS = 5, 0, 1


def _markov(seed: int) -> tuple[torch.Tensor, callable]:
    """Next-token log-probabilities depending on the last token only."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(V, V, generator=g) * 2
    logits[:, BOS] = -1e9  # never emit <bos> again
    logp = torch.log_softmax(logits, -1)
    return logp, lambda ids: logp[ids[:, -1]]


def _exhaustive_best(logp: torch.Tensor, max_length: int, length_penalty: float) -> list[int]:
    best, best_score = None, -math.inf
    for n in range(1, max_length):  # number of generated tokens
        for seq in itertools.product(range(1, V), repeat=n):
            if EOS in seq[:-1] or (seq[-1] != EOS and n != max_length - 1):
                continue  # hypotheses end at <eos>, or are cut at max_length
            full = [BOS, *seq]
            score = sum(float(logp[a, b]) for a, b in zip(full, full[1:]))
            score /= n ** length_penalty
            if score > best_score:
                best, best_score = full, score
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_optimum(seed, length_penalty):
    logp, step = _markov(seed)
    ids = beam_search(step, 1, bos_id=BOS, eos_id=EOS, max_length=5, num_beams=V ** 3, length_penalty=length_penalty)
    got = ids[0].tolist()
    got = got[: got.index(EOS) + 1] if EOS in got else got
    assert got == _exhaustive_best(logp, 5, length_penalty)


def test_greedy_follows_the_argmax_chain_and_batches_independently():
    logp, step = _markov(3)
    ids = greedy(step, 2, bos_id=BOS, eos_id=EOS, max_length=8)
    seq, want = [BOS], [BOS]
    while len(want) < ids.shape[1] and want[-1] != EOS:
        want.append(int(logp[want[-1]].argmax()))
    assert ids[0, : len(want)].tolist() == want == ids[1, : len(want)].tolist()


def test_beam_one_equals_greedy():
    _, step = _markov(5)
    g = greedy(step, 1, bos_id=BOS, eos_id=EOS, max_length=10)
    b = beam_search(step, 1, bos_id=BOS, eos_id=EOS, max_length=10, num_beams=1, length_penalty=0.0)
    n = min(g.shape[1], b.shape[1])
    assert g[0, :n].tolist() == b[0, :n].tolist()


def test_no_repeat_ngram_blocks_repetition():
    # A model that loves to repeat "2 3 2 3 ...".
    logp = torch.full((V, V), -10.0)
    logp[BOS, 2] = logp[2, 3] = logp[3, 2] = 0.0
    logp[:, EOS] = -5.0
    step = lambda ids: torch.log_softmax(logp[ids[:, -1]], -1)  # noqa: E731
    plain = greedy(step, 1, bos_id=BOS, eos_id=EOS, max_length=12)[0].tolist()
    assert plain[1:9] == [2, 3, 2, 3, 2, 3, 2, 3]
    for ids in (greedy(step, 1, bos_id=BOS, eos_id=EOS, max_length=12, no_repeat_ngram_size=2),
                beam_search(step, 1, bos_id=BOS, eos_id=EOS, max_length=12, num_beams=3, no_repeat_ngram_size=2)):
        seq = ids[0].tolist()
        seq = seq[: seq.index(EOS)] if EOS in seq else seq
        bigrams = list(zip(seq, seq[1:]))
        assert len(bigrams) == len(set(bigrams)), seq
    assert _banned_ngram_tokens([2, 3, 2], 2) == {3}


def test_sampling_top_k_one_is_greedy_and_seeded_sampling_is_reproducible():
    _, step = _markov(7)
    g = greedy(step, 3, bos_id=BOS, eos_id=EOS, max_length=9)
    s = sample(step, 3, bos_id=BOS, eos_id=EOS, max_length=9, top_k=1)
    assert torch.equal(g[:, : s.shape[1]], s[:, : g.shape[1]])
    a = sample(step, 4, bos_id=BOS, eos_id=EOS, max_length=9, top_p=0.9, generator=torch.Generator().manual_seed(0))
    b = sample(step, 4, bos_id=BOS, eos_id=EOS, max_length=9, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
