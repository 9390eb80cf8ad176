"""Clinical efficacy of generated reports: a rule-based CheXpert-style labeler and CE metrics.

:func:`label_reports` assigns the 14 CheXpert observations (Irvin et al., AAAI 2019,
arXiv:1901.07031) to free-text reports in the structure of the CheXpert labeler and
NegBio (Peng et al., AMIA 2018), with our own rules and phrases
(:mod:`medvl.metrics._chexpert_lexicon`, each cue with the rule it implements) and
machinery (:mod:`medvl.metrics._labeler`):

1. **Text.** Whole reports are accepted: the sections that give the reason for the study
   (INDICATION, HISTORY, REASON FOR EXAM, COMPARISON, TECHNIQUE, ...) are skipped
   ("INDICATION: rule out pneumonia" is no finding); findings, impression and wet reads
   are labelled. Sentences end at periods, blank lines and lines that start with a
   capitalised word (MIMIC-CXR wraps lines mid-sentence).
2. **Mentions**: per observation, phrases and synonyms ("cardiomegaly", "enlarged heart";
   "effusion", "pleural fluid", "hydropneumothorax"; "tube", "line", "PICC", ...), minus
   phrases that mention none ("pericardial effusion", "calcified nodule", "mass effect",
   "overlying the heart"). Anatomical mentions ("heart size", "cardiac silhouette",
   "mediastinal contours") are findings only with an abnormal qualifier of their own
   ("enlarged", "widened"), negative when called normal, and nothing when only called
   stable. "Other findings" (emphysema, granuloma, scoliosis, ...) are mentions too: they
   rule out No Finding.
3. **Negation and uncertainty**, in CheXpert's order: pre-negation uncertainty ("cannot
   exclude", "not ruled out", "no new"), then negation, forward ("no", "without", "no
   evidence of", "free of", "negative for", "resolution of", "rule out") and backward
   ("is absent", "has resolved", "is not seen", "are normal", "within normal limits",
   "not enlarged", "has been removed"), then uncertainty ("may represent", "could be",
   "possible", "probable", "likely", "questionable", "suspicious for", "concerning for",
   "versus", "X or Y", "differential includes", "is suspected", "not well visualized").
   Scopes are bounded by sentence, clause and list structure, never by a count of words:
   a forward scope stops at a clause end (";", "but", "although", "except", "other
   than", ", and the") or a finite verb; it covers a whole list closed by "or" whatever
   the items' modifiers ("no effusion, pneumothorax, large consolidation, or edema"),
   and elsewhere stops at an item that opens a new assertion ("no pneumothorax, small
   left effusion"; "no acute process with stable cardiomegaly"). An uncertainty word
   inside a negated phrase is part of it ("no suspicious nodule", "no findings concerning
   for pneumonia" are negative). A finding explained by technique ("mediastinal widening
   likely due to supine positioning") is negative, and uncertain when only possibly so;
   the object of a search ("sensitivity to detect pneumothorax", "evaluation for
   pneumonia") is negative, as CheXpert treats "rule out X".
4. **Aggregation** per report as CheXpert's ``aggregate.py``: positive beats uncertain
   beats negative; "CHF" or "heart failure" mentioned positively or uncertainly also
   makes Cardiomegaly uncertain; **No Finding** is 1 when no mention other than Support
   Devices (other findings included) is positive or uncertain, and not mentioned
   otherwise. A "no acute cardiopulmonary process" sentence mentions nothing, so it never
   outranks a finding stated elsewhere; a report without any positive finding, even an
   empty one, has No Finding = 1, as in CheXpert.

Encoding: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, ``NaN`` not mentioned,
as in CheXpert's and MIMIC-CXR's label CSVs.

Where this labeler departs from CheXpert's outputs, on purpose: "likely"/"probably" are
hedges (CheXpert reads "likely atelectasis" as positive); a structure called only stable
or unchanged is no mention (CheXpert: uncertain); sternotomy wires and surgical clips
are no support devices (CheXpert's device list has neither); the technique and search
rules above have no CheXpert counterpart. Healed fractures are positive, removal of a
device negates Support Devices, "no new X" is uncertain, "cardiomediastinal silhouette"
is an Enlarged Cardiomediastinum mention, as in CheXpert.

Validation: the hand-written sentences of ``tests/metrics/test_clinical.py`` and the
radlabels development set (1,000 MIMIC-style reports with RadGraph-derived labels, see
:mod:`medvl.metrics._labeler_devset`), on which ``benchmarks/labeler.py`` prints
per-observation agreement against a keyword-and-negation labeler. It has not been
compared with CheXpert's or CheXbert's own outputs (neither runs offline).
:data:`LABELER_VERSION` names the rules; metric files record it.

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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medvl.data.labels import CHEXPERT_LABELS
from medvl.metrics import _labeler
from medvl.metrics.bootstrap import CorpusMetric, PreparedMetric, SummedStats

__all__ = [
    "CHEXPERT_LABELS",
    "LABELER_VERSION",
    "ClinicalF1",
    "Mention",
    "ce_prepared",
    "ce_from_labels",
    "clinical_efficacy",
    "extract_mentions",
    "label_reports",
]

LABELER_VERSION = "medvl-chexpert-rules/2.0"
"""Version of the labeler's rules and lexicon; metric files record it so that numbers
from different versions are not compared unknowingly. Bump it when a rule or phrase
changes what a report is labelled."""

_OUTPUT = CHEXPERT_LABELS  # column order of label_reports


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in a report.

    Attributes:
        observation: Label name (``CHEXPERT_LABELS``) or ``"other"``.
        text: The matched phrase (lower case).
        label: 1 positive, 0 negative, -1 uncertain.
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or None (from its clause segment).
        sentence: Index of the sentence in the labelled text (reason-for-study sections removed).
    """

    observation: str
    text: str
    label: int
    laterality: str | None
    sentence: int


def extract_mentions(text: str) -> list[Mention]:
    """Every classified mention of an observation (or of an "other finding") in a report.

    Args:
        text: Report text (any Unicode).

    Returns:
        Mentions in reading order; anatomical mentions that assert nothing ("the heart
        size is stable") are left out.
    """
    return [Mention(*m[:3], m[4], m[3]) for m in _labeler.analyse(text or "", sides=True)]


def label_reports(texts: Sequence[str]) -> np.ndarray:
    """CheXpert labels of reports.

    Args:
        texts: Reports (whole reports, or findings and/or impression), any Unicode; None
            counts as empty.

    Returns:
        ``(N, 14)`` float array in :data:`CHEXPERT_LABELS` order (No Finding, Enlarged
        Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Edema, Consolidation,
        Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture,
        Support Devices): 1 positive, 0 negative, -1 uncertain, NaN not mentioned.
    """
    if isinstance(texts, str):
        raise TypeError("label_reports takes a sequence of reports, not one string")
    rows = [_labeler.aggregate(_labeler.analyse(t or "")) for t in texts]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(_OUTPUT))


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
