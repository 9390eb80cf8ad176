"""METEOR as pycocoevalcap computes it: a pure-Python port of METEOR 1.5 (``-l en -norm``).

METEOR (Banerjee & Lavie, ACL 2005 workshop; Denkowski & Lavie, "Meteor Universal:
Language Specific Translation Evaluation for Any Target Language", WMT 2014) aligns a
hypothesis with each reference word by word, scores the alignment, keeps the best
reference, and pools statistics over the corpus. The COCO caption evaluation and with it
most report-generation papers run the Java ``meteor-1.5.jar`` that pycocoevalcap ships as
``java -jar meteor-1.5.jar - - -stdio -l en -norm``; this module reproduces that run without
Java:

* **Normalisation** (:mod:`~medvl.metrics.nlg._meteor_norm`): METEOR's Moses-style English
  normaliser, then lower case; tokens are whitespace-separated.
* **Matching and alignment** (:mod:`~medvl.metrics.nlg._meteor_align`): exact, Snowball
  stem, WordNet synonym and paraphrase matches, then METEOR's beam search (beam 40).
* **Scoring** (``MeteorScorer.computeMetrics``): English "rank" parameters alpha 0.85,
  beta 0.20, gamma 0.60, delta 0.75 and module weights exact 1.0, stem 0.6, synonym 0.8,
  paraphrase 0.6. Function words (METEOR's list of 93) count ``1 - delta`` and content
  words ``delta`` in the weighted precision ``P`` and recall ``R``;
  ``Fmean = 1 / ((1 - alpha) / P + alpha / R)``; the fragmentation penalty is
  ``gamma * (chunks / mean matches) ** beta`` (0 for a perfect single-chunk match);
  ``score = Fmean * (1 - penalty)``, 0 where undefined.
* **Corpus score**: pycocoevalcap's ``EVAL`` line. Each segment's statistics (of its best
  reference) are summed, without the chunk of a perfectly matched segment, and scored
  once: the corpus METEOR is *not* the mean of the segment scores. :class:`Meteor`
  bootstraps it by re-summing the per-segment statistics.
* pycocoevalcap's own handling of the text is kept too: ``|||`` is removed from the
  hypothesis and separates references, and the whitespace ends of each are trimmed.

Data: the word lists, WordNet synonyms and the 62 MB paraphrase table are read at run
time from the installed pycocoevalcap's ``meteor-1.5.jar`` and ``data/paraphrase-en.gz``
(:mod:`~medvl.metrics.nlg._meteor_data`; or from ``$MEDVL_METEOR_DIR``). medvl ships
none of them: METEOR's files are GNU LGPL 2.1 and its synonym files WordNet 3.0
(Princeton's licence), which would allow redistribution with their notices, but the
paraphrase table alone is 62 MB; without pycocoevalcap, scoring raises
:class:`MeteorDataError` naming what to install. The table is hashed once and cached
(``$MEDVL_CACHE_DIR``, default ``~/.cache/medvl/meteor``, 54 MB): the first use in a
fresh environment takes 25-40 s on this project's shared 2-core machine, later processes
load it in ~0.2 s and the WordNet and word lists in ~1 s; loaded, the data takes ~100 MB
of memory (52 MB of it the table's arrays). Stems come from the ``snowballstemmer``
package 2.2, whose English stemmer equals the jar's on all 163,261 words tested
(:mod:`~medvl.metrics.nlg._stemmer`).

Measured agreement with Java METEOR 1.5 (pycocoevalcap 1.2, OpenJDK 17): on the 384 pairs
of ``tests/metrics/test_meteor_parity.py`` (synthetic reports re-written from the same
findings, perturbed copies, MIMIC-style reports of radlabels' sample corpus, unrelated
pairs, edge cases; several references for some; half PTB-tokenised, half raw) the corpus
score is the same (0.398472, difference 0.0) and every segment score equals Java's
(largest difference 0.0; the test asserts the corpus within 0.005 and 95% of segments
within 0.01); on 840 more pairs (long reports shuffled and perturbed, strings of random
symbols and non-ASCII letters) the corpus scores are equal and the largest segment
difference is 1.1e-16; twelve pairs with Java's values are checked in
``tests/metrics/test_nlg.py`` without Java. Speed after loading: ~45-50 pairs per
CPU-second on MIMIC-length reports (46 words on average, up to 155) and ~180 on pairs of
one to four sentences; warm Java METEOR scores the 384 pairs at 40-50 pairs/s (and needs
~40 s to start).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric, SummedStats
from medvl.metrics.nlg._meteor_align import N_MODULES, Lexicon, Line, align
from medvl.metrics.nlg._meteor_data import MeteorDataError, paraphrase_table, resources
from medvl.metrics.nlg._meteor_norm import java_trim, normalize_line, tokenize
from medvl.metrics.nlg._tokenize import References, prepare_pairs

__all__ = ["METEOR_IMPLEMENTATION", "Meteor", "MeteorDataError", "meteor"]

METEOR_IMPLEMENTATION = ("medvl's Python port of METEOR 1.5 as pycocoevalcap runs it (meteor-1.5.jar -l en -norm: "
                         "exact, stem, synonym, paraphrase; corpus score from pooled statistics)")
"""What produced medvl's METEOR numbers; ``medvl eval reports`` records it."""

ALPHA, BETA, GAMMA, DELTA = 0.85, 0.20, 0.60, 0.75  # Constants.PARAM_RANK, English
MODULE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)  # Constants.WEIGHT_RANK, English: exact, stem, synonym, paraphrase

N_STATS = 4 + 4 * N_MODULES + 3
"""Per-segment statistics, in ``MeteorStats.toString`` order (see :func:`~medvl.metrics.nlg._meteor_align.align`)."""
_CHUNKS = 4 + 4 * N_MODULES


def _div(a: float, b: float) -> float:
    """Java's double division (IEEE: x/0 is +-inf, 0/0 is NaN) for non-negative operands."""
    if b == 0.0:
        return math.nan if a == 0.0 or a != a else math.inf
    return a / b


def _perfect(s: Sequence[float]) -> bool:
    """Every word of both sides matched, in one chunk (METEOR's fragmentation exception)."""
    t_total = sum(s[4 + 4 * k] + s[6 + 4 * k] for k in range(N_MODULES))
    r_total = sum(s[5 + 4 * k] + s[7 + 4 * k] for k in range(N_MODULES))
    return t_total == s[0] and r_total == s[1] and s[_CHUNKS] == 1


def score_stats(s: Sequence[float]) -> float:
    """``MeteorScorer.computeMetrics``: the METEOR score of (summed) statistics, in Java's operation order."""
    t_len, r_len, t_func, r_func = float(s[0]), float(s[1]), float(s[2]), float(s[3])
    t_wlen = (DELTA * (t_len - t_func)) + ((1.0 - DELTA) * t_func)
    r_wlen = (DELTA * (r_len - r_func)) + ((1.0 - DELTA) * r_func)
    t_wm = r_wm = 0.0
    for k, w in enumerate(MODULE_WEIGHTS):
        t_wm += float(s[4 + 4 * k]) * w * DELTA
    for k, w in enumerate(MODULE_WEIGHTS):
        r_wm += float(s[5 + 4 * k]) * w * DELTA
    for k, w in enumerate(MODULE_WEIGHTS):
        t_wm += float(s[6 + 4 * k]) * w * (1.0 - DELTA)
    for k, w in enumerate(MODULE_WEIGHTS):
        r_wm += float(s[7 + 4 * k]) * w * (1.0 - DELTA)
    precision, recall = _div(t_wm, t_wlen), _div(r_wm, r_wlen)
    if precision != precision or recall != recall:
        return 0.0
    fmean = _div(1.0, _div(1.0 - ALPHA, precision) + _div(ALPHA, recall))
    frag = 0.0 if _perfect(s) else _div(float(s[_CHUNKS]), float(s[_CHUNKS + 1] + s[_CHUNKS + 2]) / 2)
    penalty = GAMMA * math.pow(frag, BETA) if frag == frag else math.nan
    score = fmean * (1.0 - penalty)
    return 0.0 if score != score else max(score, 0.0)


def _score_batch(sums: np.ndarray) -> np.ndarray:
    """:func:`score_stats` for summed statistics ``(B, N_STATS)`` -> ``(B,)``."""
    s = np.asarray(sums, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_wlen = (DELTA * (s[:, 0] - s[:, 2])) + ((1.0 - DELTA) * s[:, 2])
        r_wlen = (DELTA * (s[:, 1] - s[:, 3])) + ((1.0 - DELTA) * s[:, 3])
        t_wm = np.zeros(len(s))
        r_wm = np.zeros(len(s))
        for k, w in enumerate(MODULE_WEIGHTS):
            t_wm = t_wm + s[:, 4 + 4 * k] * w * DELTA
        for k, w in enumerate(MODULE_WEIGHTS):
            r_wm = r_wm + s[:, 5 + 4 * k] * w * DELTA
        for k, w in enumerate(MODULE_WEIGHTS):
            t_wm = t_wm + s[:, 6 + 4 * k] * w * (1.0 - DELTA)
        for k, w in enumerate(MODULE_WEIGHTS):
            r_wm = r_wm + s[:, 7 + 4 * k] * w * (1.0 - DELTA)
        precision, recall = t_wm / t_wlen, r_wm / r_wlen
        fmean = 1.0 / (((1.0 - ALPHA) / precision) + (ALPHA / recall))
        t_total = sum(s[:, 4 + 4 * k] + s[:, 6 + 4 * k] for k in range(N_MODULES))
        r_total = sum(s[:, 5 + 4 * k] + s[:, 7 + 4 * k] for k in range(N_MODULES))
        perfect = (t_total == s[:, 0]) & (r_total == s[:, 1]) & (s[:, _CHUNKS] == 1)
        frag = np.where(perfect, 0.0, s[:, _CHUNKS] / ((s[:, _CHUNKS + 1] + s[:, _CHUNKS + 2]) / 2))
        score = fmean * (1.0 - GAMMA * np.power(frag, BETA))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def _pycocoevalcap_fields(hyp: str, refs: Sequence[str]) -> tuple[str, list[str]]:
    """The hypothesis and references as the jar receives them from pycocoevalcap's ``SCORE`` line."""
    hyp = hyp.replace("|||", "").replace("  ", " ")
    parts = " ||| ".join(("SCORE", " ||| ".join(refs), hyp)).split("|||")  # Java's split(): drop trailing ""
    while parts and parts[-1] == "":
        parts.pop()
    return java_trim(parts[-1]), [java_trim(p) for p in parts[1:-1]]


_lexicon: Lexicon | None = None


class _Scorer:
    """Per-call state: the process' lexicon and the lines already normalised."""

    def __init__(self):
        global _lexicon
        if _lexicon is None:
            _lexicon = Lexicon(resources(), paraphrase_table())
        self.lexicon = _lexicon
        self.prefixes = _lexicon.res.prefixes
        self.lines: dict[str, Line] = {}

    def line(self, text: str) -> Line:
        line = self.lines.get(text)
        if line is None:
            words = tokenize(normalize_line(text, self.prefixes).lower())
            line = self.lines[text] = Line(words, self.lexicon)
        return line

    def segment(self, hyp: str, refs: Sequence[str]) -> tuple[list[float], float]:
        """``MeteorScorer.getMeteorStats(test, references)``: the statistics of the best reference."""
        test_text, ref_texts = _pycocoevalcap_fields(hyp, refs)
        test = self.line(test_text)
        best, best_score = None, -1.0
        for ref_text in ref_texts:
            stats = align(test, self.line(ref_text))
            score = score_stats(stats)
            if score > best_score:  # first of the tied best
                best, best_score = stats, score
        return best, best_score


def _segment_stats(hyps: list[str], refs: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """``(N, N_STATS)`` statistics of each sample's best reference and the ``(N,)`` segment scores."""
    scorer = _Scorer()
    stats = np.zeros((len(hyps), N_STATS), dtype=np.float64)
    scores = np.zeros(len(hyps), dtype=np.float64)
    for i, (h, group) in enumerate(zip(hyps, refs)):
        s, scores[i] = scorer.segment(h, group)
        stats[i] = s
    return stats, scores


def _pooled(stats: np.ndarray) -> np.ndarray:
    """Statistics ready to be summed: a perfectly matched segment adds no chunk (``MeteorStats.addStats``)."""
    out = stats.copy()
    for i, row in enumerate(stats):
        if _perfect(row):
            out[i, _CHUNKS] = 0.0
    return out


def meteor(hypotheses: Sequence[str], references: References, *, tokenized: bool = False, **removed
           ) -> tuple[float, np.ndarray]:
    """Corpus METEOR and per-sample METEOR, as pycocoevalcap's ``Meteor().compute_score``.

    Args:
        hypotheses: One generated text per sample.
        references: One reference text, or a list of them, per sample.
        tokenized: Inputs are already tokenised (space-separated); skip :func:`ptb_tokenize`
            (pycocoevalcap's pipeline PTB-tokenises before METEOR, as here by default).

    Returns:
        The corpus score (from the statistics pooled over samples, not the mean of the
        per-sample scores) and the ``(N,)`` per-sample scores (each against its best
        reference); both equal Java METEOR 1.5's on every pair measured (module docstring).

    Raises:
        MeteorDataError: METEOR 1.5's data files are not installed (see the module docstring).
        TypeError: An argument of the former NLTK-style METEOR is passed.
    """
    if removed:
        raise TypeError(f"meteor() got {', '.join(sorted(removed))}: medvl's METEOR is now METEOR 1.5 with its "
                        "fixed English parameters, stemmer and synonyms; the NLTK-style alpha/beta/gamma/stemmer/"
                        "synonyms arguments are gone (nltk.translate.meteor_score gives that variant)")
    hyps, refs = prepare_pairs(hypotheses, references, tokenized)
    if not hyps:
        return float("nan"), np.zeros(0, dtype=np.float64)
    stats, scores = _segment_stats(hyps, refs)
    return float(score_stats(_pooled(stats).sum(axis=0))), scores


class Meteor(CorpusMetric):
    """Corpus METEOR 1.5 (pycocoevalcap's pooled statistics), bootstrapped by re-summing them."""

    name = "meteor"

    def __init__(self, *, tokenized: bool = False):
        self.tokenized = tokenized

    def prepare(self, hypotheses, references) -> PreparedMetric:
        hyps, refs = prepare_pairs(hypotheses, references, self.tokenized)
        if not hyps:
            raise ValueError("no samples to score")
        stats, _ = _segment_stats(hyps, refs)
        pooled = _pooled(stats)
        return SummedStats(pooled, _score_batch, point=score_stats(pooled.sum(axis=0)))
