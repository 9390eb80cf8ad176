"""The label vocabulary shared by the synthetic dataset, the datamodules and the metrics.

Labels follow the CheXpert convention: 1 positive, 0 negative, -1 uncertain.
"""

from __future__ import annotations

FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "nodule",
    "support_device",
)
"""Findings the synthetic phantom draws, in label-vector order."""

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

DISPLAY_NAMES: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "pleural_effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "consolidation": "consolidation",
    "nodule": "nodule or mass",
    "support_device": "support device",
}

CHEXPERT_LABELS: tuple[str, ...] = (
    "no_finding",
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_opacity",
    "lung_lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "pleural_other",
    "fracture",
    "support_device",
)
"""The 14 CheXpert observations (Irvin et al., AAAI 2019), in the column order of
CheXpert's train.csv, as label names. They are the labels of CheXpert and MIMIC-CXR
(``mimic-cxr-2.0.0-chexpert.csv`` / ``-negbio.csv``). "Support Devices" is named
``support_device`` so that the names shared with :data:`FINDINGS` (cardiomegaly,
pleural_effusion, pneumothorax, consolidation, support_device) match."""
