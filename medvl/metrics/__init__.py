"""Evaluation metrics: retrieval, ROC/AUROC, zero-shot classification.

Torch/NumPy only: nothing here imports Lightning.
"""

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
