"""Percentile bootstrap confidence intervals for corpus-level text metrics.

The samples (hypothesis, references) are resampled with replacement and the metric is
recomputed on every resample; the interval is the ``alpha/2`` and ``1 - alpha/2``
quantiles of the resampled values (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13). Corpus metrics are recomputed, not averaged: BLEU from the
resample's summed n-gram statistics, CIDEr-D with document frequencies from the
resample's references, the clinical F1 from the resample's summed confusion counts.

A resample is a vector of multiplicities ``c`` (how often each sample was drawn,
summing to N). Metrics that know how to score a batch of multiplicity vectors at once
implement :class:`CorpusMetric` (``prepare`` returns a :class:`PreparedMetric`), which
turns 1000 resamples into a few matrix products; any other ``metric_fn(hyps, refs) ->
float`` is recomputed on each materialised resample (slow but general). All metrics
bootstrapped with the same ``seed`` and sample count see the same resamples, so their
intervals are paired.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CorpusMetric",
    "PreparedMetric",
    "SummedStats",
    "bootstrap_ci",
    "bootstrap_many",
    "percentile_interval",
    "resample_counts",
]


@runtime_checkable
class PreparedMetric(Protocol):
    """A metric bound to one corpus: its value and its values on resamples."""

    point: float

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """Metric values ``(B,)`` for resample multiplicities ``counts`` of shape ``(B, N)``."""
        ...


class CorpusMetric:
    """A corpus metric with a fast resampling path.

    Subclasses implement :meth:`prepare`; calling the object computes the metric.
    """

    name: str = "metric"

    def prepare(self, hypotheses: Sequence[str], references: Sequence[Any]) -> PreparedMetric:
        raise NotImplementedError

    def __call__(self, hypotheses: Sequence[str], references: Sequence[Any]) -> float:
        return float(self.prepare(hypotheses, references).point)


class SummedStats:
    """A metric that is a function of per-sample statistics summed over the corpus.

    Args:
        stats: Per-sample statistics, shape ``(N, K)``.
        reduce: Maps summed statistics ``(B, K)`` to metric values ``(B,)``.
        point: The metric on the full corpus, computed exactly by the caller; if None,
            ``reduce`` of the column sums.
    """

    def __init__(self, stats: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray], point: float | None = None):
        self.stats = np.asarray(stats, dtype=np.float64)
        if self.stats.ndim != 2:
            raise ValueError(f"stats must be (N, K), got shape {self.stats.shape}")
        self.reduce = reduce
        self.point = float(reduce(self.stats.sum(axis=0, keepdims=True))[0]) if point is None else float(point)

    @classmethod
    def mean_of(cls, per_sample: np.ndarray, point: float | None = None) -> SummedStats:
        """The mean of a per-sample score (ROUGE-L, METEOR, accuracy, ...)."""
        values = np.asarray(per_sample, dtype=np.float64).reshape(-1, 1)
        stats = np.concatenate([values, np.ones_like(values)], axis=1)
        return cls(stats, lambda sums: sums[:, 0] / sums[:, 1], point)

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        return self.reduce(np.asarray(counts, dtype=np.float64) @ self.stats)


def resample_counts(n: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """Multiplicities of ``n_resamples`` bootstrap resamples of ``n`` samples.

    Returns:
        ``(n_resamples, n)`` integer array; row ``b`` counts how often each sample was
        drawn in resample ``b`` (rows sum to ``n``). Deterministic for a given seed.
    """
    if n <= 0:
        raise ValueError("cannot resample an empty corpus")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + (np.arange(n_resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n)


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The ``alpha/2`` and ``1 - alpha/2`` quantiles (NaN values, e.g. 0/0, are ignored)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _resampled_values(prepared: PreparedMetric, counts: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([np.asarray(prepared(counts[i : i + chunk]), dtype=np.float64)
                           for i in range(0, counts.shape[0], chunk)])


def bootstrap_ci(metric_fn: CorpusMetric | PreparedMetric | Callable[[list, list], float],
                 hypotheses: Sequence[str], references: Sequence[Any], n_resamples: int = 1000,
                 alpha: float = 0.05, seed: int = 0, *, chunk: int = 100) -> tuple[float, float, float]:
    """Percentile bootstrap interval of a corpus metric.

    Args:
        metric_fn: A :class:`CorpusMetric` (fast path), or any ``f(hyps, refs) -> float``
            recomputed on each materialised resample (general path).
        hypotheses: One generated text per sample.
        references: One reference (or list of references) per sample.
        n_resamples: Number of bootstrap resamples.
        alpha: 1 - confidence level (0.05 for a 95 % interval).
        seed: Seed of the resampling; the same seed gives the same resamples.
        chunk: Resamples scored per batch on the fast path (bounds memory).

    Returns:
        ``(point, low, high)``: the metric on the full corpus and the interval bounds.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    counts = resample_counts(len(hypotheses), n_resamples, seed)
    if isinstance(metric_fn, CorpusMetric):
        prepared = metric_fn.prepare(hypotheses, references)
        return (prepared.point, *percentile_interval(_resampled_values(prepared, counts, chunk), alpha))
    hyps, refs = list(hypotheses), list(references)
    point = float(metric_fn(hyps, refs))
    values = np.empty(n_resamples)
    for b, row in enumerate(counts):
        idx = np.repeat(np.arange(len(hyps)), row)
        values[b] = metric_fn([hyps[i] for i in idx], [refs[i] for i in idx])
    return (point, *percentile_interval(values, alpha))


def bootstrap_many(prepared: Mapping[str, PreparedMetric], n_samples: int, n_resamples: int = 1000,
                   alpha: float = 0.05, seed: int = 0, *, chunk: int = 100) -> dict[str, tuple[float, float, float]]:
    """Paired intervals of several prepared metrics over the same resamples.

    Args:
        prepared: Name -> metric prepared on the same ``n_samples`` samples.
        n_samples: Corpus size.
        n_resamples: Number of bootstrap resamples.
        alpha: 1 - confidence level.
        seed: Seed of the resampling.
        chunk: Resamples scored per batch.

    Returns:
        Name -> ``(point, low, high)``.
    """
    counts = resample_counts(n_samples, n_resamples, seed)
    return {name: (float(p.point), *percentile_interval(_resampled_values(p, counts, chunk), alpha))
            for name, p in prepared.items()}
