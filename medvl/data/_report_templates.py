"""Report and VQA text for the synthetic dataset.

Turns a study's labels and finding details into a two-section radiology report
(FINDINGS / IMPRESSION) with varied phrasing, explicit negations of a random subset
of absent findings, hedged wording for uncertain labels and laterality, and into
closed (yes/no, choice) and open question-answer pairs. Wording follows the style of
MIMIC-CXR reports (Johnson et al., 2019) so that CheXpert-style labelers and
zero-shot prompts such as "no pleural effusion" behave sensibly on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medvl.data.labels import FINDINGS, NEGATIVE, POSITIVE, UNCERTAIN

Detail = Mapping[str, Mapping[str, Any]]

_POS: dict[str, list[str]] = {
    "cardiomegaly": [
        "The cardiac silhouette is enlarged.",
        "{Severity} cardiomegaly.",
        "The heart is enlarged.",
        "There is {severity} cardiomegaly.",
        "Enlarged heart, consistent with cardiomegaly.",
    ],
    "pleural_effusion": [
        "There is a {size} {side} pleural effusion.",
        "{Size} {side} pleural effusion with blunting of the costophrenic angle.",
        "Blunting of the {side} costophrenic angle consistent with a {size} pleural effusion.",
        "A {size} {side} pleural effusion is present.",
    ],
    "pleural_effusion_bilateral": [
        "{Size} bilateral pleural effusions.",
        "There are {size} bilateral pleural effusions.",
        "Bilateral pleural effusions, {size}.",
    ],
    "pneumothorax": [
        "There is a {size} {side} pneumothorax.",
        "{Size} {side} apical pneumothorax.",
        "A {size} {side} pneumothorax is present, with a visible visceral pleural line.",
        "{Side} pneumothorax, {size} in size.",
    ],
    "consolidation": [
        "Patchy airspace opacity in the {lobe}, concerning for pneumonia.",
        "Focal consolidation in the {lobe}.",
        "There is {lobe} consolidation.",
        "Airspace opacity in the {lobe} may represent pneumonia.",
    ],
    "consolidation_bilateral": [
        "Bilateral {zone} lobe consolidation.",
        "Patchy airspace opacities in both {zone} lobes, concerning for multifocal pneumonia.",
    ],
    "nodule": [
        "A {cm} cm nodule in the {lobe}.",
        "There is a {cm} cm pulmonary nodule in the {lobe}.",
        "{Lobe} nodule measuring {cm} cm.",
    ],
    "nodule_mass": [
        "A {cm} cm mass in the {lobe}.",
        "Large {lobe} mass measuring {cm} cm.",
        "There is a {cm} cm mass in the {lobe}, concerning for malignancy.",
    ],
    "nodule_multiple": [
        "Multiple nodules in the {side} lung, the largest measuring {cm} cm in the {lobe}.",
        "Several pulmonary nodules in the {side} lung, up to {cm} cm.",
    ],
}

_UNCERTAIN: dict[str, list[str]] = {
    "cardiomegaly": [
        "Heart size is borderline, possible mild cardiomegaly.",
        "The cardiac silhouette is top normal to mildly enlarged.",
        "Possible mild enlargement of the heart.",
    ],
    "pleural_effusion": [
        "Possible small {side} pleural effusion.",
        "Minimal blunting of the {side} costophrenic angle, cannot exclude a small pleural effusion.",
        "Questionable trace {side} pleural effusion.",
    ],
    "pneumothorax": [
        "Cannot exclude a small {side} apical pneumothorax.",
        "Possible tiny {side} apical pneumothorax.",
        "Equivocal thin {side} apical lucency, possibly a small pneumothorax.",
    ],
    "consolidation": [
        "Subtle opacity in the {lobe}, atelectasis versus early consolidation.",
        "Possible faint opacity in the {lobe}.",
        "Hazy {lobe} opacity, cannot exclude early pneumonia.",
    ],
    "nodule": [
        "Possible small nodular opacity in the {lobe}.",
        "Questionable {lobe} nodule, consider CT for further evaluation.",
        "A possible nodule in the {lobe} may represent a nipple shadow.",
    ],
}

_NEG: dict[str, list[str]] = {
    "cardiomegaly": [
        "Heart size is normal.",
        "Heart size is within normal limits.",
        "The cardiac silhouette is normal in size.",
        "No cardiomegaly.",
        "Normal heart size.",
    ],
    "pleural_effusion": [
        "No pleural effusion.",
        "No pleural effusion is seen.",
        "The costophrenic angles are sharp, no pleural effusion.",
        "There is no pleural effusion.",
    ],
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."],
    "consolidation": [
        "No focal consolidation.",
        "No focal airspace opacity or consolidation.",
        "There is no focal consolidation.",
    ],
    "nodule": ["No nodules.", "No pulmonary nodules or masses.", "No suspicious nodule or mass."],
    "support_device": ["No support devices.", "No lines or tubes.", "No tubes, lines or support devices."],
}

_NEG_PAIR = ["No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax."]

_DEVICES: dict[str, list[str]] = {
    "ett": [
        "Endotracheal tube terminates {ett_cm} cm above the carina.",
        "An endotracheal tube is in place with the tip {ett_cm} cm above the carina.",
    ],
    "ng_tube": ["Enteric tube courses below the diaphragm.", "A nasogastric tube terminates in the stomach."],
    "central_line": [
        "Central venous line with the tip in the superior vena cava.",
        "A central line terminates in the SVC.",
    ],
    "pacemaker": [
        "Left chest wall pacemaker with a lead in the right ventricle.",
        "A cardiac pacemaker device is present.",
    ],
    "ecg_leads": ["External ECG leads overlie the chest.", "Monitoring leads overlie the chest."],
}

_DEVICE_WORDS = {
    "ett": "endotracheal tube",
    "ng_tube": "enteric tube",
    "central_line": "central line",
    "pacemaker": "pacemaker",
    "ecg_leads": "ECG leads",
}

_NORMAL_IMPRESSION = [
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No acute intrathoracic abnormality.",
]

_FILLER = [
    "The mediastinal contours are normal.",
    "No acute osseous abnormality.",
    "The visualized osseous structures are intact.",
    "Hilar contours are unremarkable.",
]


def _choice(rng: np.random.Generator, options: list[str]) -> str:
    """Pick one template."""
    return options[int(rng.integers(len(options)))]


def _fill(template: str, **words: str) -> str:
    """Format a template with lower-case words and their Capitalised ``{Key}`` forms."""
    caps = {k[:1].upper() + k[1:]: v[:1].upper() + v[1:] for k, v in words.items()}
    return template.format(**words, **caps)


def lobe(side: str, zone: str) -> str:
    """Lobe phrase such as ``"right upper lobe"``."""
    return f"{side} {zone} lobe"


def _words(name: str, d: Mapping[str, Any]) -> dict[str, str]:
    """Template words for one finding's detail."""
    w: dict[str, str] = {}
    if "severity" in d:
        w["severity"] = d["severity"]
    if "size_word" in d:
        w["size"] = d["size_word"]
    sides = list(d.get("sides") or ([d["side"]] if "side" in d else []))
    side = "bilateral" if len(sides) == 2 else (sides[0] if sides else "")
    w["side"] = side
    if "zone" in d:
        w["zone"] = d["zone"]
        w["lobe"] = lobe(side, d["zone"]) if side != "bilateral" else f"bilateral {d['zone']} lobes"
    if "cm" in d:
        w["cm"] = f"{d['cm']:.1f}"
    return w


def _mention(name: str, label: int, d: Mapping[str, Any], rng: np.random.Generator) -> str:
    """One sentence for a positive, uncertain or negative finding."""
    if label == NEGATIVE:
        return _choice(rng, _NEG[name])
    if name == "support_device":
        return " ".join(_fill(_choice(rng, _DEVICES[dev]), ett_cm=str(d.get("ett_cm", 4))) for dev in d["devices"])
    w = _words(name, d)
    if label == UNCERTAIN:
        return _fill(_choice(rng, _UNCERTAIN[name]), **w)
    key = name
    if w.get("side") == "bilateral" and f"{name}_bilateral" in _POS:
        key = f"{name}_bilateral"
    elif name == "nodule" and d.get("count", 1) > 1:
        key = "nodule_multiple"
    elif name == "nodule" and d.get("mass"):
        key = "nodule_mass"
    return _fill(_choice(rng, _POS[key]), **w)


def _impression_item(name: str, label: int, d: Mapping[str, Any]) -> str:
    """Short impression phrase for a positive or uncertain finding."""
    w = _words(name, d)
    hedge = "Possible " if label == UNCERTAIN else ""
    if name == "cardiomegaly":
        text = "cardiomegaly." if hedge else f"{w['severity']} cardiomegaly."
    elif name == "pleural_effusion":
        text = f"{w.get('size', 'small')} {w['side']} pleural effusion{'s' if w['side'] == 'bilateral' else ''}."
    elif name == "pneumothorax":
        text = f"{w.get('size', 'small')} {w['side']} pneumothorax."
    elif name == "consolidation":
        text = f"{w['lobe']} consolidation{'' if hedge else ', concerning for pneumonia'}."
    elif name == "nodule":
        kind = "mass" if d.get("mass") else ("nodules" if d.get("count", 1) > 1 else "nodule")
        text = f"{w['lobe']} {kind}, recommend CT for further evaluation."
    else:
        devs = ", ".join(_DEVICE_WORDS[k] for k in d["devices"])
        text = f"support devices in place ({devs})."
    text = hedge + text if hedge else text
    return text[:1].upper() + text[1:]


def write_report(
    labels: Mapping[str, int], detail: Detail, view: str, rng: np.random.Generator
) -> dict[str, str]:
    """Write the FINDINGS and IMPRESSION sections for one study.

    Args:
        labels: Finding -> 1 / 0 / -1 for every name in ``FINDINGS``.
        detail: Finding -> details (side(s), size words, lobe zone, cm, devices) for
            positive and uncertain findings.
        view: ``"PA"`` or ``"AP"``.
        rng: Generator choosing templates, order and which negatives to mention.

    Returns:
        ``{"findings", "impression", "report"}`` where ``report`` is
        ``"FINDINGS: ...\\n\\nIMPRESSION: ..."``.
    """
    present = [f for f in FINDINGS if labels[f] != NEGATIVE]
    tagged = [(f, _mention(f, labels[f], detail[f], rng)) for f in present]
    negatives = [f for f in FINDINGS if labels[f] == NEGATIVE and rng.random() < 0.6]
    if "pleural_effusion" in negatives and "pneumothorax" in negatives and rng.random() < 0.5:
        negatives = [f for f in negatives if f not in ("pleural_effusion", "pneumothorax")]
        tagged.append(("pair", _choice(rng, _NEG_PAIR)))
    tagged += [(f, _mention(f, NEGATIVE, {}, rng)) for f in negatives]
    if rng.random() < 0.3:
        tagged.append(("filler", _choice(rng, _FILLER)))
    tagged = [tagged[i] for i in rng.permutation(len(tagged))]
    if labels["support_device"] == POSITIVE and rng.random() < 0.6:  # lines and tubes first
        tagged.sort(key=lambda t: t[0] != "support_device")
    sentences = [text for _, text in tagged]
    if view == "AP" and rng.random() < 0.5:
        sentences.insert(0, _choice(rng, ["Portable AP view of the chest.", "Single portable AP chest radiograph."]))
    elif view == "PA" and rng.random() < 0.3:
        sentences.insert(0, "PA view of the chest.")
    findings = " ".join(sentences) if sentences else "The lungs are clear."

    if present and any(labels[f] != NEGATIVE for f in present if f != "support_device"):
        items = [_impression_item(f, labels[f], detail[f]) for f in present]
        impression = " ".join(items)
    elif present:  # support devices only
        impression = _impression_item("support_device", POSITIVE, detail["support_device"])
        impression += " " + _choice(rng, _NORMAL_IMPRESSION)
    else:
        impression = _choice(rng, _NORMAL_IMPRESSION)
    return {
        "findings": findings,
        "impression": impression,
        "report": f"FINDINGS: {findings}\n\nIMPRESSION: {impression}",
    }


# ----------------------------------------------------------------------------- VQA
# Two phrasings per question where natural. ``{be}`` is "Is"/"Are" for the noun.
_PRESENCE_Q: dict[str, list[str]] = {
    "cardiomegaly": ["Is the heart enlarged?", "Is there cardiomegaly?"],
    "pleural_effusion": ["Is there a pleural effusion?", "Is there fluid in the pleural space?"],
    "pneumothorax": ["Is there a pneumothorax?", "Is a pneumothorax present?"],
    "consolidation": ["Is there consolidation?", "Is there a focal airspace opacity?"],
    "nodule": ["Is there a nodule or mass?", "Is there a lung nodule?"],
    "support_device": ["Is a support device present?", "Are there any tubes or lines?"],
}
_SIDE_YN_Q = ["{be} the {noun} on the {side} side?", "{be} the {noun} in the {side} hemithorax?"]
_BILATERAL_Q = ["{be} the {noun} bilateral?", "Does the {noun} involve both sides?"]
_ONE_SIDED_Q = ["{be} the {noun} unilateral?", "{be} the {noun} confined to one side?"]
_SIDE_CHOICE_Q = ["{be} the {noun} on the left or the right side?", "{be} the {noun} in the left or right hemithorax?"]
_ABNORMALITY_Q = ["What abnormality is seen?", "What is the main finding?"]
_SIDE_Q = ["Which side {be} the {noun} on?", "On which side {be} the {noun}?"]
_LOCATION_Q = ["Where {be} the {noun}?", "In which lobe {be} the {noun}?"]
_DEVICE_Q = ["What support device is present?", "Which support device is seen?"]
_DEVICE_COUNT_Q = ["How many support devices are present?", "How many support devices are seen?"]
_NODULE_COUNT_Q = ["How many nodules are there?", "How many nodules or masses are seen?"]
_EFFUSION_SIZE_Q = ["How large {be} the pleural {noun}?", "What is the size of the pleural {noun}?"]

_CAN_BE_BILATERAL = ("pleural_effusion", "consolidation")  # as drawn by _sample_detail

VQA_KINDS: dict[str, str] = {
    "presence": "closed",
    "laterality_yes_no": "closed",
    "side_choice": "closed",
    "abnormality": "open",
    "side": "open",
    "location": "open",
    "effusion_size": "open",
    "nodule_count": "open",
    "device": "open",
    "device_count": "open",
}
"""Question kind -> answer type; each pair carries its kind as ``kind`` and ``question_type``."""


def _noun(name: str, d: Mapping[str, Any]) -> tuple[str, str]:
    """What a question calls a finding, and its verb: ``("nodules", "are")``."""
    if name == "nodule" and d.get("count", 1) > 1:
        return "nodules", "are"
    if name == "nodule" and d.get("mass"):
        return "mass", "is"
    return name.replace("_", " "), "is"


def _ask(rng: np.random.Generator, options: list[str], **words: str) -> str:
    """Pick a phrasing, fill it and capitalise the first letter."""
    text = _choice(rng, options).format(**words)
    return text[:1].upper() + text[1:]


def _qa(kind: str, question: str, answer: str) -> dict[str, str]:
    """One pair; ``question_type`` repeats ``kind`` so VQA metrics can group by it."""
    return {"question": question, "answer": answer, "answer_type": VQA_KINDS[kind],
            "kind": kind, "question_type": kind}


def _laterality_yes_no(name: str, side: str, d: Mapping[str, Any], rng: np.random.Generator) -> dict[str, str]:
    """A yes/no side question whose answer is yes or no with equal chance.

    The answer is drawn first, then a question with that answer: for a one-sided
    finding "on the <true side>?" / "confined to one side?" (yes) or "on the
    <opposite side>?" / "bilateral?" (no); for a bilateral one "bilateral?" /
    "on the <either> side?" (yes, it is on both) or "confined to one side?" (no).
    Findings that are never drawn bilateral get side questions only.
    """
    noun, be = _noun(name, d)
    yes = bool(rng.random() < 0.5)
    other = {"left": "right", "right": "left"}
    if side == "bilateral":
        form = _choice(rng, ["bilateral", "side"]) if yes else "one_sided"
        ask_side = _choice(rng, ["left", "right"]) if form == "side" else ""
    else:
        forms = ["side"] + (["one_sided" if yes else "bilateral"] if name in _CAN_BE_BILATERAL else [])
        form = _choice(rng, forms)
        ask_side = side if yes else other[side]
    options = {"side": _SIDE_YN_Q, "bilateral": _BILATERAL_Q, "one_sided": _ONE_SIDED_Q}[form]
    return _qa("laterality_yes_no", _ask(rng, options, be=be, noun=noun, side=ask_side), "yes" if yes else "no")


def _closed_pool(
    labels: Mapping[str, int], laterality: Mapping[str, str], detail: Detail, rng: np.random.Generator
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Closed pairs to draw from, and negative presence pairs held in reserve.

    Presence is asked of every positive finding and of as many negative ones (at
    least one), drawn at random, so "yes" and "no" are equally likely within a
    study; the other negatives wait in the reserve, in random order, for studies
    whose pool is too small. Uncertain findings are never asked.
    """
    presence = {f: _qa("presence", _ask(rng, _PRESENCE_Q[f]), "yes" if labels[f] == POSITIVE else "no")
                for f in FINDINGS if labels[f] != UNCERTAIN}
    positive = [f for f in FINDINGS if labels[f] == POSITIVE]
    negative = [f for f in FINDINGS if labels[f] == NEGATIVE]
    order = [negative[int(i)] for i in rng.permutation(len(negative))]
    m = max(1, len(positive))
    pool = [presence[f] for f in FINDINGS if f in positive or f in order[:m]]
    pool += [_laterality_yes_no(f, laterality[f], detail[f], rng) for f in positive if f in laterality]
    one_sided = [f for f in positive if laterality.get(f) in ("left", "right")]
    if one_sided:  # a choice between two answers: annotated closed, though not yes/no
        f = one_sided[int(rng.integers(len(one_sided)))]
        noun, be = _noun(f, detail[f])
        pool.append(_qa("side_choice", _ask(rng, _SIDE_CHOICE_Q, be=be, noun=noun), laterality[f]))
    return pool, [presence[f] for f in order[m:]]


_MIN_PAIRS = 2
"""Every study has at least this many pairs; the negative presence questions in reserve top it up."""

_ASK_NORMAL = 0.25
"""Chance that a study without abnormal findings (or devices) is asked what it shows (or how many devices):
asked every time, "no finding" and "0" would be most of the open answers (38% of studies are normal)."""


def _open_pool(labels: Mapping[str, int], laterality: Mapping[str, str], detail: Detail,
               rng: np.random.Generator) -> list[dict[str, str]]:
    """Open pairs: the abnormality, devices, and the side, lobe, size and count of positive findings."""
    pool = []
    abnormal = [f for f in FINDINGS if f != "support_device" and labels[f] != NEGATIVE]
    if not abnormal:
        if rng.random() < _ASK_NORMAL:
            pool.append(_qa("abnormality", _ask(rng, _ABNORMALITY_Q), "no finding"))
    elif len(abnormal) == 1 and labels[abnormal[0]] == POSITIVE:
        pool.append(_qa("abnormality", _ask(rng, _ABNORMALITY_Q), _noun(abnormal[0], detail[abnormal[0]])[0]))
    for f in FINDINGS:
        if labels[f] != POSITIVE:
            continue
        d = detail[f]
        noun, be = _noun(f, d)
        if f in laterality:
            pool.append(_qa("side", _ask(rng, _SIDE_Q, be=be, noun=noun), laterality[f]))
        if f in ("nodule", "consolidation") and laterality[f] != "bilateral":
            pool.append(_qa("location", _ask(rng, _LOCATION_Q, be=be, noun=noun), lobe(laterality[f], d["zone"])))
        if f == "pleural_effusion":
            two = laterality[f] == "bilateral"
            q = _ask(rng, _EFFUSION_SIZE_Q, be="are" if two else "is", noun="effusions" if two else "effusion")
            pool.append(_qa("effusion_size", q, d["size_word"]))
        if f == "nodule":
            pool.append(_qa("nodule_count", _ask(rng, _NODULE_COUNT_Q), str(d["count"])))
    devices = detail["support_device"]["devices"] if labels["support_device"] == POSITIVE else []
    if len(devices) == 1:
        pool.append(_qa("device", _ask(rng, _DEVICE_Q), _DEVICE_WORDS[devices[0]]))
    elif devices or rng.random() < _ASK_NORMAL:  # several, or (sometimes) none: count them
        pool.append(_qa("device_count", _ask(rng, _DEVICE_COUNT_Q), str(len(devices))))
    return pool


def make_vqa(
    labels: Mapping[str, int],
    laterality: Mapping[str, str],
    detail: Detail,
    rng: np.random.Generator,
) -> list[dict[str, str]]:
    """Draw 2-6 question-answer pairs, each answerable from what the phantom draws.

    The pool holds closed questions -- presence per definite finding (uncertain
    findings are never asked), a yes/no laterality question per positive
    lateralised finding (yes and no equally likely, see :func:`_laterality_yes_no`)
    and "Is the <finding> on the left or the right side?" for a one-sided finding
    (annotated closed though its answer is not yes/no, so the ``answer_type`` and ``yes_no`` closed rules of
    :func:`medvl.metrics.vqa.is_closed` disagree on it, as on VQA-RAD) -- and open
    ones: the abnormality (with exactly one definite abnormal finding, support
    devices aside, or, a quarter of the time, with none: "no finding"), the side and
    the lobe of positive findings, the effusion's size, the number of nodules as
    drawn, the device when there is exactly one and the number of devices when there
    are several (or, a quarter of the time, none: "0"). Counts are stored as digits
    ("2"), which :func:`medvl.metrics.vqa.normalize_answer` leaves as they are, so raw
    and normalised answers agree. Of the ``k`` pairs (3-6, uniform) ``ceil(k / 2)``
    are open when the study has that many, and closed questions fill the rest; a
    study with too few questions keeps fewer pairs (at least two: normal studies are
    asked little), so that "no" and "no finding" do not swamp the answers. All choices
    use ``rng``.

    Measured on 2,000 studies (seed 0): 6,550 pairs, 3.3 per study, 56% closed.
    Shares are of all pairs; answers in percent of the kind's pairs:

    ===================  ======  =====  ===================================================
    kind                 type    share  answers
    ===================  ======  =====  ===================================================
    presence             closed  46.3%  no 71, yes 29
    laterality_yes_no    closed   5.6%  yes 52, no 48
    side_choice          closed   4.5%  left 50, right 50
    side                 open    11.5%  left 47, right 41, bilateral 12
    abnormality          open    10.2%  no finding 37, cardiomegaly 19, consolidation 12,
                                        pleural effusion 12, pneumothorax 11, mass 4,
                                        nodule 2, nodules 2
    device_count         open     8.6%  0 56, 2 22, 3 15, 4 6, 5 1
    location             open     4.7%  left lower lobe 32, right lower lobe 28,
                                        left upper lobe 23, right upper lobe 18
    effusion_size        open     3.8%  small 44, moderate 38, large 17
    device               open     3.0%  ECG leads 35, central line 29, endotracheal tube 20,
                                        pacemaker 16
    nodule_count         open     1.8%  1 83, 2 11, 3 7
    ===================  ======  =====  ===================================================

    Answering every question with its kind's most common answer scores 0.68 on the
    closed and 0.45 on the open questions: the floor a model must clear.

    Args:
        labels: Finding -> 1 / 0 / -1 for every name in ``FINDINGS``.
        laterality: Finding -> ``"left"`` / ``"right"`` / ``"bilateral"`` for the
            lateralised positive and uncertain findings.
        detail: Finding -> details, as for :func:`write_report`.
        rng: Generator choosing phrasings, sides asked and the pairs kept.

    Returns:
        A list of ``{"question", "answer", "answer_type", "kind", "question_type"}``
        with ``answer_type`` in ``{"closed", "open"}`` and ``kind`` (= ``question_type``)
        a key of :data:`VQA_KINDS`; closed pairs first, each part in pool order.
    """
    closed, reserve = _closed_pool(labels, laterality, detail, rng)
    opened = _open_pool(labels, laterality, detail, rng)
    k = int(rng.integers(3, 7))
    n_open = min(len(opened), (k + 1) // 2)
    closed += reserve[:max(0, _MIN_PAIRS - n_open - len(closed))]  # more "no" only to reach the minimum
    n_closed = min(len(closed), k - n_open)
    n_open = min(len(opened), k - n_closed)
    keep_open = sorted(int(i) for i in rng.choice(len(opened), size=n_open, replace=False))
    keep_closed = sorted(int(i) for i in rng.choice(len(closed), size=n_closed, replace=False))
    return [closed[i] for i in keep_closed] + [opened[i] for i in keep_open]
