"""Clinical efficacy of generated reports: a rule-based CheXpert-style labeler and CE metrics.

:func:`label_reports` assigns the 14 CheXpert observations (Irvin et al., AAAI 2019,
arXiv:1901.07031) to free-text reports the way the CheXpert labeler does, in three stages:

1. **Mention extraction**: per observation, a lexicon of phrases and synonyms
   (:mod:`medvl.metrics._chexpert_lexicon`; "cardiomegaly", "enlarged heart", "heart
   size"; "effusion", "pleural fluid"; "tube", "line", "catheter", "PICC", ...), minus
   overlapping "unmention" phrases ("pericardial effusion", "calcified nodule").
2. **Classification** of every mention as negative, uncertain or positive, with the
   CheXpert order of rules: pre-negation uncertainty first ("cannot exclude", "not ruled
   out", "no new"), then negation ("no", "without", "free of", "negative for", "no
   evidence of", "resolution of", "removal of", "rather than", "is absent", "has
   resolved", "no longer seen", "normal", "within normal limits", "not enlarged"), then
   uncertainty ("may", "could", "possible", "probable", "suspicious for", "concerning
   for", "suggest", "versus", "X or Y", "questionable", "borderline", "differential
   includes", "less likely", "not well visualized"). CheXpert matches these rules on
   dependency graphs (NegBio); without a parser each cue here has a direction and a scope
   in the manner of NegEx: forward cues reach to the end of the clause (clauses end at
   ";", "but", "however", "although", "which", "except", "otherwise", ", and the",
   ...), stop at a verb ("no pneumothorax is seen and the heart is enlarged") and, for
   negation, at a comma that opens a new assertion ("no pneumothorax, small left
   effusion"); a coordinated list stays in scope ("no pleural effusion, pneumothorax or
   focal consolidation"); backward cues ("is absent", "are normal") reach back at most
   eight words and over commas only within a list.
3. **Aggregation** per report as CheXpert's ``aggregate.py``: positive beats uncertain
   beats negative; "CHF" or "heart failure" mentioned positively or uncertainly also
   make Cardiomegaly uncertain; **No Finding** is 1 when no mention other than Support
   Devices (including "other findings" such as emphysema, scoliosis, calcification,
   granuloma) is positive or uncertain, and not mentioned otherwise. So a report without
   any positive finding, even an empty one, has No Finding = 1, as in CheXpert.

Encoding: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, ``NaN`` not mentioned,
as in CheXpert's and MIMIC-CXR's label CSVs.

Decisions where CheXpert is silent or where its output is a known artefact:
"likely" and "probably" are *not* uncertainty cues (CheXpert has no such rule:
"likely atelectasis" is positive); removal ("interval removal of the endotracheal
tube", "chest tube has been removed") negates Support Devices, as CheXpert's
"removal of"/"removed" rules do; healed or old fractures are positive, as in CheXpert;
"no new X" is uncertain (CheXpert's pre-negation rule); anatomical mentions ("heart
size", "cardiac silhouette", "mediastinal contours") need an abnormal qualifier
("enlarged", "widened", "prominent") to be positive, are negative when normal, and
uncertain when only called stable or unchanged (CheXpert's rule), where CheXpert would
call a bare "the heart" positive; a stable structure that is explicitly enlarged is
positive. "Cardiomediastinal silhouette" is an Enlarged Cardiomediastinum mention, not a
Cardiomegaly one (CheXpert's phrase lists). This labeler approximates CheXpert's
outputs; it has not been validated against CheXpert's or CheXbert's labels here (neither
can run offline), only against the hand-labelled sentences of
``tests/metrics/test_clinical.py``.

:func:`clinical_efficacy` computes the clinical-efficacy (CE) metrics of R2Gen
(Chen et al., EMNLP 2020), CMN and ViLMedic: both reports are labelled, a label counts as
positive when it is 1 (uncertain, negative and unmentioned count as negative: R2Gen's
``compute_ce.py``), and precision, recall and F1 are micro- and macro-averaged over the
14 observations *including No Finding* (the commonly reported variant); a label absent
from both reports contributes 0 to the macro average (scikit-learn's
``zero_division=0``). The "uncertain-as-positive" variant (``ce_uap_*``) counts -1 as
positive too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medvl.data.labels import CHEXPERT_LABELS
from medvl.metrics import _chexpert_lexicon as lex
from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric, SummedStats

__all__ = [
    "CHEXPERT_LABELS",
    "ClinicalF1",
    "Mention",
    "ce_prepared",
    "ce_from_labels",
    "clinical_efficacy",
    "extract_mentions",
    "label_reports",
]

_OUTPUT = CHEXPERT_LABELS  # column order of label_reports
_OBSERVATIONS = tuple(o for o in CHEXPERT_LABELS if o != "no_finding") + ("other",)


def _compile(pattern: str) -> re.Pattern:
    return re.compile(r"(?<![\w-])(?:" + pattern + r")")


_MENTIONS = {obs: [(_compile(p), kind) for p, kind in lex.MENTIONS[obs]] for obs in _OBSERVATIONS}
_UNMENTIONS = {obs: [_compile(p) for p in pats] for obs, pats in lex.UNMENTIONS.items()}
_CUES = [(re.compile(r"(?<![\w-])(?:" + p + r")(?![\w])"), kind, direction, window)
         for p, kind, direction, window in lex.CUES]
_TERMINATORS = re.compile(lex.TERMINATORS)
_SCOPE_VERBS = re.compile(lex.SCOPE_VERBS)
_QUALIFIERS = re.compile(lex.ABNORMAL_QUALIFIERS)
_LATERALITY = [(re.compile(p), side) for p, side in lex.LATERALITY]
_NEW_SUBJECT = re.compile(r"\band (?:the|a|an|there)\b")  # "no pneumothorax and the heart is enlarged"
_OR = re.compile(r"\b(?:or|and/or|versus|vs)\b")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_ABBREV = re.compile(r"\b(vs|e\.g|i\.e|approx|dr|mr|ms|st)\.(?=\s*[a-z0-9])")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)  # zero-width, soft hyphen
_SENTENCE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[!?\n]+")


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in a report.

    Attributes:
        observation: Label name (``CHEXPERT_LABELS``) or ``"other"``.
        text: The matched phrase (lower case).
        label: 1 positive, 0 negative, -1 uncertain.
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or None (from its clause).
        sentence: Index of the sentence in the report.
    """

    observation: str
    text: str
    label: int
    laterality: str | None
    sentence: int


@dataclass
class _Span:
    start: int
    end: int
    kind: str
    direction: str = ""
    window: int | None = None


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower().translate(_INVISIBLE)
    text = text.replace("\u2019", "'").replace("\u2013", "-").replace("\u2014", "-")
    return _ABBREV.sub(r"\1", text)


def _sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE.split(text)) if s]


def _clauses(sentence: str) -> list[str]:
    return [c for c in (p.strip(" ,") for p in _TERMINATORS.split(sentence)) if c]


def _n_words(text: str) -> int:
    return len(_WORD.findall(text))


def _find_cues(clause: str) -> list[_Span]:
    """All cues of the clause; a cue inside a longer one is dropped (same spans coexist)."""
    found = [_Span(m.start(), m.end(), kind, direction, window)
             for pattern, kind, direction, window in _CUES for m in pattern.finditer(clause)
             if m.end() > m.start()]
    found.sort(key=lambda s: (-(s.end - s.start), s.start))
    kept: list[_Span] = []
    for span in found:
        if all((span.start, span.end) == (k.start, k.end) or span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def _find_mentions(clause: str) -> list[tuple[str, _Span]]:
    """(observation, span) of each mention; overlapping mentions of one observation keep the longest."""
    out = []
    for obs, patterns in _MENTIONS.items():
        blocked = [m.span() for p in _UNMENTIONS.get(obs, ()) for m in p.finditer(clause)]
        spans = sorted(((m.start(), m.end(), kind) for p, kind in patterns for m in p.finditer(clause)
                        if not any(m.start() < b1 and m.end() > b0 for b0, b1 in blocked)),
                       key=lambda s: (-(s[1] - s[0]), s[0]))
        kept: list[tuple[int, int, str]] = []
        for s in spans:
            if all(s[1] <= k[0] or s[0] >= k[1] for k in kept):
                kept.append(s)
        out += [(obs, _Span(s, e, kind)) for s, e, kind in kept]
    return sorted(out, key=lambda x: x[1].start)


_SCOPED = ("neg", "unc", "preneg")


def _breaks(cues: list[_Span], cue: _Span, lo: int, hi: int) -> bool:
    """Whether a cue of another kind lies between ``lo`` and ``hi`` and ends ``cue``'s scope."""
    return any(o.kind in _SCOPED and o.kind != cue.kind and o.start >= lo and o.end <= hi for o in cues if o is not cue)


def _forward_applies(clause: str, cues: list[_Span], cue: _Span, m: _Span) -> bool:
    if cue.end > m.start:
        # A mention inside a longer negation cue ("no opacity to suggest pneumonia").
        return cue.kind == "neg" and cue.start < m.start and m.end <= cue.end
    between = clause[cue.end : m.start]
    if cue.window is not None and _n_words(between) > cue.window:
        return False
    if _breaks(cues, cue, cue.end, m.start):
        return False
    if cue.kind in _SCOPED and (_SCOPE_VERBS.search(between) or _NEW_SUBJECT.search(between)):
        return False
    if cue.kind == "neg":
        for segment in between.split(",")[1:]:
            if set(_WORD.findall(segment)[:3]) & lex.NEW_ASSERTION:
                return False
    return True


def _backward_applies(clause: str, cues: list[_Span], cue: _Span, m: _Span) -> bool:
    if m.end > cue.start:
        return False
    between = clause[m.end : cue.start]
    if _n_words(between) > (8 if cue.window is None else cue.window):
        return False
    if _breaks(cues, cue, m.end, cue.start):
        return False
    if "," in between and not re.search(r"\b(?:and|or)\b", between.rsplit(",", 1)[1]):
        return False  # a comma outside a list "X, Y and Z are normal" ends the scope
    return True


def _applies(clause: str, cues: list[_Span], cue: _Span, m: _Span) -> bool:
    if cue.direction in ("fwd", "both") and cue.start < m.start and _forward_applies(clause, cues, cue, m):
        return True
    return cue.direction in ("bwd", "both") and cue.start >= m.end and _backward_applies(clause, cues, cue, m)


def _segment(clause: str, m: _Span) -> tuple[int, int]:
    """Bounds of the comma-separated segment holding the mention."""
    lo = clause.rfind(",", 0, m.start) + 1
    hi = clause.find(",", m.end)
    return lo, len(clause) if hi < 0 else hi


def _classify(clause: str, cues: list[_Span], mentions: list[tuple[str, _Span]], idx: int) -> int | None:
    obs, m = mentions[idx]
    applied = {c.kind for c in cues if c.kind in ("preneg", "neg", "unc", "stable") and _applies(clause, cues, c, m)}
    if "preneg" in applied:
        return -1
    if "neg" in applied:
        return 0
    if "unc" in applied or m.kind == "unc":
        return -1
    # "X or Y" / "X versus Y" between neighbouring mentions: both uncertain (CheXpert's conj:or rule).
    for j in (idx - 1, idx + 1):
        if 0 <= j < len(mentions) and mentions[j][1] is not m:
            a, b = sorted((m, mentions[j][1]), key=lambda s: s.start)
            between = clause[a.end : b.start]
            if b.start >= a.end and _OR.search(between) and _n_words(between) <= 6 and not _SCOPE_VERBS.search(between):
                return -1
    if m.kind == "attr":
        lo, hi = _segment(clause, m)
        for q in _QUALIFIERS.finditer(clause, lo, hi):
            gap = clause[m.end : q.start()] if q.start() >= m.end else clause[q.end() : m.start]
            if _n_words(gap) <= 6:
                return 1
        return -1 if "stable" in applied else None
    return 1


def _laterality(clause: str, m: _Span) -> str | None:
    lo, hi = _segment(clause, m)
    sides = {side for pattern, side in _LATERALITY if pattern.search(clause, lo, hi)}
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return next(iter(sides), None)


def extract_mentions(text: str) -> list[Mention]:
    """Every classified mention of an observation (or of an "other finding") in a report.

    Args:
        text: Report text (any Unicode).

    Returns:
        Mentions in reading order; anatomical mentions without any qualifier are left out.
    """
    out = []
    for s_idx, sentence in enumerate(_sentences(_normalize(text))):
        for clause in _clauses(sentence):
            mentions = _find_mentions(clause)
            if not mentions:
                continue
            cues = _find_cues(clause)
            for i, (obs, m) in enumerate(mentions):
                label = _classify(clause, cues, mentions, i)
                if label is not None:
                    out.append(Mention(obs, clause[m.start : m.end], label, _laterality(clause, m), s_idx))
    return out


def _aggregate(mentions: Sequence[Mention]) -> np.ndarray:
    labels: dict[str, set[int]] = {}
    no_finding = True
    for men in mentions:
        if men.observation != "support_device" and men.label in (1, -1):
            no_finding = False
        labels.setdefault(men.observation, set()).add(men.label)
        if men.observation == "edema" and men.label in (1, -1) and men.text in ("chf", "heart failure"):
            labels.setdefault("cardiomegaly", set()).add(-1)
    row = np.full(len(_OUTPUT), np.nan)
    for k, obs in enumerate(_OUTPUT):
        got = labels.get(obs)
        if got:
            row[k] = 1.0 if 1 in got else (-1.0 if -1 in got else 0.0)
    if no_finding:
        row[_OUTPUT.index("no_finding")] = 1.0
    return row


def label_reports(texts: Sequence[str]) -> np.ndarray:
    """CheXpert labels of reports.

    Args:
        texts: Reports (findings and/or impression), any Unicode; None counts as empty.

    Returns:
        ``(N, 14)`` float array in :data:`CHEXPERT_LABELS` order (No Finding, Enlarged
        Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Edema, Consolidation,
        Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture,
        Support Devices): 1 positive, 0 negative, -1 uncertain, NaN not mentioned.
    """
    if isinstance(texts, str):
        raise TypeError("label_reports takes a sequence of reports, not one string")
    rows = [_aggregate(extract_mentions(t or "")) for t in texts]
    return np.stack(rows) if rows else np.zeros((0, len(_OUTPUT)))


# ----------------------------------------------------------------------------- CE metrics
def _binary(labels: np.ndarray, uncertain_as_positive: bool) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float64)
    pos = labels == 1
    if uncertain_as_positive:
        pos |= labels == -1
    return pos


def _confusion_stats(hyp_labels: np.ndarray, ref_labels: np.ndarray, uncertain_as_positive: bool) -> np.ndarray:
    """Per-sample TP, FP, FN for each observation, shape ``(N, 3 * K)``."""
    h, r = _binary(hyp_labels, uncertain_as_positive), _binary(ref_labels, uncertain_as_positive)
    if h.shape != r.shape:
        raise ValueError(f"label arrays differ in shape: {h.shape} vs {r.shape}")
    return np.concatenate([h & r, h & ~r, ~h & r], axis=1).astype(np.float64)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, r = _div(tp, tp + fp), _div(tp, tp + fn)
    return p, r, _div(2 * p * r, p + r)


def _ce_reduce(sums: np.ndarray, k: int, average: str, what: str) -> np.ndarray:
    """Micro/macro precision/recall/F1 from summed confusion counts ``(B, 3K)`` -> ``(B,)``."""
    tp, fp, fn = sums[:, :k], sums[:, k : 2 * k], sums[:, 2 * k :]
    if average == "micro":
        tp, fp, fn = tp.sum(1), fp.sum(1), fn.sum(1)
        p, r, f = _prf(tp, fp, fn)
    else:
        p, r, f = (x.mean(1) for x in _prf(tp, fp, fn))
    return {"precision": p, "recall": r, "f1": f}[what]


def ce_from_labels(hyp_labels: np.ndarray, ref_labels: np.ndarray, observations: Sequence[str] | None = None
                   ) -> dict[str, float]:
    """CE metrics from label arrays (see :func:`clinical_efficacy`)."""
    cols = _columns(observations)
    out: dict[str, float] = {}
    for prefix, uap in (("ce_", False), ("ce_uap_", True)):
        sums = _confusion_stats(hyp_labels[:, cols], ref_labels[:, cols], uap).sum(0, keepdims=True)
        for average in ("micro", "macro"):
            for what in ("precision", "recall", "f1"):
                out[f"{prefix}{average}_{what}"] = float(_ce_reduce(sums, len(cols), average, what)[0])
        k = len(cols)
        p, r, f = _prf(sums[0, :k], sums[0, k : 2 * k], sums[0, 2 * k :])
        for j, c in enumerate(cols):
            name = _OUTPUT[c]
            out[f"{prefix}precision/{name}"] = float(p[j])
            out[f"{prefix}recall/{name}"] = float(r[j])
            out[f"{prefix}f1/{name}"] = float(f[j])
    return out


def _columns(observations: Sequence[str] | None) -> list[int]:
    if observations is None:
        return list(range(len(_OUTPUT)))
    unknown = [o for o in observations if o not in _OUTPUT]
    if unknown:
        raise ValueError(f"unknown observations {unknown}; known: {list(_OUTPUT)}")
    return [_OUTPUT.index(o) for o in observations]


def clinical_efficacy(hypotheses: Sequence[str], references: Sequence[str],
                      observations: Sequence[str] | None = None) -> dict[str, float]:
    """Clinical-efficacy precision, recall and F1 of generated reports against references.

    Args:
        hypotheses: Generated reports.
        references: Reference reports, one per hypothesis.
        observations: Label names to score (default: all 14, including No Finding).

    Returns:
        ``ce_{micro,macro}_{precision,recall,f1}`` (positive = label 1),
        ``ce_uap_{micro,macro}_{precision,recall,f1}`` (positive = label 1 or -1), and per
        observation ``ce_{precision,recall,f1}/<name>`` and ``ce_uap_.../<name>``.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return ce_from_labels(label_reports(hypotheses), label_reports(references), observations)


def ce_prepared(hyp_labels: np.ndarray, ref_labels: np.ndarray, observations: Sequence[str] | None = None
                ) -> dict[str, PreparedMetric]:
    """Bootstrap-ready CE metrics from label arrays, by result key.

    Keys: ``ce_{micro,macro}_{precision,recall,f1}``, ``ce_f1/<name>`` and their
    ``ce_uap_`` twins, each a :class:`~medvl.metrics.bootstrap.SummedStats` over the
    per-sample confusion counts.
    """
    cols = _columns(observations)
    point = ce_from_labels(hyp_labels, ref_labels, observations)
    out: dict[str, PreparedMetric] = {}
    for prefix, uap in (("ce_", False), ("ce_uap_", True)):
        stats = _confusion_stats(hyp_labels[:, cols], ref_labels[:, cols], uap)
        for average in ("micro", "macro"):
            for what in ("precision", "recall", "f1"):
                key = f"{prefix}{average}_{what}"
                out[key] = SummedStats(stats, lambda s, a=average, w=what: _ce_reduce(s, len(cols), a, w),
                                       point=point[key])
        k = len(cols)
        for j, c in enumerate(cols):  # per-observation F1: one (TP, FP, FN) triple
            key = f"{prefix}f1/{_OUTPUT[c]}"
            out[key] = SummedStats(stats[:, [j, k + j, 2 * k + j]], lambda s: _prf(s[:, 0], s[:, 1], s[:, 2])[2],
                                   point=point[key])
    return out


class ClinicalF1(CorpusMetric):
    """CE F1 (or precision/recall) as a :class:`~medvl.metrics.bootstrap.CorpusMetric`.

    Args:
        average: ``"micro"`` or ``"macro"``.
        what: ``"f1"``, ``"precision"`` or ``"recall"``.
        uncertain_as_positive: Count -1 labels as positive.
        observations: Label names (default all 14).
    """

    def __init__(self, average: str = "micro", what: str = "f1", *, uncertain_as_positive: bool = False,
                 observations: Sequence[str] | None = None):
        if average not in ("micro", "macro") or what not in ("f1", "precision", "recall"):
            raise ValueError(f"unknown CE metric {average!r}/{what!r}")
        self.average, self.what, self.uap, self.observations = average, what, uncertain_as_positive, observations
        self.name = f"ce_{'uap_' if self.uap else ''}{average}_{what}"

    def prepare(self, hypotheses, references) -> PreparedMetric:
        return ce_prepared(label_reports(hypotheses), label_reports(references), self.observations)[self.name]
