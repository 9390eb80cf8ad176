"""PTB-style tokenisation as the COCO caption evaluation applies it before scoring.

COCO (``pycocoevalcap/tokenizer/ptbtokenizer.py``; Chen et al., "Microsoft COCO Captions:
Data Collection and Evaluation Server", arXiv:1504.00325) runs the Stanford PTBTokenizer
(Java) with ``-lowerCase`` and then drops the punctuation tokens of :data:`PUNCTUATIONS`.
:func:`ptb_tokenize` is a pure-Python approximation: lower case, clitics split as PTB does
("isn't" -> "is n't", "heart's" -> "heart 's"), brackets and quotes dropped (PTB turns them
into ``-LRB-``, ``````, ... which COCO drops), decimals ("3.5"), hyphenated and slashed
compounds ("x-ray", "and/or") and acronyms ("e.g.") kept whole, other symbols ("%", "+",
"/") kept as tokens. It is not byte-identical to the Java tokenizer on unusual text.

Also here, because every metric of the package needs them: :func:`prepare_pairs` (checks
and tokenises hypothesis/reference pairs) and :func:`ngram_counts` (the n-gram counts of
BLEU and CIDEr-D, in the insertion order of the COCO scorers).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["PUNCTUATIONS", "References", "ngram_counts", "prepare_pairs", "ptb_tokenize"]

PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""Tokens the COCO evaluation removes after PTB tokenisation (``ptbtokenizer.py``)."""

References = Sequence[str] | Sequence[Sequence[str]]
"""One reference text, or a sequence of them, per sample."""

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


def prepare_pairs(hypotheses: Sequence[str], references: References, tokenized: bool = False
                  ) -> tuple[list[str], list[list[str]]]:
    """Hypotheses and reference lists, tokenised with :func:`ptb_tokenize` unless ``tokenized``.

    Args:
        hypotheses: One text per sample.
        references: One reference text, or a list of them, per sample.
        tokenized: Inputs are already tokenised (space-separated); only check and listify.

    Returns:
        The hypotheses and, per sample, a list of references.

    Raises:
        TypeError: ``hypotheses`` is one string.
        ValueError: Different numbers of hypotheses and references, or a sample without references.
    """
    if isinstance(hypotheses, str):
        raise TypeError("hypotheses must be a sequence of strings, not one string")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    refs: list[list[str]] = []
    for i, r in enumerate(references):
        group = [r] if isinstance(r, str) else list(r)
        if not group:
            raise ValueError(f"sample {i} has no reference")
        refs.append(group if tokenized else [ptb_tokenize(x) for x in group])
    return (list(hypotheses) if tokenized else [ptb_tokenize(h) for h in hypotheses]), refs


def ngram_counts(words: Sequence[str], n: int) -> dict[tuple[str, ...], int]:
    """Counts of all 1..n-grams, in the insertion order the COCO scorers use."""
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts
