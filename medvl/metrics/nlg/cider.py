"""CIDEr-D (Vedantam et al., "CIDEr: Consensus-based Image Description Evaluation", CVPR 2015).

Exactly as the COCO caption evaluation's ``pycocoevalcap/cider/cider_scorer.py``:
n = 1..4, TF-IDF with document frequencies from the references *of the evaluated
corpus*, ``log(N)`` reference length, clipped numerator, Gaussian length penalty with
sigma = 6 on the lengths as that code counts them (bigram counts), mean over n, mean over
references, x10. :class:`CiderD` bootstraps it with document frequencies recomputed per
resample (vectorised; agrees with pycocoevalcap on materialised resamples to 1e-9).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric
from medvl.metrics.nlg._tokenize import References, ngram_counts, prepare_pairs

__all__ = ["CiderD", "cider_d"]


def cider_d(hypotheses: Sequence[str], references: References, n: int = 4, sigma: float = 6.0, *,
            tokenized: bool = False) -> tuple[float, np.ndarray]:
    """CIDEr-D with document frequencies from this corpus's references (cider_scorer.py).

    Args:
        hypotheses: One generated text per sample.
        references: One reference text, or a list of them, per sample.
        n: Highest n-gram order.
        sigma: Standard deviation of the Gaussian length penalty.
        tokenized: Inputs are already tokenised.

    Returns:
        Corpus CIDEr-D (mean of the per-sample scores) and the ``(N,)`` per-sample scores.
    """
    hyps, refs = prepare_pairs(hypotheses, references, tokenized)
    if not hyps:
        return float("nan"), np.zeros(0)
    hyp_counts = [ngram_counts(h.split(), n) for h in hyps]
    ref_counts = [[ngram_counts(r.split(), n) for r in group] for group in refs]
    doc_freq: dict[tuple[str, ...], float] = defaultdict(float)
    for group in ref_counts:
        for gram in {g for counts in group for g in counts}:
            doc_freq[gram] += 1
    log_n = np.log(float(len(ref_counts)))

    def tfidf(counts):
        vec = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            vec[k][gram] = float(tf) * (log_n - np.log(max(1.0, doc_freq.get(gram, 0.0))))
            norm[k] += pow(vec[k][gram], 2)
            if k == 1:  # cider_scorer.py counts the length in bigrams
                length += tf
        return vec, [np.sqrt(x) for x in norm], length

    scores = []
    for counts, group in zip(hyp_counts, ref_counts):
        vec, norm, length = tfidf(counts)
        score = np.array([0.0] * n)
        for ref in group:
            vec_r, norm_r, length_r = tfidf(ref)
            delta = float(length - length_r)
            val = np.array([0.0] * n)
            for k in range(n):
                for gram in vec[k]:
                    r = vec_r[k].get(gram, 0.0)
                    val[k] += min(vec[k][gram], r) * r  # clipping (the "-D" of CIDEr-D)
                if norm[k] != 0 and norm_r[k] != 0:
                    val[k] /= norm[k] * norm_r[k]
                val[k] *= np.e ** (-(delta**2) / (2 * sigma**2))
            score += val
        avg = np.mean(score)
        avg /= len(group)
        avg *= 10.0
        scores.append(avg)
    per_sample = np.array(scores)
    return float(np.mean(per_sample)), per_sample


class _CiderResampler:
    """CIDEr-D of bootstrap resamples, document frequencies recomputed per resample.

    A resample drawn with multiplicities ``c_i`` is scored as pycocoevalcap would score the
    corpus in which sample ``i`` appears ``c_i`` times under distinct ids: its document
    frequencies count sample ``i``'s references ``c_i`` times and ``log N`` is unchanged.
    With ``w_g = log N - log max(1, df_g)`` (never negative) the clipped numerator is
    ``sum min(h, r) r w^2`` and the squared norms ``sum h^2 w^2``, ``sum r^2 w^2``: all
    linear in ``w^2``, so a batch of resamples is a few gathers and segment sums.
    """

    def __init__(self, hyps: list[str], refs: list[list[str]], n: int, sigma: float, point: float):
        self.point = point
        self.n_samples = len(hyps)
        vocab: dict[tuple[str, ...], int] = {}
        hyp_counts = [ngram_counts(h.split(), n) for h in hyps]
        ref_counts = [[ngram_counts(r.split(), n) for r in group] for group in refs]
        doc_rows, doc_cols = [], []
        for i, group in enumerate(ref_counts):
            for gram in {g for counts in group for g in counts}:
                doc_rows.append(i)
                doc_cols.append(vocab.setdefault(gram, len(vocab)))
        for counts in hyp_counts:
            for gram in counts:
                vocab.setdefault(gram, len(vocab))
        self.n_grams = len(vocab)
        order = np.argsort(doc_cols, kind="stable")
        self.doc_rows = np.asarray(doc_rows, dtype=np.int64)[order]
        doc_cols_sorted = np.asarray(doc_cols, dtype=np.int64)[order]
        self.doc_starts, self.doc_grams = _segments(doc_cols_sorted)

        # Linear functionals of w^2: numerators per (pair, order), hypothesis and reference norms.
        num, hyp_sq, ref_sq = _Entries(), _Entries(), _Entries()
        pair_sample, pair_penalty, hyp_lens = [], [], []
        for i, (counts, group) in enumerate(zip(hyp_counts, ref_counts)):
            for gram, tf in counts.items():
                hyp_sq.add(i * n + len(gram) - 1, vocab[gram], float(tf) ** 2)
            length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
            hyp_lens.append(length)
            for ref in group:
                p = len(pair_sample)
                pair_sample.append(i)
                length_r = sum(tf for gram, tf in ref.items() if len(gram) == 2)
                pair_penalty.append(np.e ** (-(float(length - length_r) ** 2) / (2 * sigma**2)))
                for gram, tf in ref.items():
                    ref_sq.add(p * n + len(gram) - 1, vocab[gram], float(tf) ** 2)
                    if gram in counts:
                        num.add(p * n + len(gram) - 1, vocab[gram], float(min(counts[gram], tf) * tf))
        self.n = n
        self.num, self.hyp_sq, self.ref_sq = num.freeze(), hyp_sq.freeze(), ref_sq.freeze()
        self.n_pairs = len(pair_sample)
        self.pair_sample = np.asarray(pair_sample, dtype=np.int64)
        self.pair_penalty = np.asarray(pair_penalty, dtype=np.float64)
        self.refs_per_sample = np.bincount(self.pair_sample, minlength=self.n_samples).astype(np.float64)
        self.pair_starts = np.r_[0, np.cumsum(self.refs_per_sample)[:-1]].astype(np.int64)

    def sample_scores(self, counts: np.ndarray) -> np.ndarray:
        """Per-sample CIDEr-D ``(B, N)`` under the document frequencies of each resample."""
        b, n = counts.shape[0], self.n
        counts = counts.astype(np.float64)
        df = np.zeros((b, self.n_grams))
        if self.doc_rows.size:
            df[:, self.doc_grams] = np.add.reduceat(counts[:, self.doc_rows], self.doc_starts, axis=1)
        w = np.log(float(self.n_samples)) - np.log(np.maximum(1.0, df))
        w2 = w * w  # (B, G)
        num = self.num.apply(w2, self.n_pairs * n)  # (B, P*n)
        hyp = np.sqrt(self.hyp_sq.apply(w2, self.n_samples * n)).reshape(b, self.n_samples, n)
        ref = np.sqrt(self.ref_sq.apply(w2, self.n_pairs * n)).reshape(b, self.n_pairs, n)
        denom = hyp[:, self.pair_sample, :] * ref
        val = num.reshape(b, self.n_pairs, n)
        val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
        val = val.mean(axis=2) * self.pair_penalty  # (B, P)
        per_sample = np.add.reduceat(val, self.pair_starts, axis=1)  # pairs are grouped by sample
        return per_sample / self.refs_per_sample * 10.0

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        scores = self.sample_scores(counts)
        return (scores * counts).sum(axis=1) / counts.sum(axis=1)


class _Entries:
    """Coordinate list ``(row, column, coefficient)`` of sparse linear functionals."""

    def __init__(self):
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []

    def add(self, row: int, col: int, val: float) -> None:
        self.rows.append(row)
        self.cols.append(col)
        self.vals.append(val)

    def freeze(self) -> _Entries:
        order = np.argsort(np.asarray(self.rows, dtype=np.int64), kind="stable")
        rows = np.asarray(self.rows, dtype=np.int64)[order]
        self.cols_arr = np.asarray(self.cols, dtype=np.int64)[order]
        self.vals_arr = np.asarray(self.vals, dtype=np.float64)[order]
        self.starts, self.targets = _segments(rows)
        return self

    def apply(self, x: np.ndarray, n_rows: int) -> np.ndarray:
        """``out[b, row] = sum coef * x[b, col]`` for a batch ``x`` of shape ``(B, G)``."""
        out = np.zeros((x.shape[0], n_rows))
        if self.vals_arr.size:
            out[:, self.targets] = np.add.reduceat(x[:, self.cols_arr] * self.vals_arr, self.starts, axis=1)
        return out


def _segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and key values of the runs of equal keys in a sorted array."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, sorted_keys[starts]


class CiderD(CorpusMetric):
    """Corpus CIDEr-D; each resample recomputes document frequencies from its own references."""

    name = "cider"

    def __init__(self, n: int = 4, sigma: float = 6.0, *, tokenized: bool = False):
        self.n, self.sigma, self.tokenized = n, sigma, tokenized

    def prepare(self, hypotheses, references) -> PreparedMetric:
        hyps, refs = prepare_pairs(hypotheses, references, self.tokenized)
        point, _ = cider_d(hyps, refs, self.n, self.sigma, tokenized=True)
        return _CiderResampler(hyps, refs, self.n, self.sigma, point)
