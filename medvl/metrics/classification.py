"""ROC analysis for binary and multi-label findings.

AUROC is computed in its Mann-Whitney U form (Hanley & McNeil, "The meaning and use of
the area under a receiver operating characteristic (ROC) curve", Radiology 1982): the
probability that a random positive scores above a random negative, ties counting one
half, obtained from average ranks. :func:`multilabel_auroc` gives the per-finding AUROC
used for chest radiograph classification (CheXpert, Irvin et al., AAAI 2019,
arXiv:1901.07031), skipping uncertain/missing labels column by column.

NumPy only; accepts NumPy arrays, sequences or torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["binary_auroc", "multilabel_auroc", "roc_curve"]


def _to_numpy(x: Any) -> np.ndarray:
    """NumPy view of an array-like or (possibly CUDA, grad-requiring) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _binary_inputs(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _to_numpy(scores).astype(np.float64).ravel()
    t = _to_numpy(targets).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores and targets differ in length: {s.shape[0]} vs {t.shape[0]}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    t = t.astype(np.float64)
    if not np.isin(t, (0.0, 1.0)).all():
        bad = np.unique(t[~np.isin(t, (0.0, 1.0))])[:5]
        raise ValueError(f"targets must be 0/1; found {bad.tolist()} (use multilabel_auroc's ignore_index)")
    return s, t.astype(bool)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of their ranks."""
    n = x.shape[0]
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts_group = np.r_[True, xs[1:] != xs[:-1]]  # first element of each tie group
    group = np.cumsum(starts_group) - 1  # group id per sorted position
    starts = np.flatnonzero(starts_group)  # 0-based first position of each group
    ends = np.r_[starts[1:], n]  # one past the last position
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def binary_auroc(scores: Any, targets: Any) -> float:
    """Area under the ROC curve for one binary label.

    Args:
        scores: Scores, higher meaning more likely positive, shape ``(N,)``.
        targets: Ground truth in {0, 1} (or bool), shape ``(N,)``.

    Returns:
        AUROC in [0, 1]; ties between a positive and a negative count 1/2. NaN when
        only one class is present.
    """
    s, t = _binary_inputs(scores, targets)
    n_pos = int(t.sum())
    n_neg = t.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    # Mann-Whitney U of the positives, divided by the number of positive-negative pairs.
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def multilabel_auroc(scores: Any, targets: Any, ignore_index: int | float | None = -1) -> np.ndarray:
    """Per-column AUROC for multi-label scores, skipping ignored entries per column.

    Args:
        scores: Scores, shape ``(N, C)``.
        targets: Labels, shape ``(N, C)``, in {0, 1}; entries equal to ``ignore_index``
            (e.g. CheXpert's uncertain -1) or NaN (missing) are left out of that
            column only.
        ignore_index: Label value to skip; None skips only NaN.

    Returns:
        AUROC per column, shape ``(C,)``; NaN where a column has a single class left.
    """
    s = _to_numpy(scores).astype(np.float64)
    t = _to_numpy(targets).astype(np.float64)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"expected (N, C) scores and targets, got {s.shape} and {t.shape}")
    keep = ~np.isnan(t)
    if ignore_index is not None:
        keep &= t != ignore_index
    return np.array(
        [binary_auroc(s[keep[:, c], c], t[keep[:, c], c]) for c in range(s.shape[1])],
        dtype=np.float64,
    )


def roc_curve(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic at every distinct score threshold.

    Matches ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``: thresholds
    decrease, the first is ``inf`` (nothing predicted positive), and a sample counts as
    positive when ``score >= threshold``. ``np.trapezoid(tpr, fpr)`` equals
    :func:`binary_auroc`.

    Args:
        scores: Scores, shape ``(N,)``.
        targets: Ground truth in {0, 1}, shape ``(N,)``.

    Returns:
        ``(fpr, tpr, thresholds)``, each of length (distinct scores + 1). ``fpr`` (or
        ``tpr``) is NaN throughout when there are no negatives (or positives).
    """
    s, t = _binary_inputs(scores, targets)
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_group = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, bool)
    idx = np.flatnonzero(last_of_group)  # last position of each distinct score
    tps = np.cumsum(t)[idx].astype(np.float64)
    fps = (idx + 1 - tps).astype(np.float64)
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, s[idx]]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds
