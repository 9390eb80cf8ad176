"""Parity of medvl.metrics.nlg with pycocoevalcap and rouge-score on radiology-like text.

Measured on the 300 pairs of ``_corpus`` (seed 0): BLEU-1..4, CIDEr-D and ROUGE-L
(beta 1.2) equal pycocoevalcap's bit for bit, corpus and per-sample; ROUGE-L with beta 1
equals rouge-score's F1 bit for bit. The vectorised bootstrap paths agree with the exact
scorers to 1e-9 (METEOR's to 1e-12). METEOR's pieces (normaliser, Java string semantics,
Snowball stems) and a dozen pairs are checked here against values Java METEOR 1.5
produced; ``test_meteor_parity.py`` runs Java METEOR itself on ~400 pairs.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from medvl.metrics import nlg
from medvl.metrics.bootstrap import CorpusMetric, SummedStats, bootstrap_ci, bootstrap_many, resample_counts
from medvl.metrics.nlg.rouge import _lcs_length

_TEMPLATES = [
    "The heart size is {size}.",
    "There is a {sev} {side} pleural effusion.",
    "No pneumothorax is seen.",
    "{Sev} bibasilar atelectasis.",
    "The lungs are clear without focal consolidation, effusion, or pneumothorax.",
    "Patchy opacity at the {side} base may represent atelectasis or pneumonia.",
    "The endotracheal tube terminates {n} cm above the carina.",
    "Cardiomediastinal silhouette is within normal limits.",
    "{Sev} pulmonary edema, {trend} compared to the prior study.",
    "No acute cardiopulmonary process.",
    "A {n} mm nodule is noted in the {side} upper lobe (unchanged).",
    "Right IJ central venous catheter tip in the mid SVC.",
    "Degenerative changes of the thoracic spine; no acute fracture.",
    "Pulmonary vascularity is {size}, there isn't vascular congestion.",
    "Low lung volumes with crowding of the bronchovascular markings.",
]
_FILL = {"size": ["normal", "enlarged", "mildly enlarged", "top-normal"], "sev": ["small", "moderate", "large", "trace"],
         "side": ["left", "right"], "n": ["3", "4.5", "6", "12"], "trend": ["improved", "worse", "unchanged"]}
_SYNONYMS = {"small": "minimal", "large": "sizable", "seen": "identified", "enlarged": "increased", "opacity": "opacification",
             "effusion": "fluid", "normal": "unremarkable", "tube": "catheter", "no": "without", "terminates": "ends"}


def _fill(template: str, rng: random.Random) -> str:
    values = {k: rng.choice(v) for k, v in _FILL.items()}
    values.update({k.capitalize(): v.capitalize() for k, v in values.items()})
    return template.format(**values)


def _report(rng: random.Random) -> str:
    return " ".join(_fill(t, rng) for t in rng.sample(_TEMPLATES, rng.randint(1, 4)))


def _perturb(text: str, rng: random.Random, strength: float) -> str:
    words = text.split()
    out = []
    for w in words:
        r = rng.random()
        if r < 0.15 * strength:
            continue  # drop
        key = w.lower().strip(".,;")
        if r < 0.35 * strength and key in _SYNONYMS:
            w = w.replace(key, _SYNONYMS[key])
        out.append(w)
    for _ in range(int(3 * strength)):
        if len(out) > 2:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    if rng.random() < 0.3 * strength:
        out += _report(rng).split()
    return " ".join(out)


def _corpus(n: int = 300, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    hyps, refs = [], []
    for i in range(n):
        ref = _report(rng)
        strength = rng.choice([0.0, 0.3, 0.7, 1.2, 2.0])
        hyps.append(_perturb(ref, rng, strength) if i % 17 else _report(rng))  # some unrelated pairs
        group = [ref] + [_perturb(ref, rng, 0.5) for _ in range(rng.choice([0, 0, 1, 2]))]
        refs.append(group)
    hyps[5] = ""  # an empty generation
    return hyps, refs


@pytest.fixture(scope="module")
def corpus():
    return _corpus()


@pytest.fixture(scope="module")
def tokenized(corpus):
    hyps, refs = corpus
    return [nlg.ptb_tokenize(h) for h in hyps], [[nlg.ptb_tokenize(r) for r in g] for g in refs]


def _coco(tokenized):
    hyps, refs = tokenized
    return {i: list(g) for i, g in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}


# ------------------------------------------------------------------ tokenizer
@pytest.mark.parametrize("text, tokens", [
    ("The heart isn't enlarged.", "the heart is n't enlarged"),
    ("No pleural effusion, pneumothorax; or (focal) consolidation!", "no pleural effusion pneumothorax or focal consolidation"),
    ("A 4.5 cm nodule -- e.g. a granuloma...", "a 4.5 cm nodule e.g. a granuloma"),
    ("Left-sided PICC and/or the patient's port: 1,000 ml", "left-sided picc and/or the patient 's port 1,000 ml"),
    ("\u201cTop-normal\u201d heart size\u00a0\u2014 stable", "top-normal heart size stable"),
    ("  ", ""),
])
def test_ptb_tokenize(text, tokens):
    assert nlg.ptb_tokenize(text) == tokens


# ------------------------------------------------------------------ pycocoevalcap parity
def test_corpus_spans_a_range(tokenized):
    hyps, refs = tokenized
    _, per = nlg.cider_d(hyps, refs, tokenized=True)
    assert per.min() < 0.5 and per.max() > 5.0  # from unrelated to identical pairs
    assert any(len(g) > 1 for g in refs) and any(len(g) == 1 for g in refs)


def test_bleu_matches_pycocoevalcap_exactly(tokenized):
    bleu_mod = pytest.importorskip("pycocoevalcap.bleu.bleu")
    gts, res = _coco(tokenized)
    ref_corpus, ref_per = bleu_mod.Bleu(4).compute_score(gts, res, verbose=0)
    corpus, per = nlg.bleu(*tokenized, tokenized=True)
    assert corpus == ref_corpus  # bit-exact
    np.testing.assert_array_equal(per, np.array(ref_per).T)
    assert 0.05 < corpus[3] < 0.95


def test_cider_matches_pycocoevalcap_exactly(tokenized):
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    gts, res = _coco(tokenized)
    ref_corpus, ref_per = cider_mod.Cider().compute_score(gts, res)
    corpus, per = nlg.cider_d(*tokenized, tokenized=True)
    assert corpus == ref_corpus
    np.testing.assert_array_equal(per, ref_per)


def test_rouge_l_matches_pycocoevalcap_exactly(tokenized):
    rouge_mod = pytest.importorskip("pycocoevalcap.rouge.rouge")
    gts, res = _coco(tokenized)
    ref_corpus, ref_per = rouge_mod.Rouge().compute_score(gts, res)
    corpus, per = nlg.rouge_l(*tokenized, tokenized=True)
    assert corpus == ref_corpus
    np.testing.assert_array_equal(per, ref_per)


def test_rouge_l_beta1_matches_rouge_score(tokenized):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

    class Whitespace:
        def tokenize(self, text):
            return text.split()

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Whitespace())
    hyps, refs = tokenized
    firsts = [g[0] for g in refs]
    ref_scores = np.array([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, firsts)])
    _, per = nlg.rouge_l(hyps, firsts, beta=1.0, tokenized=True)
    np.testing.assert_array_equal(per, ref_scores)
    _, per_coco = nlg.rouge_l(hyps, firsts, tokenized=True)
    assert np.abs(per - per_coco).max() > 1e-3  # beta matters


def test_lcs_bit_parallel_matches_dynamic_programme():
    rng = random.Random(1)
    for _ in range(200):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        assert _lcs_length(a, b) == table[len(a)][len(b)]


# ------------------------------------------------------------------ METEOR
# Expected values below were produced by Java METEOR 1.5 (pycocoevalcap 1.2, OpenJDK 17), which
# tests/metrics/test_meteor_parity.py runs on ~400 pairs; these tests need only its data files.
def _meteor_data_or_skip():
    from medvl.metrics.nlg._meteor_data import meteor_dir

    try:
        meteor_dir()
    except nlg.MeteorDataError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("text, normalized", [  # Normalizer.normalizeLine(., en, true).toLowerCase()
    ("The heart isn't enlarged; the patient's lungs are clear.",
     "the heart isn 't enlarged ; the patient 's lungs are clear ."),
    ("Left-sided PICC, e.g. at 4:45 p.m. (1,000 ml)...", "left sided picc , eg at 4 : 45 pm ( 1,000 ml ) ..."),
    ("Dr. Smith saw U.S. films -- \u201cstable\u201d \u2013 no change",
     'dr. smith saw us films - " stable " - no change'),
    ("No. 5 tube; ___ x-ray", "no. 5 tube ; _ _ _ x ray"),
])
def test_meteor_normalizer(text, normalized):
    _meteor_data_or_skip()
    from medvl.metrics.nlg._meteor_data import resources
    from medvl.metrics.nlg._meteor_norm import normalize_line

    assert normalize_line(text, resources().prefixes).lower() == normalized


def test_java_string_semantics():
    from medvl.metrics.nlg._meteor_norm import java_hash, java_trim, tokenize

    assert java_hash("hello") == 99162322 and java_hash("") == 0
    assert java_hash("Aa") == java_hash("BB") == 2112  # METEOR compares words by these hash codes
    assert java_hash("pneumothorax" * 4) == java_hash("pneumothorax" * 4) < 2**31
    assert java_hash("\U0001d7d8") == 55349 * 31 + 57304  # UTF-16 code units
    assert java_trim("\x00 \tab\x1f ") == "ab" and java_trim("\u00a0a\u00a0") == "\u00a0a\u00a0"
    assert tokenize(" a\tb\x0bc\u00a0d \n") == ["a", "b\x0bc\u00a0d"]


def test_snowball_stems_match_the_meteor_jar():
    from medvl.metrics.nlg._stemmer import snowball_stem

    jar = {"realization": "realiz", "added": "ad", "anesthesiologist": "anesthesiologist", "irrationally": "irrat",
           "generalizations": "general", "atelectasis": "atelectasi", "atelectatic": "atelectat",
           "opacities": "opac", "opacification": "opacif", "effusions": "effus", "unchanged": "unchang",
           "dying": "die", "skis": "ski", "news": "news", "pneumothoraces": "pneumothorac"}
    assert {w: snowball_stem(w) for w in jar} == jar


_GOLDEN = [  # (hypothesis, references, Java METEOR 1.5 segment score); the modules each exercises
    ("no pleural effusion", ["no pleural effusion"], 1.0),  # identical: exact only
    ("effusions are decreasing", ["effusion is decreased"], 0.0),  # only 0.5-weighted single-word matches,
    # which the search counts as int(0.5) = 0, so the empty alignment (no chunk) wins
    ("little effusion at the left base", ["small effusion at the left base"], 0.9571428571428572),  # synonym
    ("the heart is big", ["the heart is large"], 0.9249999999999999),  # synonym
    ("there is no evidence of pneumonia", ["no evidence of pneumonia", "there is no pneumonia"], 0.5255759325753065),
    ("The heart isn't enlarged; the patient's lungs are clear.", ["Heart is not enlarged. Lungs are clear."],
     0.39607193592588513),  # raw text: normaliser, paraphrase
    ("Left-sided PICC terminates in the lower SVC.", ["left sided picc ends in the low svc"], 0.5636712349002918),
    ("", ["no acute cardiopulmonary process"], 0.0),
    ("the lungs are clear", ["clear lungs"], 0.38095238095238093),
    ("in comparison with the previous study there is little change",
     ["compared to the prior exam there is not much change"], 0.3443990357680283),  # paraphrases
    ("mild cardiomegaly is seen", ["the heart is slightly enlarged"], 0.03686635944700461),
    ("stable appearance of the chest", ["unchanged appearance of the chest"], 0.39657093094318585),
]
_GOLDEN_CORPUS = 0.383258637350709  # Java's EVAL over the twelve


def test_meteor_equals_java_meteor_1_5_on_golden_pairs():
    _meteor_data_or_skip()
    hyps, refs, expected = zip(*_GOLDEN)
    corpus, per = nlg.meteor(list(hyps), list(refs), tokenized=True)
    np.testing.assert_allclose(per, expected, rtol=0, atol=1e-12)
    assert corpus == pytest.approx(_GOLDEN_CORPUS, abs=1e-12)
    assert corpus != pytest.approx(per.mean(), abs=1e-3)  # pooled statistics, not the mean


def test_meteor_api():
    _meteor_data_or_skip()
    assert nlg.meteor(["No pleural effusion."], ["no pleural effusion"])[0] == 1.0  # PTB-tokenised by default
    with pytest.raises(TypeError, match="METEOR 1.5"):
        nlg.meteor(["a"], ["a"], alpha=0.9)
    with pytest.raises(AttributeError, match="removed"):
        nlg.porter_stem("lungs")
    corpus, per = nlg.meteor([], [])
    assert np.isnan(corpus) and per.shape == (0,)
    assert "METEOR 1.5" in nlg.METEOR_IMPLEMENTATION


def test_report_eval_records_the_meteor_implementation():
    from medvl.metrics.report_eval import _MAIN_KEYS, format_markdown

    result = {"n_samples": 1, "confidence": 0.95, "observations": [], "label_counts": {},
              "meteor_implementation": nlg.METEOR_IMPLEMENTATION,
              "metrics": {k: {"value": 0.5, "ci_low": None, "ci_high": None} for k in _MAIN_KEYS}}
    assert f"METEOR: {nlg.METEOR_IMPLEMENTATION}." in format_markdown(result).splitlines()


def test_meteor_data_missing(monkeypatch, tmp_path):
    from medvl.metrics.nlg import _meteor_data

    monkeypatch.setenv(_meteor_data.ENV_VAR, str(tmp_path))
    with pytest.raises(nlg.MeteorDataError, match="meteor-1.5.jar"):
        _meteor_data.meteor_dir()
    monkeypatch.delenv(_meteor_data.ENV_VAR)
    monkeypatch.setattr(_meteor_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(nlg.MeteorDataError, match="pip install pycocoevalcap"):
        _meteor_data.meteor_dir()


def test_meteor_bootstrap_matches_recomputation(tokenized):
    _meteor_data_or_skip()
    hyps, refs = tokenized[0][:40], tokenized[1][:40]
    prepared = nlg.Meteor(tokenized=True).prepare(hyps, refs)
    assert prepared.point == nlg.meteor(hyps, refs, tokenized=True)[0]
    counts = resample_counts(len(hyps), 3, seed=5)
    for b, value in enumerate(prepared(counts)):
        assert value == pytest.approx(nlg.meteor(*_materialise(counts[b], hyps, refs), tokenized=True)[0], abs=1e-12)


# ------------------------------------------------------------------ compute_nlg
def test_compute_nlg_keys_and_identity():
    refs = ["No pleural effusion or pneumothorax. Heart size is normal.", "Mild bibasilar atelectasis."]
    scores = nlg.compute_nlg(refs, refs)
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider"}
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6) and scores["rougeL"] == 1.0
    assert scores["meteor"] > 0.95
    worse = nlg.compute_nlg(["Large right pneumothorax.", "The heart is enlarged."], refs)
    assert all(worse[k] < scores[k] for k in scores)
    per = nlg.nlg_per_sample(refs, [[r, "unrelated text"] for r in refs])
    assert set(per) == set(scores) and all(v.shape == (2,) for v in per.values())
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        nlg.compute_nlg(refs, refs[:1])
    with pytest.raises(TypeError):
        nlg.compute_nlg("one string", ["one string"])


# ------------------------------------------------------------------ bootstrap paths
def _materialise(counts_row, hyps, refs):
    idx = np.repeat(np.arange(len(hyps)), counts_row)
    return [hyps[i] for i in idx], [refs[i] for i in idx]


def test_cider_resampler_matches_pycocoevalcap_on_resamples(tokenized):
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    hyps, refs = tokenized
    prepared = nlg.CiderD(tokenized=True).prepare(hyps, refs)
    assert prepared.point == nlg.cider_d(hyps, refs, tokenized=True)[0]
    counts = resample_counts(len(hyps), 2, seed=7)
    fast = prepared(counts)
    for b in range(2):
        h, r = _materialise(counts[b], hyps, refs)  # duplicates become distinct ids
        expected, _ = cider_mod.Cider().compute_score({i: g for i, g in enumerate(r)}, {i: [x] for i, x in enumerate(h)})
        assert fast[b] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert np.ptp(fast) > 0


def test_bleu_resampler_matches_exact(tokenized):
    hyps, refs = tokenized
    counts = resample_counts(len(hyps), 3, seed=3)
    prepared = nlg.Bleu(4, tokenized=True).prepare(hyps, refs)
    for b, value in enumerate(prepared(counts)):
        assert value == pytest.approx(nlg.bleu(*_materialise(counts[b], hyps, refs), tokenized=True)[0][3], rel=1e-12)


def test_fast_and_generic_bootstrap_agree(corpus):
    hyps, refs = corpus
    hyps, refs = hyps[:40], refs[:40]
    metric = nlg.Bleu(2)
    fast = bootstrap_ci(metric, hyps, refs, n_resamples=30, seed=1)
    slow = bootstrap_ci(lambda h, r: nlg.bleu(h, r, 2)[0][1], hyps, refs, n_resamples=30, seed=1)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    assert fast[1] < fast[0] < fast[2]


def test_bootstrap_1000_resamples_of_200_pairs_is_fast(corpus):
    hyps, refs = corpus[0][:200], corpus[1][:200]
    meteor = nlg.Meteor().prepare(hyps, refs)  # its alignment (~100 pairs/s) is not the bootstrap's cost
    for metric in (nlg.Bleu(4), nlg.RougeL(), nlg.CiderD(), meteor):
        start = time.perf_counter()
        if metric is meteor:
            point, low, high = bootstrap_many({"meteor": meteor}, len(hyps), n_resamples=1000, seed=0)["meteor"]
        else:
            point, low, high = bootstrap_ci(metric, hyps, refs, n_resamples=1000, seed=0)
        assert low <= point <= high and low < high, metric
        assert time.perf_counter() - start < 10.0, metric  # ~0.05-1 s each on one core


def test_bootstrap_ci_basics():
    stats = SummedStats.mean_of(np.array([0.0, 1.0, 1.0, 0.0]))
    assert stats.point == 0.5
    counts = resample_counts(4, 500, seed=2)
    assert counts.shape == (500, 4) and (counts.sum(1) == 4).all()
    np.testing.assert_array_equal(counts, resample_counts(4, 500, seed=2))
    values = stats(counts)
    np.testing.assert_allclose(values, counts[:, 1:3].sum(1) / 4)

    class Mean(CorpusMetric):
        def prepare(self, h, r):
            return SummedStats.mean_of(np.array([float(a == b) for a, b in zip(h, r)]))

    point, low, high = bootstrap_ci(Mean(), ["a", "b", "c", "d"] * 10, ["a", "x", "c", "y"] * 10, n_resamples=200)
    assert point == 0.5 and 0.3 < low < 0.5 < high < 0.7
    with pytest.raises(ValueError):
        bootstrap_ci(Mean(), ["a"], ["a", "b"])
