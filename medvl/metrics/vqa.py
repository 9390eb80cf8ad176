"""Medical VQA metrics: answer normalisation, closed/open split, accuracy, recall, CIs.

What is implemented, and where it comes from:

* :func:`normalize_answer` is the answer normalisation of the official VQAv2
  evaluation (Antol et al., "VQA: Visual Question Answering", ICCV 2015; Goyal et
  al., CVPR 2017), i.e. ``processPunctuation`` followed by ``processDigitArticle`` of
  ``vqaEval.py`` in github.com/GT-Vision-Lab/VQA (``PythonEvaluationTools``). The
  tables (punctuation, number words, articles, contractions) are reproduced here.
  medvl adds a Unicode pre-pass (NFKC, zero-width characters dropped) so that odd
  characters in real annotations normalise sanely.
* :func:`is_closed` makes the closed/open split explicit. VQA-RAD (Lau et al.,
  Scientific Data 2018) and SLAKE (Liu et al., ISBI 2021) annotate ``answer_type``
  as ``CLOSED``/``OPEN`` (VQA-RAD with stray trailing spaces); PathVQA (He et al.,
  2020) is commonly split into yes/no versus the rest. Papers silently use either
  rule; here it is an option (:data:`CLOSED_RULES`) that the report records.
* Closed questions are scored by exact match after normalisation (the usual
  "closed accuracy"). Open questions are scored by exact match and by token recall
  -- the share of the reference's tokens found in the prediction, the "open recall"
  of LLaVA-Med (Li et al., NeurIPS 2023 Datasets & Benchmarks) -- plus SQuAD-style
  token F1 (Rajpurkar et al., EMNLP 2016) and sentence BLEU-1 (Papineni et al.,
  ACL 2002), as reported by generative medical VQA papers.
* Every aggregate carries a percentile-bootstrap 95% interval from resampling the
  questions of its subset (Efron & Tibshirani, 1993).

Pure Python/NumPy: no torch, no Lightning.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medvl.metrics.bootstrap import percentile_interval, resample_counts

__all__ = [
    "CLOSED_RULES",
    "HEADLINE_METRICS",
    "bleu1",
    "exact_match",
    "is_closed",
    "normalize_answer",
    "token_f1",
    "token_recall",
    "vqa_markdown",
    "vqa_scores",
]

# ---------------------------------------------------------------------------------
# Tables of the official vqaEval.py (GT-Vision-Lab/VQA, PythonEvaluationTools).
# ---------------------------------------------------------------------------------

# Contractions written without the apostrophe, mapped back. Keys are the official
# ones, including its capitalised ("Im", "Ive", "Id've") and reversed
# ("somebody'd" -> "somebodyd") entries; because words are lower-cased before the
# lookup, the capitalised keys never match -- as in the official code.
_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't",
    "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip

# Number words to digits (the official ``manualMap``; note "none" -> "0").
_MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

_ARTICLES = frozenset({"a", "an", "the"})

# The official pattern, verbatim. Its "(?!<=\d)" was meant as a look-behind but is a
# look-ahead for the literal "<=" followed by a digit, which never blocks anything: in
# effect a period is removed unless a digit FOLLOWS it ("3.5" and ".5" keep theirs,
# "3." and "end." lose it). Kept as is so scores match the official evaluation.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# A comma between two digits ("1,000"); if the text has one, every punctuation
# character below is deleted rather than replaced by a space.
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# Exactly the official list; ':', "'", '.', '*', '#', '$', '%', '&' etc. are absent.
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
          ">", "<", "@", "`", ",", "?", "!")  # fmt: skip

# medvl addition: invisible characters dropped before anything else (NFKC keeps them).
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


def _process_punctuation(text: str) -> str:
    """The official ``processPunctuation``."""
    out = text
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        # The official test looks at the *input* text for every character.
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call passes re.UNICODE as the positional ``count`` (so it strips at
    # most 32 periods); medvl strips them all -- identical for any real answer.
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: number words, articles, contractions."""
    words = [_MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Normalise an answer the way the official VQAv2 evaluation does.

    Steps: (medvl addition) Unicode NFKC and removal of zero-width characters
    (U+200B/C/D, U+2060, U+FEFF, soft hyphen U+00AD), so full-width letters, ligatures
    and non-breaking spaces become plain text; whitespace (newline, tab, ...) becomes
    single spaces and the ends are stripped; lower-case; then the official
    ``processPunctuation`` -- each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is
    deleted if it touches a space anywhere in the text or the text has a
    digit-comma-digit ("1,000"), and replaced by a space otherwise; a period is
    removed unless a digit follows it -- and ``processDigitArticle``: number words
    ``none``/``zero``..``ten`` become digits, the articles ``a``/``an``/``the`` are
    removed, apostrophe-less contractions are restored ("dont" -> "don't"), and the
    words are joined by single spaces.

    Note the official rules, reproduced faithfully: "x-ray" becomes "x ray" (the
    hyphen touches no space, so it turns into one), "x - ray" also gives "x ray";
    "11-12" gives "11 12"; ':' and "'" are not punctuation; "none" means 0.

    Args:
        text: A predicted or reference answer.

    Returns:
        The normalised answer; "" for blank input.

    Examples:
        >>> normalize_answer("Yes.")
        'yes'
        >>> normalize_answer(" NO ")
        'no'
        >>> normalize_answer("Two")
        '2'
        >>> normalize_answer("the left lung")
        'left lung'
        >>> normalize_answer("x-ray")
        'x ray'
        >>> normalize_answer("1,000")
        '1000'
        >>> normalize_answer("3.5 cm.")
        '3.5 cm'
        >>> normalize_answer("It isnt")
        "it isn't"
        >>> normalize_answer("\\uff2c\\uff55\\uff4e\\uff47\\u200b")  # full-width + ZWSP
        'lung'
    """
    text = unicodedata.normalize("NFKC", str(text)).translate(_ZERO_WIDTH)
    text = " ".join(text.split()).lower()
    return _process_digit_article(_process_punctuation(text))


# ---------------------------------------------------------------------------------
# Closed / open split.
# ---------------------------------------------------------------------------------

#: The closed/open rules :func:`is_closed` knows.
CLOSED_RULES = ("answer_type", "yes_no")


def is_closed(answer: str, answer_type: str | None, rule: str = "answer_type") -> bool:
    """Decide whether a question counts as closed-ended.

    Args:
        answer: The reference answer.
        answer_type: The dataset's annotation ("CLOSED"/"OPEN" in VQA-RAD and SLAKE;
            compared stripped and case-folded, so "CLOSED " is closed), or None.
        rule: ``"answer_type"`` trusts the annotation and falls back to the yes/no
            rule where it is None or blank; ``"yes_no"`` ignores the annotation: a
            question is closed iff its normalised answer is "yes" or "no".

    Returns:
        True for a closed question, False for an open one.

    Raises:
        ValueError: for a rule not in :data:`CLOSED_RULES`, or an annotation other
            than closed/open under the ``"answer_type"`` rule.

    Examples:
        >>> is_closed("left", "CLOSED ")
        True
        >>> is_closed("left", "CLOSED", rule="yes_no")
        False
        >>> is_closed("Yes", None)
        True
    """
    if rule not in CLOSED_RULES:
        raise ValueError(f"unknown closed/open rule {rule!r}; expected one of {CLOSED_RULES}")
    if rule == "answer_type":
        kind = (answer_type or "").strip().casefold()
        if kind == "closed":
            return True
        if kind == "open":
            return False
        if kind:
            raise ValueError(
                f"unknown answer_type annotation {answer_type!r}; expected 'closed' or "
                "'open' (any case), or None to fall back to the yes/no rule"
            )
    return normalize_answer(answer) in {"yes", "no"}


# ---------------------------------------------------------------------------------
# Per-question scores.
# ---------------------------------------------------------------------------------


def exact_match(pred: str, ref: str) -> float:
    """1.0 if the normalised prediction equals the normalised reference, else 0.0.

    Examples:
        >>> exact_match("The Left Lung.", "left lung")
        1.0
    """
    return float(normalize_answer(pred) == normalize_answer(ref))


def _overlap(pred: str, ref: str) -> tuple[int, int, int]:
    """(multiset overlap, #pred tokens, #ref tokens) of the normalised answers."""
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    return sum((Counter(p) & Counter(r)).values()), len(p), len(r)


def token_recall(pred: str, ref: str) -> float:
    """Share of the reference's tokens found in the prediction (LLaVA-Med open recall).

    Tokens are the whitespace tokens of the normalised answers, counted with
    multiplicity: ``|multiset(pred) & multiset(ref)| / |ref|``. An empty reference
    gives 1.0 for an empty prediction and 0.0 otherwise.

    Examples:
        >>> token_recall("a mass in the left lung", "left lung")
        1.0
        >>> token_recall("left", "left lung")
        0.5
    """
    common, n_pred, n_ref = _overlap(pred, ref)
    if n_ref == 0:
        return float(n_pred == 0)
    return common / n_ref


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style multiset token F1 of the normalised answers.

    Both empty gives 1.0; exactly one empty gives 0.0.

    Examples:
        >>> token_f1("left upper lobe", "left lobe")  # P = 2/3, R = 1
        0.8
    """
    common, n_pred, n_ref = _overlap(pred, ref)
    if n_pred == 0 or n_ref == 0:
        return float(n_pred == n_ref)
    if common == 0:
        return 0.0
    precision, recall = common / n_pred, common / n_ref
    return 2 * precision * recall / (precision + recall)


def bleu1(pred: str, ref: str) -> float:
    """Sentence-level BLEU-1 of the normalised prediction against one reference.

    Clipped unigram precision times the brevity penalty ``exp(1 - r / c)`` when the
    prediction length ``c`` is shorter than the reference length ``r`` (1 otherwise).
    No smoothing; an empty prediction scores 0.0.

    Examples:
        >>> round(bleu1("left lung", "the left upper lung"), 4)  # 1 * exp(1 - 3/2)
        0.6065
    """
    common, c, r = _overlap(pred, ref)
    if c == 0:
        return 0.0
    bp = 1.0 if c >= r else math.exp(1.0 - r / c)
    return bp * common / c


# ---------------------------------------------------------------------------------
# Aggregates with bootstrap intervals.
# ---------------------------------------------------------------------------------


def _bootstrap_ci(values: np.ndarray, n_bootstrap: int, seed: int, alpha: float) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (questions resampled with replacement)."""
    if np.all(values == values[0]):  # degenerate: every resample has the same mean
        return float(values[0]), float(values[0])
    # Multiplicities (B, n), rows summing to n; the same seed and n give the same
    # resamples, so e.g. the open metrics' intervals are paired.
    counts = resample_counts(values.shape[0], n_bootstrap, seed=seed)
    means = counts @ values / values.shape[0]  # (B,)
    return percentile_interval(means, alpha)


def vqa_scores(
    predictions: Sequence[str],
    answers: Sequence[str],
    answer_types: Sequence[str],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Score VQA predictions: closed/open accuracy, open recall/F1/BLEU-1, with CIs.

    Args:
        predictions: Predicted answers, one per question.
        answers: Reference answers, aligned with ``predictions``.
        answer_types: "closed" or "open" per question (decided upstream by
            :func:`is_closed`; compared stripped and case-folded).
        groups: Optional ``{group name: per-question value}`` such as
            ``{"question_type": [...], "content_type": [...]}``; empty values ("")
            are skipped.
        n_bootstrap: Bootstrap resamples per interval; 0 disables the intervals.
        seed: Seed of the NumPy generator that draws the resamples
            (:func:`medvl.metrics.bootstrap.resample_counts`); every interval draws
            from a fresh generator with this seed, so subsets of equal size share
            resamples and adding a metric never shifts another's interval.
        alpha: 1 - confidence level of the percentile intervals.

    Returns:
        A flat dict of floats:

        * ``n``, ``n_closed``, ``n_open``: question counts.
        * ``overall_accuracy``: exact match over all questions.
        * ``closed_accuracy``: exact match over closed questions.
        * ``open_accuracy``: exact match over open questions.
        * ``open_recall``: mean :func:`token_recall` over open questions.
        * ``open_f1``: mean :func:`token_f1` over open questions.
        * ``open_bleu1``: mean :func:`bleu1` over open questions.
        * ``<metric>_ci_low`` / ``<metric>_ci_high`` for each of the six metrics
          above: percentile bootstrap interval (absent when ``n_bootstrap == 0``).
        * ``<group>/<value>/accuracy`` and ``<group>/<value>/n`` for each group and
          non-empty value: exact match and count over that value's questions.

        A metric over an empty subset (e.g. ``open_*`` with no open question) is
        absent, never 0.

    Raises:
        ValueError: for misaligned inputs, an answer type other than closed/open,
            or a group whose length differs from the predictions'.

    Examples:
        >>> s = vqa_scores(["yes", "left lung"], ["yes", "right lung"],
        ...                ["closed", "open"], n_bootstrap=0)
        >>> s["closed_accuracy"], s["open_accuracy"], s["open_recall"]
        (1.0, 0.0, 0.5)
    """
    n = len(predictions)
    if len(answers) != n or len(answer_types) != n:
        raise ValueError(
            f"predictions ({n}), answers ({len(answers)}) and answer_types "
            f"({len(answer_types)}) must have the same length"
        )
    kinds = [str(t).strip().casefold() for t in answer_types]
    bad = sorted({t for t in kinds if t not in ("closed", "open")})
    if bad:
        raise ValueError(f"answer_types must be 'closed' or 'open', got {bad}")

    exact = np.array([exact_match(p, a) for p, a in zip(predictions, answers)], dtype=float)
    closed = np.array([k == "closed" for k in kinds], dtype=bool)
    open_ = ~closed
    open_pairs = [(p, a) for p, a, o in zip(predictions, answers, open_) if o]

    per_question: dict[str, np.ndarray] = {
        "overall_accuracy": exact,
        "closed_accuracy": exact[closed],
        "open_accuracy": exact[open_],
        "open_recall": np.array([token_recall(p, a) for p, a in open_pairs], dtype=float),
        "open_f1": np.array([token_f1(p, a) for p, a in open_pairs], dtype=float),
        "open_bleu1": np.array([bleu1(p, a) for p, a in open_pairs], dtype=float),
    }

    out: dict[str, float] = {
        "n": float(n),
        "n_closed": float(closed.sum()),
        "n_open": float(open_.sum()),
    }
    for name, values in per_question.items():
        if values.size == 0:
            continue
        out[name] = float(values.mean())
        if n_bootstrap > 0:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = _bootstrap_ci(
                values, n_bootstrap, seed, alpha
            )

    for group, values in (groups or {}).items():
        if len(values) != n:
            raise ValueError(f"group {group!r} has {len(values)} values for {n} questions")
        for value in sorted({str(v) for v in values if str(v) != ""}):
            mask = np.array([str(v) == value for v in values], dtype=bool)
            out[f"{group}/{value}/accuracy"] = float(exact[mask].mean())
            out[f"{group}/{value}/n"] = float(mask.sum())
    return out


# ---------------------------------------------------------------------------------
# Markdown report.
# ---------------------------------------------------------------------------------

HEADLINE_METRICS = (
    "overall_accuracy",
    "closed_accuracy",
    "open_accuracy",
    "open_recall",
    "open_f1",
    "open_bleu1",
)
"""The metrics a VQA report leads with, in order."""
_COUNTS = ("n", "n_closed", "n_open")


def _count(value: float) -> str:
    """A question count, printed as an integer."""
    return str(int(round(float(value))))


def vqa_markdown(
    metrics: Mapping[str, float], *, title: str, options: Mapping[str, Any] | None = None
) -> str:
    """Render :func:`vqa_scores` output as a Markdown report.

    Args:
        metrics: The dict returned by :func:`vqa_scores`.
        title: The report's level-1 heading.
        options: Evaluation choices to record (closed rule, answer vocabulary
            policy, checkpoint, ...), listed at the end as ``- key: value``.

    Returns:
        Markdown: a headline table (metric | value | 95% CI) of the metrics present,
        the question counts, one table per group (value | n | accuracy), then the
        options.

    Examples:
        >>> md = vqa_markdown({"n": 2.0, "overall_accuracy": 0.5}, title="VQA-RAD",
        ...                   options={"closed_rule": "answer_type"})
        >>> print(md.splitlines()[0])
        # VQA-RAD
    """
    lines = [f"# {title}", ""]
    counts = [f"{k} = {_count(metrics[k])}" for k in _COUNTS if k in metrics]
    if counts:
        lines += ["Questions: " + ", ".join(counts) + ".", ""]
    lines += ["| metric | value | 95% CI |", "| --- | --- | --- |"]
    for name in HEADLINE_METRICS:
        if name not in metrics:
            continue
        low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
        ci = f"[{low:.4f}, {high:.4f}]" if low is not None and high is not None else "-"
        lines.append(f"| {name} | {float(metrics[name]):.4f} | {ci} |")

    # Group keys look like "<group>/<value>/accuracy"; the value may itself hold '/'.
    grouped: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in metrics.items():
        if "/" not in key:
            continue
        group, rest = key.split("/", 1)
        sub, _, field = rest.rpartition("/")
        if sub and field in ("accuracy", "n"):
            grouped.setdefault(group, {}).setdefault(sub, {})[field] = float(value)
    for group, table in grouped.items():
        lines += ["", f"## {group}", "", "| value | n | accuracy |", "| --- | --- | --- |"]
        for sub in sorted(table):
            row = table[sub]
            n_txt = _count(row["n"]) if "n" in row else "-"
            acc = f"{row['accuracy']:.4f}" if "accuracy" in row else "-"
            lines.append(f"| {sub} | {n_txt} | {acc} |")

    if options:
        lines += ["", "## Evaluation options", ""]
        lines += [f"- {key}: {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"
