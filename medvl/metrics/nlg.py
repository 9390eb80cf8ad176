"""Natural-language generation metrics for report generation: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

The conventions are those of the COCO caption evaluation code (``pycocoevalcap``; Chen et
al., "Microsoft COCO Captions: Data Collection and Evaluation Server", arXiv:1504.00325),
which R2Gen, CMN and most report-generation papers use:

* **Tokenisation** (:func:`ptb_tokenize`): COCO runs the Stanford PTBTokenizer (Java) with
  ``-lowerCase`` and then drops the punctuation tokens of :data:`PUNCTUATIONS`. This is a
  pure-Python approximation: lower case, clitics split as PTB does ("isn't" -> "is n't",
  "heart's" -> "heart 's"), brackets and quotes dropped (PTB turns them into ``-LRB-``,
  ``````, ... which COCO drops), decimals ("3.5"), hyphenated and slashed compounds
  ("x-ray", "and/or") and acronyms ("e.g.") kept whole, other symbols ("%", "+", "/")
  kept as tokens. It is not byte-identical to the Java tokenizer on unusual text.
* **BLEU** (Papineni et al., ACL 2002) exactly as ``bleu_scorer.py``: clipped n-gram
  counts, corpus-level statistics summed over samples, the *closest* reference length
  (ties to the shorter), the brevity penalty ``exp(1 - r/c)``, and the ``tiny=1e-15`` /
  ``small=1e-9`` guards; per-sample scores are the same formula on one sample.
* **CIDEr-D** (Vedantam et al., CVPR 2015) exactly as ``cider_scorer.py``: n = 1..4,
  TF-IDF with document frequencies from the references *of the evaluated corpus*,
  ``log(N)`` reference length, clipped numerator, Gaussian length penalty with
  sigma = 6 on the lengths as that code counts them (bigram counts), mean over n,
  mean over references, x10.
* **ROUGE-L** (Lin, 2004) as ``rouge.py``: sentence-level LCS F-measure with
  beta = 1.2, precision and recall each maximised over the references, averaged over
  samples. ``beta=1`` gives the F1 of Google's ``rouge-score`` package.
* **METEOR** (Banerjee & Lavie 2005; Lavie & Agarwal 2007) natively, as NLTK's
  ``meteor_score`` computes it: unigram alignment in stages (exact, then Porter stem,
  then optional synonyms), ``Fmean = P R / (alpha P + (1 - alpha) R)``, fragmentation
  penalty ``gamma (chunks / matches) ** beta`` with alpha = 0.9, beta = 3, gamma = 0.5,
  best reference per sample, mean over samples. **This is not the Java METEOR 1.5 that
  pycocoevalcap calls**, and its values are higher (measured below): METEOR 1.5 uses tuned
  parameters (alpha 0.85, beta 0.2, gamma 0.6, delta 0.75), weights content and
  function words differently, adds a paraphrase table, uses the Snowball stemmer,
  searches for the alignment with fewest chunks and pools statistics over the corpus.
  Values are therefore comparable with NLTK-based METEOR numbers, not with papers that
  report pycocoevalcap's METEOR. Synonyms are off by default (WordNet data is not
  shipped and a metric that changes with installed data is not reproducible).

Measured parity (``tests/metrics/test_nlg.py``; 300 synthetic radiology sentence pairs
built from templates with word drops, swaps and synonyms, single and multiple
references): on the same tokens, BLEU-1..4 corpus and per-sample scores, CIDEr-D corpus
and per-sample scores and ROUGE-L (beta 1.2) equal ``pycocoevalcap``'s bit for bit
(difference 0.0); ``rouge_l(beta=1.0)`` equals ``rouge-score``'s ROUGE-L F1 bit for bit on
single references; :func:`porter_stem` equals NLTK's ``PorterStemmer`` in
``MARTIN_EXTENSIONS`` mode on every word of the test corpus and a list of medical words;
per-sample METEOR equals NLTK 3.10 ``meteor_score`` without WordNet synonyms (measured
difference 0.0, asserted < 1e-12), with that stemmer and also with NLTK's default
``NLTK_EXTENSIONS`` stemmer, which differs from Porter's on some words ("dying") that the
test corpus does not contain. The vectorised CIDEr-D bootstrap path agrees with
pycocoevalcap on materialised resamples to 1e-9 (relative). Against Java METEOR 1.5
(pycocoevalcap 1.2, OpenJDK 17): on the 300 test pairs medvl gives 0.733 where Java gives
0.422 (corpus) / 0.520 (mean segment score), per-sample |difference| 0.21 on average,
correlation 0.84; on 200 generated synthetic reports against their references 0.647
against 0.403 / 0.475, per-sample |difference| 0.19, correlation 0.87. Rankings of
systems agree far better than levels: compare METEOR only within one implementation.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric, SummedStats

__all__ = [
    "PUNCTUATIONS",
    "Bleu",
    "CiderD",
    "Meteor",
    "RougeL",
    "bleu",
    "cider_d",
    "compute_nlg",
    "meteor",
    "nlg_metrics",
    "nlg_per_sample",
    "porter_stem",
    "ptb_tokenize",
    "rouge_l",
]

PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""Tokens the COCO evaluation removes after PTB tokenisation (``ptbtokenizer.py``)."""

_TINY, _SMALL = 1e-15, 1e-9  # bleu_scorer.py's guards against 0/0

References = Sequence[str] | Sequence[Sequence[str]]

# ----------------------------------------------------------------------------- tokenisation
_CLITIC = re.compile(r"(?<=[a-z0-9])(n't|'(?:s|re|ve|ll|m|d))\b")
_TOKEN = re.compile(
    r"n't|'(?:s|re|ve|ll|m|d)\b"  # clitics, split off above
    r"|\.\.\.|--+"  # ellipsis, dashes (dropped)
    r"|(?:[a-z]\.){2,}"  # acronyms with their final period: e.g. i.e. a.m.
    r"|\d+(?:[.,:]\d+)+[a-z]*"  # 3.5  1,000  10:30  1.5cm
    r"|[a-z0-9_]+(?:[-/&'][a-z0-9_]+)*"  # words, x-ray, and/or, left-sided, ___
    r"|\S"  # any other symbol is a token of its own
)
# Typographic quotes and dashes, which PTB maps to ``, '' and -- (all dropped by COCO).
_ASCII_PUNCT = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
                              "\u00ab": '"', "\u00bb": '"', "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
                              "\u2014": " -- ", "\u2015": " -- ", "\u2212": "-"})
# Brackets and quotes become -LRB-/-RRB-/``/'' in PTB and are then dropped by COCO.
_DROPPED = PUNCTUATIONS | {"(", ")", "[", "]", "{", "}", '"'}


def ptb_tokenize(text: str) -> str:
    """Tokenise like COCO's PTBTokenizer with ``-lowerCase`` and drop its punctuation.

    Args:
        text: A report or sentence (any Unicode; NFKC-normalised here).

    Returns:
        Lower-case tokens joined by single spaces ("" for text without tokens).
    """
    text = unicodedata.normalize("NFKC", text).lower().translate(_ASCII_PUNCT)
    text = _CLITIC.sub(r" \1", text)
    return " ".join(t for t in _TOKEN.findall(text) if t not in _DROPPED)


def _tokenize_pairs(hypotheses: Sequence[str], references: References) -> tuple[list[str], list[list[str]]]:
    """Tokenised hypotheses and reference lists; references may be one string per sample."""
    if isinstance(hypotheses, str):
        raise TypeError("hypotheses must be a sequence of strings, not one string")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    refs: list[list[str]] = []
    for i, r in enumerate(references):
        group = [r] if isinstance(r, str) else list(r)
        if not group:
            raise ValueError(f"sample {i} has no reference")
        refs.append([ptb_tokenize(x) for x in group])
    return [ptb_tokenize(h) for h in hypotheses], refs


def _ngram_counts(words: Sequence[str], n: int) -> dict[tuple[str, ...], int]:
    """Counts of all 1..n-grams, in the insertion order the COCO scorers use."""
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


# ----------------------------------------------------------------------------- BLEU
def _bleu_stats(hyp: str, refs: Sequence[str], n: int) -> list[float]:
    """Sufficient statistics of one sample: testlen, closest reflen, guess[n], correct[n]."""
    words = hyp.split()
    counts = _ngram_counts(words, n)
    max_ref: dict[tuple[str, ...], int] = {}
    ref_lens = []
    for ref in refs:
        ref_words = ref.split()
        ref_lens.append(len(ref_words))
        for gram, c in _ngram_counts(ref_words, n).items():
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
    hyps, refs = _prepare(hypotheses, references, tokenized)
    stats = [_bleu_stats(h, r, n) for h, r in zip(hyps, refs)]
    per_sample = np.array([_bleu_from_stats(s, n) for s in stats], dtype=np.float64).reshape(len(stats), n)
    totals = [sum(s[k] for s in stats) for k in range(2 + 2 * n)]
    return _bleu_from_stats(totals, n), per_sample


# ----------------------------------------------------------------------------- CIDEr-D
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
    hyps, refs = _prepare(hypotheses, references, tokenized)
    if not hyps:
        return float("nan"), np.zeros(0)
    hyp_counts = [_ngram_counts(h.split(), n) for h in hyps]
    ref_counts = [[_ngram_counts(r.split(), n) for r in group] for group in refs]
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
        hyp_counts = [_ngram_counts(h.split(), n) for h in hyps]
        ref_counts = [[_ngram_counts(r.split(), n) for r in group] for group in refs]
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


# ----------------------------------------------------------------------------- ROUGE-L
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
    hyps, refs = _prepare(hypotheses, references, tokenized)
    scores = np.array([_rouge_l_single(h, r, beta) for h, r in zip(hyps, refs)], dtype=np.float64)
    return (float(np.mean(scores)) if scores.size else float("nan")), scores


# ----------------------------------------------------------------------------- METEOR
def _is_consonant(word: str, i: int) -> bool:
    ch = word[i]
    if ch in "aeiou":
        return False
    if ch == "y":
        return i == 0 or not _is_consonant(word, i - 1)
    return True


def _measure(stem: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in ``[C](VC){m}[V]``."""
    m, prev_vowel = 0, False
    for i in range(len(stem)):
        vowel = not _is_consonant(stem, i)
        if prev_vowel and not vowel:
            m += 1
        prev_vowel = vowel
    return m


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _is_consonant(word, len(word) - 1)


def _cvc(word: str) -> bool:
    return (len(word) >= 3 and _is_consonant(word, len(word) - 3) and not _is_consonant(word, len(word) - 2)
            and _is_consonant(word, len(word) - 1) and word[-1] not in "wxy")


def _rules(word: str, rules: Sequence[tuple[str, str, int]]) -> str:
    """Apply the first rule whose suffix matches, if the remaining stem has m > threshold."""
    for suffix, repl, min_m in rules:
        if word.endswith(suffix):
            stem = word[: len(word) - len(suffix)]
            return stem + repl if _measure(stem) > min_m else word
    return word


_STEP2 = [("ational", "ate", 0), ("tional", "tion", 0), ("enci", "ence", 0), ("anci", "ance", 0),
          ("izer", "ize", 0), ("bli", "ble", 0), ("alli", "al", 0), ("entli", "ent", 0), ("eli", "e", 0),
          ("ousli", "ous", 0), ("ization", "ize", 0), ("ation", "ate", 0), ("ator", "ate", 0),
          ("alism", "al", 0), ("iveness", "ive", 0), ("fulness", "ful", 0), ("ousness", "ous", 0),
          ("aliti", "al", 0), ("iviti", "ive", 0), ("biliti", "ble", 0), ("logi", "log", 0)]
_STEP3 = [("icate", "ic", 0), ("ative", "", 0), ("alize", "al", 0), ("iciti", "ic", 0), ("ical", "ic", 0),
          ("ful", "", 0), ("ness", "", 0)]
_STEP4 = [(s, "", 1) for s in ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent")]
_STEP4_TAIL = [(s, "", 1) for s in ("ou", "ism", "ate", "iti", "ous", "ive", "ize")]


def porter_stem(word: str) -> str:
    """Porter stemmer (Porter, "An algorithm for suffix stripping", 1980).

    The version Martin Porter distributes (with his "bli" -> "ble" and "logi" -> "log"
    rules, words of one or two letters left alone), which is NLTK's ``PorterStemmer`` in
    ``MARTIN_EXTENSIONS`` mode.
    """
    w = word.lower()
    if len(w) <= 2:
        return w
    # Step 1a
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies"):
        w = w[:-2]
    elif not w.endswith("ss") and w.endswith("s"):
        w = w[:-1]
    # Step 1b
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    else:
        for suffix in ("ed", "ing"):
            if w.endswith(suffix) and _has_vowel(w[: -len(suffix)]):
                w = w[: -len(suffix)]
                if w.endswith(("at", "bl", "iz")):
                    w += "e"
                elif _double_consonant(w) and w[-1] not in "lsz":
                    w = w[:-1]
                elif _measure(w) == 1 and _cvc(w):
                    w += "e"
                break
    # Step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    w = _rules(w, _STEP2)
    w = _rules(w, _STEP3)
    # Step 4 ("ion" needs s or t before it)
    for suffix, _, _ in _STEP4 + [("ion", "", 1)] + _STEP4_TAIL:
        if w.endswith(suffix):
            stem = w[: -len(suffix)]
            if _measure(stem) > 1 and (suffix != "ion" or stem[-1:] in ("s", "t")):
                w = stem
            break
    # Step 5
    if w.endswith("e"):
        m = _measure(w[:-1])
        if m > 1 or (m == 1 and not _cvc(w[:-1])):
            w = w[:-1]
    if w.endswith("ll") and _measure(w) > 1:
        w = w[:-1]
    return w


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
    hyps, refs = _prepare(hypotheses, references, tokenized)
    cache: dict[str, str] = {}

    def stem(w: str) -> str:
        if w not in cache:
            cache[w] = stemmer(w)
        return cache[w]

    scores = np.array([max(_meteor_single(h.split(), r.split(), alpha, beta, gamma, stem, synonyms) for r in group)
                       for h, group in zip(hyps, refs)], dtype=np.float64)
    return (float(np.mean(scores)) if scores.size else float("nan")), scores


# ----------------------------------------------------------------------------- metric objects
def _prepare(hypotheses, references, tokenized: bool) -> tuple[list[str], list[list[str]]]:
    if tokenized:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
        return list(hypotheses), [[r] if isinstance(r, str) else list(r) for r in references]
    return _tokenize_pairs(hypotheses, references)


class Bleu(CorpusMetric):
    """Corpus BLEU-``order`` (COCO conventions); resamples re-sum the per-sample statistics."""

    def __init__(self, order: int = 4, *, tokenized: bool = False):
        self.order, self.tokenized = order, tokenized
        self.name = f"bleu{order}"

    def prepare(self, hypotheses, references) -> PreparedMetric:
        hyps, refs = _prepare(hypotheses, references, self.tokenized)
        n = self.order
        stats = np.array([_bleu_stats(h, r, n) for h, r in zip(hyps, refs)], dtype=np.float64)
        stats = stats.reshape(len(hyps), 2 + 2 * n)
        point = _bleu_from_stats([int(x) for x in stats.sum(axis=0)], n)[n - 1]
        return SummedStats(stats, lambda sums: _bleu_from_stats_batch(sums, n, n), point=point)


class CiderD(CorpusMetric):
    """Corpus CIDEr-D; each resample recomputes document frequencies from its own references."""

    name = "cider"

    def __init__(self, n: int = 4, sigma: float = 6.0, *, tokenized: bool = False):
        self.n, self.sigma, self.tokenized = n, sigma, tokenized

    def prepare(self, hypotheses, references) -> PreparedMetric:
        hyps, refs = _prepare(hypotheses, references, self.tokenized)
        point, _ = cider_d(hyps, refs, self.n, self.sigma, tokenized=True)
        return _CiderResampler(hyps, refs, self.n, self.sigma, point)


class RougeL(CorpusMetric):
    """Mean sentence-level ROUGE-L (beta 1.2 as COCO)."""

    name = "rougeL"

    def __init__(self, beta: float = 1.2, *, tokenized: bool = False):
        self.beta, self.tokenized = beta, tokenized

    def prepare(self, hypotheses, references) -> PreparedMetric:
        score, per_sample = rouge_l(hypotheses, references, self.beta, tokenized=self.tokenized)
        return SummedStats.mean_of(per_sample, point=score)


class Meteor(CorpusMetric):
    """Mean sentence-level METEOR (NLTK formulation, exact + Porter stem matching)."""

    name = "meteor"

    def __init__(self, *, tokenized: bool = False, **kwargs):
        self.tokenized, self.kwargs = tokenized, kwargs

    def prepare(self, hypotheses, references) -> PreparedMetric:
        score, per_sample = meteor(hypotheses, references, tokenized=self.tokenized, **self.kwargs)
        return SummedStats.mean_of(per_sample, point=score)


def nlg_metrics() -> dict[str, CorpusMetric]:
    """The metrics of :func:`compute_nlg` as bootstrap-ready objects, by result key."""
    return {"bleu1": Bleu(1), "bleu2": Bleu(2), "bleu3": Bleu(3), "bleu4": Bleu(4),
            "meteor": Meteor(), "rougeL": RougeL(), "cider": CiderD()}


def nlg_per_sample(hypotheses: Sequence[str], references: References) -> dict[str, np.ndarray]:
    """Per-sample scores (``(N,)`` arrays) under the keys of :func:`compute_nlg`.

    BLEU per sample is bleu_scorer.py's per-image score; the corpus BLEU is *not* their mean.
    """
    return _score_all(*_tokenize_pairs(hypotheses, references))[1]


def compute_nlg(hypotheses: Sequence[str], references: References) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated reports, COCO conventions.

    Args:
        hypotheses: One generated report per sample.
        references: One reference report, or a list of references, per sample.

    Returns:
        ``{"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider"}`` -> float.
    """
    return _score_all(*_tokenize_pairs(hypotheses, references))[0]


def _score_all(hyps: list[str], refs: list[list[str]]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    if not hyps:
        raise ValueError("no samples to score")
    corpus_bleu, sample_bleu = bleu(hyps, refs, 4, tokenized=True)
    met, met_s = meteor(hyps, refs, tokenized=True)
    rouge, rouge_s = rouge_l(hyps, refs, tokenized=True)
    cider, cider_s = cider_d(hyps, refs, tokenized=True)
    corpus = {f"bleu{k + 1}": float(corpus_bleu[k]) for k in range(4)}
    corpus.update(meteor=met, rougeL=rouge, cider=cider)
    per_sample = {f"bleu{k + 1}": sample_bleu[:, k] for k in range(4)}
    per_sample.update(meteor=met_s, rougeL=rouge_s, cider=cider_s)
    return corpus, per_sample
