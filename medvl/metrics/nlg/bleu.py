"""BLEU-1..4 (Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation", ACL 2002).

Exactly as the COCO caption evaluation's ``pycocoevalcap/bleu/bleu_scorer.py``: clipped
n-gram counts, corpus-level statistics summed over samples, the *closest* reference
length (ties to the shorter), the brevity penalty ``exp(1 - r/c)``, and the
``tiny=1e-15`` / ``small=1e-9`` guards; per-sample scores are the same formula on one
sample. :class:`Bleu` bootstraps the corpus score by re-summing per-sample statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric, SummedStats
from medvl.metrics.nlg._tokenize import References, ngram_counts, prepare_pairs

__all__ = ["Bleu", "bleu"]

_TINY, _SMALL = 1e-15, 1e-9  # bleu_scorer.py's guards against 0/0


def _bleu_stats(hyp: str, refs: Sequence[str], n: int) -> list[float]:
    """Sufficient statistics of one sample: testlen, closest reflen, guess[n], correct[n]."""
    words = hyp.split()
    counts = ngram_counts(words, n)
    max_ref: dict[tuple[str, ...], int] = {}
    ref_lens = []
    for ref in refs:
        ref_words = ref.split()
        ref_lens.append(len(ref_words))
        for gram, c in ngram_counts(ref_words, n).items():
            max_ref[gram] = max(max_ref.get(gram, 0), c)
    testlen = len(words)
    reflen = min((abs(length - testlen), length) for length in ref_lens)[1]  # closest, ties to shorter
    guess = [max(0, testlen - k + 1) for k in range(1, n + 1)]
    correct = [0] * n
    for gram, c in counts.items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), c)
    return [testlen, reflen, *guess, *correct]


def _bleu_from_stats(stats: Sequence[float], n: int) -> list[float]:
    """BLEU-1..n from (summed) statistics, with bleu_scorer.py's arithmetic."""
    testlen, reflen = stats[0], stats[1]
    guess, correct = stats[2 : 2 + n], stats[2 + n : 2 + 2 * n]
    out, acc = [], 1.0
    for k in range(n):
        acc *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        out.append(acc ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def _bleu_from_stats_batch(sums: np.ndarray, n: int, order: int) -> np.ndarray:
    """BLEU-``order`` for a batch of summed statistics ``(B, 2 + 2n)`` -> ``(B,)``."""
    guess, correct = sums[:, 2 : 2 + n], sums[:, 2 + n : 2 + 2 * n]
    acc = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1)[:, order - 1]
    score = acc ** (1.0 / order)
    ratio = (sums[:, 0] + _TINY) / (sums[:, 1] + _SMALL)
    short = ratio < 1
    score[short] *= np.exp(1 - 1 / ratio[short])
    return score


def bleu(hypotheses: Sequence[str], references: References, n: int = 4, *, tokenized: bool = False
         ) -> tuple[list[float], np.ndarray]:
    """Corpus BLEU-1..n and per-sample BLEU as pycocoevalcap computes them.

    Args:
        hypotheses: One generated text per sample.
        references: One reference text, or a list of them, per sample.
        n: Highest n-gram order.
        tokenized: Inputs are already tokenised (space-separated); skip :func:`ptb_tokenize`.

    Returns:
        ``[BLEU-1, ..., BLEU-n]`` of the corpus and an ``(N, n)`` array of per-sample scores.
    """
    hyps, refs = prepare_pairs(hypotheses, references, tokenized)
    stats = [_bleu_stats(h, r, n) for h, r in zip(hyps, refs)]
    per_sample = np.array([_bleu_from_stats(s, n) for s in stats], dtype=np.float64).reshape(len(stats), n)
    totals = [sum(s[k] for s in stats) for k in range(2 + 2 * n)]
    return _bleu_from_stats(totals, n), per_sample


class Bleu(CorpusMetric):
    """Corpus BLEU-``order`` (COCO conventions); resamples re-sum the per-sample statistics."""

    def __init__(self, order: int = 4, *, tokenized: bool = False):
        self.order, self.tokenized = order, tokenized
        self.name = f"bleu{order}"

    def prepare(self, hypotheses, references) -> PreparedMetric:
        hyps, refs = prepare_pairs(hypotheses, references, self.tokenized)
        n = self.order
        stats = np.array([_bleu_stats(h, r, n) for h, r in zip(hyps, refs)], dtype=np.float64)
        stats = stats.reshape(len(hyps), 2 + 2 * n)
        point = _bleu_from_stats([int(x) for x in stats.sum(axis=0)], n)[n - 1]
        return SummedStats(stats, lambda sums: _bleu_from_stats_batch(sums, n, n), point=point)
