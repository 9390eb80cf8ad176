"""METEOR (Banerjee & Lavie 2005; Lavie & Agarwal 2007) natively, as NLTK's ``meteor_score``.

Unigram alignment in stages (exact, then Porter stem, then optional synonyms),
``Fmean = P R / (alpha P + (1 - alpha) R)``, fragmentation penalty
``gamma (chunks / matches) ** beta`` with alpha = 0.9, beta = 3, gamma = 0.5, best
reference per sample, mean over samples (``nltk/translate/meteor_score.py``, NLTK 3.10).
**This is not the Java METEOR 1.5 that pycocoevalcap calls**, and its values are higher
(measured in :mod:`medvl.metrics.nlg`): METEOR 1.5 uses tuned parameters (alpha 0.85,
beta 0.2, gamma 0.6, delta 0.75), weights content and function words differently, adds a
paraphrase table, uses the Snowball stemmer, searches for the alignment with fewest chunks
and pools statistics over the corpus. Values are therefore comparable with NLTK-based
METEOR numbers, not with papers that report pycocoevalcap's METEOR. Synonyms are off by
default (WordNet data is not shipped and a metric that changes with installed data is not
reproducible).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric, SummedStats
from medvl.metrics.nlg._stemmer import porter_stem
from medvl.metrics.nlg._tokenize import References, prepare_pairs

__all__ = ["Meteor", "meteor"]


def _match_stage(hyp: list[tuple[int, str]], ref: list[tuple[int, str]]):
    """Pair equal forms, each hypothesis word (from the last) with the last free reference word."""
    positions: dict[str, list[int]] = defaultdict(list)
    for j, (_, form) in enumerate(ref):
        positions[form].append(j)
    pairs, used_h, used_r = [], set(), set()
    for i in range(len(hyp) - 1, -1, -1):
        free = positions.get(hyp[i][1])
        if free:
            j = free.pop()
            used_h.add(i)
            used_r.add(j)
            pairs.append((hyp[i][0], ref[j][0]))
    return (pairs, [p for i, p in enumerate(hyp) if i not in used_h], [p for j, p in enumerate(ref) if j not in used_r])


def _synonym_stage(hyp, ref, synonyms: Callable[[str], Iterable[str]]):
    positions: dict[str, list[int]] = defaultdict(list)
    for j, (_, form) in enumerate(ref):
        positions[form].append(j)
    pairs, used_h, used_r = [], set(), set()
    for i in range(len(hyp) - 1, -1, -1):
        best_j, best = -1, None
        for syn in set(synonyms(hyp[i][1])) | {hyp[i][1]}:
            free = positions.get(syn)
            if free and free[-1] > best_j:
                best_j, best = free[-1], syn
        if best is not None:
            positions[best].pop()
            used_h.add(i)
            used_r.add(best_j)
            pairs.append((hyp[i][0], ref[best_j][0]))
    return (pairs, [p for i, p in enumerate(hyp) if i not in used_h], [p for j, p in enumerate(ref) if j not in used_r])


def _meteor_single(hyp: list[str], ref: list[str], alpha: float, beta: float, gamma: float,
                   stem: Callable[[str], str], synonyms: Callable[[str], Iterable[str]] | None) -> float:
    h = list(enumerate(hyp))
    r = list(enumerate(ref))
    exact, h, r = _match_stage(h, r)
    stemmed, h_s, r_s = _match_stage([(i, stem(w)) for i, w in h], [(j, stem(w)) for j, w in r])
    matches = exact + stemmed
    if synonyms is not None:  # surface forms of the words still unmatched (NLTK looks up the stems)
        left_h, left_r = {i for i, _ in h_s}, {j for j, _ in r_s}
        syn, _, _ = _synonym_stage([p for p in h if p[0] in left_h], [p for p in r if p[0] in left_r], synonyms)
        matches += syn
    matches.sort(key=lambda pair: pair[0])
    m = len(matches)
    if m == 0 or not hyp or not ref:
        return 0.0
    precision, recall = m / len(hyp), m / len(ref)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    chunks = 1
    for (i0, j0), (i1, j1) in zip(matches, matches[1:]):
        if not (i1 == i0 + 1 and j1 == j0 + 1):
            chunks += 1
    penalty = gamma * (chunks / m) ** beta
    return (1 - penalty) * fmean


def meteor(hypotheses: Sequence[str], references: References, *, alpha: float = 0.9, beta: float = 3.0,
           gamma: float = 0.5, stemmer: Callable[[str], str] = porter_stem,
           synonyms: Callable[[str], Iterable[str]] | None = None, tokenized: bool = False
           ) -> tuple[float, np.ndarray]:
    """METEOR per sample (best reference) and its mean, in NLTK's formulation.

    Args:
        hypotheses: One generated text per sample.
        references: One reference text, or a list of them, per sample.
        alpha: Weight of precision against recall in the harmonic mean.
        beta: Exponent of the fragmentation penalty.
        gamma: Maximum fragmentation penalty.
        stemmer: Stem function of the second matching stage.
        synonyms: Word -> synonyms for a third stage (e.g. WordNet lemmas); none by default.
        tokenized: Inputs are already tokenised.

    Returns:
        Mean METEOR and the ``(N,)`` per-sample scores.
    """
    hyps, refs = prepare_pairs(hypotheses, references, tokenized)
    cache: dict[str, str] = {}

    def stem(w: str) -> str:
        if w not in cache:
            cache[w] = stemmer(w)
        return cache[w]

    scores = np.array([max(_meteor_single(h.split(), r.split(), alpha, beta, gamma, stem, synonyms) for r in group)
                       for h, group in zip(hyps, refs)], dtype=np.float64)
    return (float(np.mean(scores)) if scores.size else float("nan")), scores


class Meteor(CorpusMetric):
    """Mean sentence-level METEOR (NLTK formulation, exact + Porter stem matching)."""

    name = "meteor"

    def __init__(self, *, tokenized: bool = False, **kwargs):
        self.tokenized, self.kwargs = tokenized, kwargs

    def prepare(self, hypotheses, references) -> PreparedMetric:
        score, per_sample = meteor(hypotheses, references, tokenized=self.tokenized, **self.kwargs)
        return SummedStats.mean_of(per_sample, point=score)
