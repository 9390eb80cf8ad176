"""ROUGE-L (Lin, "ROUGE: A Package for Automatic Evaluation of Summaries", ACL Workshop 2004).

As the COCO caption evaluation's ``pycocoevalcap/rouge/rouge.py``: sentence-level LCS
F-measure with beta = 1.2, precision and recall each maximised over the references,
averaged over samples. ``beta=1`` gives the ROUGE-L F1 of Google's ``rouge-score``
package (bit for bit on single references). The LCS is computed bit-parallel
(Allison & Dix 1986).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric, SummedStats
from medvl.metrics.nlg._tokenize import References, prepare_pairs

__all__ = ["RougeL", "rouge_l"]


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison & Dix 1986).

    One machine word per row of the dynamic programme becomes one Python integer:
    ``O(len(b))`` big-integer operations instead of ``O(len(a) len(b))`` table cells.
    """
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def _rouge_l_single(hyp: str, refs: Sequence[str], beta: float) -> float:
    cand = hyp.split(" ")  # rouge.py splits on single spaces, so "" is one empty token
    precs, recs = [], []
    for ref in refs:
        toks = ref.split(" ")
        lcs = _lcs_length(toks, cand)
        precs.append(lcs / float(len(cand)))
        recs.append(lcs / float(len(toks)))
    p, r = max(precs), max(recs)
    if p != 0 and r != 0:
        return ((1 + beta**2) * p * r) / float(r + beta**2 * p)
    return 0.0


def rouge_l(hypotheses: Sequence[str], references: References, beta: float = 1.2, *,
            tokenized: bool = False) -> tuple[float, np.ndarray]:
    """Sentence-level ROUGE-L F-measure averaged over samples (rouge.py).

    Args:
        hypotheses: One generated text per sample.
        references: One reference text, or a list of them, per sample.
        beta: Recall weight; 1.2 in COCO, 1.0 for rouge-score's F1.
        tokenized: Inputs are already tokenised.

    Returns:
        Mean score and the ``(N,)`` per-sample scores.
    """
    hyps, refs = prepare_pairs(hypotheses, references, tokenized)
    scores = np.array([_rouge_l_single(h, r, beta) for h, r in zip(hyps, refs)], dtype=np.float64)
    return (float(np.mean(scores)) if scores.size else float("nan")), scores


class RougeL(CorpusMetric):
    """Mean sentence-level ROUGE-L (beta 1.2 as COCO)."""

    name = "rougeL"

    def __init__(self, beta: float = 1.2, *, tokenized: bool = False):
        self.beta, self.tokenized = beta, tokenized

    def prepare(self, hypotheses, references) -> PreparedMetric:
        score, per_sample = rouge_l(hypotheses, references, self.beta, tokenized=self.tokenized)
        return SummedStats.mean_of(per_sample, point=score)
