"""Zero-shot prompt ensembles for chest radiograph findings.

Each finding has positive and negative phrasings written the way radiologists write
reports (CheXzero-style positive/negative pairs). Keys follow :data:`FINDINGS`.
"""

from __future__ import annotations

from medvl.data.labels import FINDINGS

CXR_PROMPTS: dict[str, dict[str, list[str]]] = {
    "cardiomegaly": {
        "positive": ["The cardiac silhouette is enlarged.", "Cardiomegaly.", "The heart is enlarged."],
        "negative": ["Heart size is normal.", "No cardiomegaly.", "The cardiac silhouette is within normal limits."],
    },
    "pleural_effusion": {
        "positive": ["There is a pleural effusion.", "Left pleural effusion.", "Right pleural effusion.", "Bilateral pleural effusions."],
        "negative": ["No pleural effusion.", "The costophrenic angles are sharp.", "No effusion."],
    },
    "pneumothorax": {
        "positive": ["There is a pneumothorax.", "Left pneumothorax.", "Right pneumothorax."],
        "negative": ["No pneumothorax.", "There is no pneumothorax."],
    },
    "consolidation": {
        "positive": ["There is a focal consolidation.", "Patchy airspace opacity.", "Consolidation concerning for pneumonia."],
        "negative": ["No focal consolidation.", "The lungs are clear.", "No airspace opacity."],
    },
    "nodule": {
        "positive": ["There is a pulmonary nodule.", "A mass in the lung.", "A nodule in the lung."],
        "negative": ["No pulmonary nodules.", "No nodules or masses.", "No suspicious pulmonary nodule."],
    },
    "support_device": {
        "positive": ["Endotracheal tube in place.", "A central venous catheter is present.", "Support devices are present."],
        "negative": ["No support devices.", "No lines or tubes."],
    },
}

assert tuple(CXR_PROMPTS) == FINDINGS, "prompt keys must follow FINDINGS order"
