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


_CLOSED_Q: dict[str, list[str]] = {
    "cardiomegaly": ["Is the heart enlarged?", "Is there cardiomegaly?"],
    "pleural_effusion": ["Is there a pleural effusion?", "Is there fluid in the pleural space?"],
    "pneumothorax": ["Is there a pneumothorax?", "Is a pneumothorax present?"],
    "consolidation": ["Is there consolidation?", "Is there a focal airspace opacity?"],
    "nodule": ["Is there a nodule or mass?", "Is there a lung nodule?"],
    "support_device": ["Is a support device present?", "Are there any tubes or lines?"],
}


def make_vqa(
    labels: Mapping[str, int],
    laterality: Mapping[str, str],
    detail: Detail,
    view: str,
    rng: np.random.Generator,
) -> list[dict[str, str]]:
    """Draw 3-6 question-answer pairs grounded in the study's labels.

    Uncertain findings are never asked about in closed form, so every answer is
    definite.

    Returns:
        A list of ``{"question", "answer", "answer_type"}`` with ``answer_type`` in
        ``{"closed", "open"}``.
    """
    pool: list[dict[str, str]] = []
    for f in FINDINGS:
        if labels[f] != UNCERTAIN:
            answer = "yes" if labels[f] == POSITIVE else "no"
            pool.append({"question": _choice(rng, _CLOSED_Q[f]), "answer": answer, "answer_type": "closed"})
    positives = [f for f in FINDINGS if labels[f] == POSITIVE]
    names = {f: ("mass" if f == "nodule" and detail[f].get("mass") else f.replace("_", " ")) for f in positives}
    abnormal = [names[f] for f in positives if f != "support_device"]
    pool.append({
        "question": _choice(rng, ["What abnormality is seen?", "What is the main finding?"]),
        "answer": ", ".join(abnormal) if abnormal else "no finding",
        "answer_type": "open",
    })
    for f in positives:
        if f in laterality:
            pool.append({"question": f"Which side is the {names[f]} on?", "answer": laterality[f], "answer_type": "open"})
        if f == "pleural_effusion":
            pool.append({"question": "How large is the pleural effusion?", "answer": detail[f]["size_word"], "answer_type": "open"})
        if f in ("nodule", "consolidation") and laterality.get(f) != "bilateral":
            pool.append({"question": f"Where is the {names[f]}?", "answer": _words(f, detail[f])["lobe"], "answer_type": "open"})
        if f == "support_device":
            devs = ", ".join(_DEVICE_WORDS[k] for k in detail[f]["devices"])
            pool.append({"question": "Which support devices are present?", "answer": devs, "answer_type": "open"})
    pool.append({"question": "Is this an AP or PA view?", "answer": view, "answer_type": "closed"})
    k = int(rng.integers(3, 7))
    keep = sorted(rng.choice(len(pool), size=min(k, len(pool)), replace=False))
    return [pool[i] for i in keep]
