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
