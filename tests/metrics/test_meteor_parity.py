"""medvl's METEOR against the Java METEOR 1.5 that pycocoevalcap runs, on varied report text.

The corpus (``_parity_corpus``, ~400 pairs) mixes synthetic reports re-written from the
same findings (medvl.data.synth), perturbed copies (dropped, swapped and replaced words,
changed case, punctuation, hyphens, number formats, clitics, typographic quotes and
dashes, ``|||``), unrelated pairs, several references per sample, empty and identical
hypotheses, and MIMIC-style reports from the radlabels package's sample corpus when that
package is installed (its text files only). Half of the pairs are PTB-tokenised as
:func:`~medvl.metrics.nlg.compute_nlg` does, half are sent raw, so METEOR's own
normaliser sees upper case and punctuation. Java METEOR runs once on all pairs (about a
minute on a shared 2-core machine, most of it loading the paraphrase table), so the test
is marked slow and skips without ``java``.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from medvl.data._report_templates import write_report
from medvl.data.synth import sample_study
from medvl.metrics import nlg

_SYNONYMS = {"small": "minimal", "large": "sizable", "seen": "identified", "enlarged": "increased",
             "opacity": "opacification", "effusion": "fluid", "normal": "unremarkable", "tube": "catheter",
             "no": "without", "terminates": "ends", "heart": "cardiac", "lung": "pulmonary", "mild": "slight"}


def _rewrite(case: dict, seed: int) -> str:
    """The same study's findings written again with other template choices (a 'generated' report)."""
    return write_report(case["labels"], case["detail"], case["view"], np.random.default_rng(seed))["report"]


def _perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    out = []
    for w in words:
        r = rng.random()
        if r < 0.08:
            continue
        key = w.lower().strip(".,;:")
        if r < 0.2 and key in _SYNONYMS:
            w = w.lower().replace(key, _SYNONYMS[key])
        elif r < 0.25:
            w = w.upper()
        elif r < 0.28:
            w = w.rstrip(".,;") + rng.choice([",", ";", " -", "...", ":", "!"])
        elif r < 0.3 and "-" in w:
            w = w.replace("-", rng.choice([" ", "", "\u2013", "--"]))
        out.append(w)
    for _ in range(rng.randint(0, 3)):
        if len(out) > 2:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


_EDGE_PAIRS = [
    ("", ["No acute cardiopulmonary process."]),
    ("No acute cardiopulmonary process.", ["No acute cardiopulmonary process."]),
    ("The heart isn't enlarged; the patient's lungs are clear.", ["Heart is not enlarged. Lungs are clear."]),
    ("A 4.5 cm nodule, e.g. a granuloma... (stable)", ["4.5-cm nodule, likely granuloma; stable."]),
    ("Left-sided PICC and/or the patient's port: 1,000 ml at 4:45 p.m.", ["Left sided PICC; port 1000 mL 4:45 pm"]),
    ("\u201cTop-normal\u201d heart size \u2014 stable vs. prior \u2018study\u2019",
     ['"top normal" heart size - stable']),
    ("Dr. Smith discussed with Dr. Jones at 10 a.m. No. 5 tube.", ["Findings discussed with Dr. Smith at 10am."]),
    ("U.S. guided drainage; IJ line ||| in SVC", ["US-guided drainage. IJ line in the SVC."]),
    ("NO PNEUMOTHORAX.  NO   EFFUSION.\tSTABLE.", ["no pneumothorax or effusion, stable"]),
    ("Effusions have decreased; opacities are decreasing; atelectatic changes",
     ["Decreased effusion, decreasing opacity, atelectasis"]),
    ("Cardiomediastinal silhouette unchanged ___ compared to ___", ["The cardiomediastinal silhouette is unchanged."]),
    ("!!! ??? ... ---", ["..."]),
    ("There is no evidence of pneumonia", ["No evidence of pneumonia.", "There is no pneumonia.", "Pneumonia absent."]),
    ("moderate bilateral pleural effusions with adjacent atelectasis",
     ["Moderate bilateral effusions and adjacent basilar atelectasis.", "Bilateral moderate pleural effusions."]),
]


def _radlabels_reports(limit: int) -> list[str]:
    """Report texts of radlabels' bundled sample corpus (data files only; the package is not imported)."""
    spec = importlib.util.find_spec("radlabels")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "samples" / "synthetic_reports"
    return [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))[:limit]]


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")  # pycocoevalcap's protocol is one line per segment


def _parity_corpus(seed: int = 0) -> tuple[list[str], list[list[str]], dict[str, int]]:
    """(hypotheses, reference groups, counts by kind) as sent to Java METEOR and to medvl."""
    rng = random.Random(seed)
    hyps: list[str] = []
    refs: list[list[str]] = []
    kinds: dict[str, int] = {}

    def add(kind: str, hyp: str, group: list[str]) -> None:
        hyps.append(_one_line(hyp))
        refs.append([_one_line(r) for r in group])
        kinds[kind] = kinds.get(kind, 0) + 1

    cases = [sample_study(seed, i) for i in range(220)]
    for i, case in enumerate(cases[:130]):
        group = [case["report"]] + [_rewrite(case, 1000 + i)] * (i % 4 == 0)
        add("synthetic rewrite", _rewrite(case, 5000 + i), group)
    for case in cases[130:200]:
        add("synthetic perturbed", _perturb(case["report"], rng), [case["report"]])
    for a, b in zip(cases[200:210], cases[210:220]):
        add("synthetic unrelated", a["report"], [b["report"]])
    for hyp, group in _EDGE_PAIRS:
        add("edge case", hyp, group)
    real = _radlabels_reports(160)
    for i, text in enumerate(real):
        sentences = [s for s in text.replace("\n", " ").split(". ") if s.strip()]
        if i % 5 == 4:
            add("radlabels unrelated", real[(i + 7) % len(real)], [text])
        elif i % 2:
            kept = [s for s in sentences if rng.random() > 0.25] or sentences[:1]
            add("radlabels sentences dropped/shuffled", ". ".join(rng.sample(kept, len(kept))), [text])
        else:
            add("radlabels perturbed", _perturb(text, rng), [text, _perturb(text, rng)] if i % 4 == 0 else [text])
    if not real:  # without radlabels, more synthetic pairs keep the corpus at a few hundred
        for i, case in enumerate(cases[:120]):
            add("synthetic rewrite perturbed", _perturb(_rewrite(case, 9000 + i), rng), [case["report"]])
    # half of the pairs go through the COCO tokenisation, as compute_nlg sends them
    for i in range(0, len(hyps), 2):
        hyps[i] = nlg.ptb_tokenize(hyps[i])
        refs[i] = [nlg.ptb_tokenize(r) for r in refs[i]]
    return hyps, refs, kinds


def _java_meteor(hyps: list[str], refs: list[list[str]]) -> tuple[float, np.ndarray]:
    if shutil.which("java") is None:
        pytest.skip("no `java` on PATH: Java METEOR 1.5 (pycocoevalcap) cannot run")
    meteor_mod = pytest.importorskip("pycocoevalcap.meteor.meteor", reason="pycocoevalcap is not installed")
    java = meteor_mod.Meteor()
    try:
        corpus, segments = java.compute_score({i: g for i, g in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    finally:
        java.meteor_p.kill()
    return float(corpus), np.asarray(segments, dtype=np.float64)


@pytest.fixture(scope="module")
def parity():
    pytest.importorskip("pycocoevalcap", reason="pycocoevalcap (METEOR 1.5's data) is not installed")
    hyps, refs, kinds = _parity_corpus()
    java_corpus, java_seg = _java_meteor(hyps, refs)
    nlg.meteor(hyps[:2], refs[:2], tokenized=True)  # load the data once, outside the timing
    wall, cpu = time.perf_counter(), time.process_time()
    ours_corpus, ours_seg = nlg.meteor(hyps, refs, tokenized=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"hyps": hyps, "refs": refs, "kinds": kinds, "java": (java_corpus, java_seg),
            "ours": (ours_corpus, ours_seg), "wall": wall, "cpu": cpu}


@pytest.mark.slow
def test_meteor_matches_java_meteor_1_5(parity):
    hyps, refs = parity["hyps"], parity["refs"]
    java_corpus, java_seg = parity["java"]
    ours_corpus, ours_seg = parity["ours"]
    diff = np.abs(ours_seg - java_seg)
    print(f"\nMETEOR parity on {len(hyps)} pairs ({parity['kinds']}): corpus medvl {ours_corpus:.6f} Java "
          f"{java_corpus:.6f} (|diff| {abs(ours_corpus - java_corpus):.2e}); segments within 0.01: "
          f"{np.mean(diff <= 0.01):.4f}, equal to 1e-12: {np.mean(diff <= 1e-12):.4f}, max |diff| {diff.max():.2e}; "
          f"medvl {len(hyps) / parity['cpu']:.0f} pairs per CPU-second ({len(hyps) / parity['wall']:.0f}/s wall, "
          f"{sum(map(len, refs))} alignments) after loading")
    assert len(hyps) >= 300 and len(set(hyps)) > 250
    assert 0.05 < java_corpus < 0.9 and java_seg.min() == 0.0 and java_seg.max() == 1.0  # a spread of scores
    assert abs(ours_corpus - java_corpus) <= 0.005
    assert np.mean(diff <= 0.01) >= 0.95
    assert ours_corpus != pytest.approx(ours_seg.mean(), abs=1e-3)  # pooled statistics, not a mean
