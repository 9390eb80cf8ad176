"""Natural-language generation metrics for report generation: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

The conventions are those of the COCO caption evaluation code (``pycocoevalcap``; Chen et
al., "Microsoft COCO Captions: Data Collection and Evaluation Server", arXiv:1504.00325),
which R2Gen, CMN and most report-generation papers use. One file per concept:

* :mod:`~medvl.metrics.nlg._tokenize`: :func:`ptb_tokenize`, a pure-Python approximation
  of COCO's PTBTokenizer with ``-lowerCase`` and its punctuation removal.
* :mod:`~medvl.metrics.nlg.bleu`: BLEU (Papineni et al., ACL 2002) exactly as
  ``bleu_scorer.py``.
* :mod:`~medvl.metrics.nlg.cider`: CIDEr-D (Vedantam et al., CVPR 2015) exactly as
  ``cider_scorer.py``.
* :mod:`~medvl.metrics.nlg.rouge`: ROUGE-L (Lin, 2004) as ``rouge.py``; ``beta=1`` gives
  the F1 of Google's ``rouge-score``.
* :mod:`~medvl.metrics.nlg.meteor`: METEOR 1.5 (Denkowski & Lavie, WMT 2014) ported from
  the Java ``meteor-1.5.jar`` that pycocoevalcap runs (``-l en -norm``: normalisation,
  exact / Snowball stem / WordNet synonym / paraphrase matching, beam-search alignment,
  pooled corpus statistics), without Java; its data files are read from the installed
  pycocoevalcap. Helpers: ``_meteor_norm``, ``_meteor_align``, ``_meteor_data``, ``_stemmer``.

:func:`compute_nlg` gives the corpus scores, :func:`nlg_per_sample` the per-sample ones and
:func:`nlg_metrics` the bootstrap-ready :class:`~medvl.metrics.bootstrap.CorpusMetric`
objects, all under the keys ``bleu1..4``, ``meteor``, ``rougeL``, ``cider``.

Measured parity (``tests/metrics/test_nlg.py``; 300 synthetic radiology sentence pairs
built from templates with word drops, swaps and synonyms, single and multiple
references): on the same tokens, BLEU-1..4 corpus and per-sample scores, CIDEr-D corpus
and per-sample scores and ROUGE-L (beta 1.2) equal ``pycocoevalcap``'s bit for bit
(difference 0.0); ``rouge_l(beta=1.0)`` equals ``rouge-score``'s ROUGE-L F1 bit for bit on
single references. The vectorised CIDEr-D bootstrap path agrees with pycocoevalcap on
materialised resamples to 1e-9 (relative). METEOR against Java METEOR 1.5
(``tests/metrics/test_meteor_parity.py``): see :mod:`~medvl.metrics.nlg.meteor`.

Before the port, ``meteor`` was NLTK's formulation (alpha 0.9, beta 3, gamma 0.5, Porter
stems, mean of sentence scores), which scored about twice Java METEOR 1.5 on report text;
its ``porter_stem`` helper is gone with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvl.metrics.bootstrap import CorpusMetric
from medvl.metrics.nlg._tokenize import PUNCTUATIONS, References, prepare_pairs, ptb_tokenize
from medvl.metrics.nlg.bleu import Bleu, bleu
from medvl.metrics.nlg.cider import CiderD, cider_d
from medvl.metrics.nlg.meteor import METEOR_IMPLEMENTATION, Meteor, MeteorDataError, meteor
from medvl.metrics.nlg.rouge import RougeL, rouge_l

__all__ = [
    "METEOR_IMPLEMENTATION",
    "PUNCTUATIONS",
    "Bleu",
    "CiderD",
    "Meteor",
    "MeteorDataError",
    "RougeL",
    "bleu",
    "cider_d",
    "compute_nlg",
    "meteor",
    "nlg_metrics",
    "nlg_per_sample",
    "ptb_tokenize",
    "rouge_l",
]


def __getattr__(name: str):
    if name == "porter_stem":
        raise AttributeError("medvl.metrics.nlg.porter_stem was removed with the NLTK-style METEOR: "
                             "METEOR now uses METEOR 1.5's Snowball stemmer; for Porter stems use "
                             "nltk.stem.PorterStemmer(mode=PorterStemmer.MARTIN_EXTENSIONS)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def nlg_metrics() -> dict[str, CorpusMetric]:
    """The metrics of :func:`compute_nlg` as bootstrap-ready objects, by result key."""
    return {"bleu1": Bleu(1), "bleu2": Bleu(2), "bleu3": Bleu(3), "bleu4": Bleu(4),
            "meteor": Meteor(), "rougeL": RougeL(), "cider": CiderD()}


def nlg_per_sample(hypotheses: Sequence[str], references: References) -> dict[str, np.ndarray]:
    """Per-sample scores (``(N,)`` arrays) under the keys of :func:`compute_nlg`.

    BLEU per sample is bleu_scorer.py's per-image score; the corpus BLEU is *not* their mean.
    """
    return _score_all(*prepare_pairs(hypotheses, references))[1]


def compute_nlg(hypotheses: Sequence[str], references: References) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated reports, COCO conventions.

    Args:
        hypotheses: One generated report per sample.
        references: One reference report, or a list of references, per sample.

    Returns:
        ``{"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider"}`` -> float.
    """
    return _score_all(*prepare_pairs(hypotheses, references))[0]


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
