"""Cross-modal retrieval Recall@K for paired image and report embeddings.

The image-to-text and text-to-image Recall@K protocol of CLIP (Radford et al., ICML
2021, arXiv:2103.00020) and of chest radiograph retrieval (e.g. ConVIRT, Zhang et al.,
MLHC 2022, arXiv:2010.00747): query ``i`` succeeds at ``K`` when a matching item of
the other modality is among its ``K`` most cosine-similar candidates. With ``groups``,
every candidate sharing the query's group id matches -- needed when reports repeat
verbatim (many "no acute cardiopulmonary process" reports, or synthetic normals).

Ties are counted pessimistically: a non-matching candidate scoring *equal* to the best
match ranks ahead of it, so a collapsed encoder (all embeddings equal) scores 0 rather
than a perfect 1. Similarities are computed in row chunks so memory stays
``O(chunk_size * N)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["retrieval_ranks", "retrieval_recall_at_k"]


def _to_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(np.asarray(x))


@torch.no_grad()
def retrieval_ranks(
    queries: Any,
    candidates: Any,
    groups: Any | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """0-based rank of the best-scoring match of each query among all candidates.

    Args:
        queries: Query embeddings, ``(N, D)``; need not be normalised.
        candidates: Candidate embeddings, ``(N, D)``; row ``i`` matches query ``i``.
        groups: Optional integer group id per item, ``(N,)``; candidates in the query's
            group all count as matches.
        chunk_size: Queries scored at once.

    Returns:
        ``(N,)`` long tensor: number of non-matching candidates scoring at least as
        high as the best match (0 = retrieved first).
    """
    q = F.normalize(_to_tensor(queries).float(), dim=-1)  # (N, D)
    c = F.normalize(_to_tensor(candidates).float(), dim=-1).to(q.device)  # (N, D)
    if q.ndim != 2 or q.shape != c.shape:
        raise ValueError(
            f"expected paired (N, D) features, got {tuple(q.shape)} and {tuple(c.shape)}"
        )
    n = q.shape[0]
    if groups is None:
        g = torch.arange(n, device=q.device)
    else:
        g = _to_tensor(groups).to(q.device).long().reshape(-1)
        if g.shape[0] != n:
            raise ValueError(f"groups has {g.shape[0]} entries for {n} items")
    ranks = []
    for start in range(0, n, chunk_size):
        sim = q[start : start + chunk_size] @ c.T  # (n_chunk, N) cosine similarities
        match = g[start : start + chunk_size, None] == g[None, :]  # (n_chunk, N)
        best = sim.masked_fill(~match, float("-inf")).amax(dim=1, keepdim=True)  # (n_chunk, 1)
        ranks.append(((sim >= best) & ~match).sum(dim=1))  # (n_chunk,)
    return torch.cat(ranks).cpu()


def retrieval_recall_at_k(
    image_features: Any,
    text_features: Any,
    ks: Sequence[int] = (1, 5, 10),
    groups: Any | None = None,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Image-to-text and text-to-image Recall@K for paired embeddings.

    Args:
        image_features: Image embeddings, ``(N, D)`` (torch or NumPy).
        text_features: Text embeddings, ``(N, D)``; row ``i`` is image ``i``'s report.
        ks: Cut-offs ``K``.
        groups: Optional integer id per pair, ``(N,)``; items with equal ids (e.g.
            identical reports) count as correct matches for each other.
        chunk_size: Queries scored at once, bounding memory to ``chunk_size * N``.

    Returns:
        ``{"i2t_R@k", "t2i_R@k", "mean_R@k"}`` for each ``k``, as fractions in [0, 1].
    """
    i2t = retrieval_ranks(image_features, text_features, groups, chunk_size)
    t2i = retrieval_ranks(text_features, image_features, groups, chunk_size)
    out: dict[str, float] = {}
    for k in ks:
        r_i2t = (i2t < k).float().mean().item()
        r_t2i = (t2i < k).float().mean().item()
        out[f"i2t_R@{k}"] = r_i2t
        out[f"t2i_R@{k}"] = r_t2i
        out[f"mean_R@{k}"] = (r_i2t + r_t2i) / 2
    return out
