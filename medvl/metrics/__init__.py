"""Evaluation metrics: retrieval, ROC/AUROC, zero-shot classification, report generation.

Report-generation metrics (COCO-convention NLG scores, the CheXpert-style labeler and
clinical efficacy, bootstrap confidence intervals) load on first attribute access.
Torch/NumPy only: nothing here imports Lightning.
"""

from medvl._lazy import lazy_attributes
from medvl.metrics.classification import binary_auroc, multilabel_auroc, roc_curve
from medvl.metrics.retrieval import retrieval_ranks, retrieval_recall_at_k

__all__ = [
    "binary_auroc",
    "multilabel_auroc",
    "retrieval_ranks",
    "retrieval_recall_at_k",
    "roc_curve",
]

try:  # zero-shot helpers live in zeroshot.py (written separately)
    from medvl.metrics.zeroshot import prompt_embeddings, zero_shot_auroc, zero_shot_scores  # noqa: F401

    __all__ += ["prompt_embeddings", "zero_shot_auroc", "zero_shot_scores"]
except ModuleNotFoundError as err:  # pragma: no cover - only while zeroshot.py is absent
    if err.name != "medvl.metrics.zeroshot":
        raise

_LAZY: dict[str, str] = {
    "compute_nlg": "medvl.metrics.nlg",
    "nlg_per_sample": "medvl.metrics.nlg",
    "ptb_tokenize": "medvl.metrics.nlg",
    "CHEXPERT_LABELS": "medvl.metrics.clinical",
    "label_reports": "medvl.metrics.clinical",
    "clinical_efficacy": "medvl.metrics.clinical",
    "bootstrap_ci": "medvl.metrics.bootstrap",
    "evaluate_report_files": "medvl.metrics.report_eval",
    "normalize_answer": "medvl.metrics.vqa",
    "is_closed": "medvl.metrics.vqa",
    "vqa_scores": "medvl.metrics.vqa",
}
__all__ += list(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
