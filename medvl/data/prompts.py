"""Zero-shot prompt ensembles for chest radiograph findings.

Each finding has positive and negative phrasings written the way radiologists word
MIMIC-CXR-style reports (CheXzero-style positive/negative pairs, Tiu et al., 2022).
Positive ensembles enumerate laterality, lobe and size, because a report never says
"there is a nodule" without saying where: averaging over the usual locations gives a
location-free class embedding. Keys follow :data:`FINDINGS`.
"""

from __future__ import annotations

from medvl.data.labels import FINDINGS

_LOBES = [f"{side} {zone} lobe" for side in ("right", "left") for zone in ("upper", "lower")]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


CXR_PROMPTS: dict[str, dict[str, list[str]]] = {
    "cardiomegaly": {
        "positive": ["The cardiac silhouette is enlarged.", "Moderate cardiomegaly.", "The heart is enlarged."],
        "negative": ["Heart size is normal.", "No cardiomegaly.", "The cardiac silhouette is normal in size."],
    },
    "pleural_effusion": {
        "positive": [
            *(f"There is a {size} {side} pleural effusion." for size in ("small", "moderate", "large") for side in ("left", "right")),
            "There are moderate bilateral pleural effusions.",
        ],
        "negative": ["No pleural effusion.", "The costophrenic angles are sharp, no pleural effusion.", "There is no pleural effusion."],
    },
    "pneumothorax": {
        "positive": [f"There is a {size} {side} pneumothorax." for size in ("small", "moderate", "large") for side in ("left", "right")],
        "negative": ["No pneumothorax.", "There is no pneumothorax."],
    },
    "consolidation": {
        "positive": [
            *(f"Focal consolidation in the {lobe}." for lobe in _LOBES),
            *(f"Patchy airspace opacity in the {lobe}, concerning for pneumonia." for lobe in _LOBES),
            *(f"{_cap(lobe)} consolidation, concerning for pneumonia." for lobe in _LOBES),
        ],
        "negative": ["No focal consolidation.", "No focal airspace opacity or consolidation.", "There is no focal consolidation."],
    },
    "nodule": {
        "positive": [
            *(f"A 2.5 cm nodule in the {lobe}." for lobe in _LOBES),
            *(f"A 3.5 cm mass in the {lobe}." for lobe in _LOBES),
            *(f"{_cap(lobe)} nodule, recommend CT for further evaluation." for lobe in _LOBES),
        ],
        "negative": ["No pulmonary nodules or masses.", "No nodules.", "No suspicious nodule or mass."],
    },
    "support_device": {
        "positive": [
            "Endotracheal tube terminates 4 cm above the carina.",
            "Central venous line with the tip in the superior vena cava.",
            "Support devices in place.",
        ],
        "negative": ["No support devices.", "No lines or tubes.", "No tubes, lines or support devices."],
    },
}

assert tuple(CXR_PROMPTS) == FINDINGS, "prompt keys must follow FINDINGS order"
