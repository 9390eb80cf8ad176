"""Zero-shot prompt ensembles for chest radiograph findings.

Each finding has positive and negative phrasings written the way radiologists word
MIMIC-CXR-style reports (CheXzero-style positive/negative pairs, Tiu et al., 2022).
Positive ensembles enumerate laterality, lobe and size, because a report never says
"there is a nodule" without saying where: averaging over the usual locations gives a
location-free class embedding. Keys are label names: the synthetic :data:`FINDINGS`
first, then the rest of the 14 :data:`CHEXPERT_LABELS` (Irvin et al., AAAI 2019), so a
task picks the entries for its data's ``label_names`` with :func:`prompts_for`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medvl.data.labels import CHEXPERT_LABELS, FINDINGS

__all__ = ["CXR_PROMPTS", "prompts_for"]

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
    # -- the other CheXpert observations ------------------------------------------------
    "no_finding": {
        "positive": [
            "No acute cardiopulmonary process.",
            "The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax.",
            "Normal chest radiograph.",
            "No acute cardiopulmonary abnormality.",
        ],
        "negative": [
            "Moderate cardiomegaly with pulmonary edema.",
            *(f"Focal consolidation in the {lobe}." for lobe in _LOBES[:2]),
            "There is a moderate right pleural effusion.",
            "There is a small left pneumothorax.",
            "Endotracheal tube terminates 4 cm above the carina.",
        ],
    },
    "enlarged_cardiomediastinum": {
        "positive": [
            "The cardiomediastinal silhouette is enlarged.",
            "The mediastinum is widened.",
            "Widening of the superior mediastinum.",
            "Enlarged cardiomediastinal contour.",
        ],
        "negative": [
            "The cardiomediastinal silhouette is normal.",
            "Normal mediastinal contours.",
            "The mediastinum is not widened.",
        ],
    },
    "lung_opacity": {
        "positive": [
            *(f"Opacity in the {lobe}." for lobe in _LOBES),
            "Bilateral patchy airspace opacities.",
            "Diffuse interstitial opacities.",
            *(f"Hazy opacity at the {side} lung base." for side in ("right", "left")),
        ],
        "negative": ["The lungs are clear.", "No focal opacity.", "No airspace opacity."],
    },
    "lung_lesion": {
        "positive": [
            *(f"A 2.5 cm nodule in the {lobe}." for lobe in _LOBES),
            *(f"A 3.5 cm mass in the {lobe}." for lobe in _LOBES),
            *(f"{_cap(lobe)} lesion, recommend CT for further evaluation." for lobe in _LOBES),
        ],
        "negative": ["No pulmonary nodules or masses.", "No lung lesion.", "No suspicious nodule or mass."],
    },
    "edema": {
        "positive": [
            "Mild pulmonary edema.",
            "Moderate pulmonary edema.",
            "Interstitial edema with vascular congestion.",
            "Bilateral perihilar opacities consistent with pulmonary edema.",
        ],
        "negative": ["No pulmonary edema.", "No vascular congestion or edema.", "There is no pulmonary edema."],
    },
    "pneumonia": {
        "positive": [
            *(f"{_cap(lobe)} opacity concerning for pneumonia." for lobe in _LOBES),
            *(f"Findings consistent with {lobe} pneumonia." for lobe in _LOBES),
            "Multifocal pneumonia.",
        ],
        "negative": ["No evidence of pneumonia.", "No focal consolidation to suggest pneumonia.", "No pneumonia."],
    },
    "atelectasis": {
        "positive": [
            "Right basilar atelectasis.",
            "Left basilar atelectasis.",
            "Bibasilar atelectasis.",
            *(f"Subsegmental atelectasis in the {lobe}." for lobe in _LOBES),
            "Plate-like atelectasis at the lung bases.",
        ],
        "negative": ["No atelectasis.", "No focal atelectasis.", "There is no atelectasis."],
    },
    "pleural_other": {
        "positive": [
            *(f"{_cap(side)} pleural thickening." for side in ("right", "left", "bilateral")),
            "Calcified pleural plaques.",
            "Blunting of the costophrenic angle from pleural scarring.",
        ],
        "negative": ["No pleural thickening.", "No pleural abnormality.", "The pleural surfaces are normal."],
    },
    "fracture": {
        "positive": [
            *(f"Acute fracture of the {side} {n} rib." for side in ("right", "left") for n in ("fifth", "seventh")),
            "Healed rib fractures.",
            "Compression fracture of a thoracic vertebral body.",
            "Fracture of the right clavicle.",
        ],
        "negative": ["No acute fracture.", "No displaced rib fracture.", "The osseous structures are intact."],
    },
}

assert {*FINDINGS, *CHEXPERT_LABELS} <= set(CXR_PROMPTS), "every known label name has prompts"


def prompts_for(
    label_names: Sequence[str], library: Mapping[str, Mapping[str, Sequence[str]]] = CXR_PROMPTS
) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """The library's prompt ensembles for ``label_names``, in their order.

    Returns:
        ``(prompts, missing)``: the entries found, and the label names without one.
    """
    found = {n: {side: list(texts) for side, texts in library[n].items()} for n in label_names if n in library}
    return found, [n for n in label_names if n not in library]
