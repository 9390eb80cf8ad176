"""Zero-shot classification from positive/negative prompt pairs.

For each finding, the positive and negative prompts are embedded, averaged per side
(prompt ensembling, Radford et al., 2021) and renormalised. An image's score for the
finding is the softmax probability of the positive side over the two sides, as in
CheXzero (Tiu et al., 2022, "Expert-level detection of pathologies from unannotated
chest X-ray images via self-supervised learning").
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medvl.metrics.classification import multilabel_auroc

__all__ = ["prompt_embeddings", "zero_shot_scores", "zero_shot_auroc"]

Prompts = Mapping[str, Mapping[str, Sequence[str]]]


@torch.no_grad()
def prompt_embeddings(encode_text: Callable[[list[str]], torch.Tensor], prompts: Prompts) -> torch.Tensor:
    """Embed each finding's prompt ensemble.

    Args:
        encode_text: Maps a list of strings to L2-normalised embeddings (n, D).
        prompts: ``{finding: {"negative": [...], "positive": [...]}}``.

    Returns:
        (C, 2, D) normalised class embeddings, index 0 negative and 1 positive.
    """
    out = []
    for finding, sides in prompts.items():
        pair = []
        for side in ("negative", "positive"):
            texts = list(sides[side])
            if not texts:
                raise ValueError(f"prompts for {finding!r} have no {side} text")
            pair.append(F.normalize(encode_text(texts).float().mean(0), dim=-1))
        out.append(torch.stack(pair))
    return torch.stack(out)


def zero_shot_scores(image_features: torch.Tensor, class_embeddings: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    """Probability of the positive prompt per image and finding.

    Args:
        image_features: (N, D) L2-normalised image embeddings.
        class_embeddings: (C, 2, D) from :func:`prompt_embeddings`.
        logit_scale: The model's (exponentiated) temperature.

    Returns:
        (N, C) scores in [0, 1].
    """
    # fp32 island: the two-way softmax of scaled cosine similarities.
    logits = torch.einsum("nd,ckd->nck", image_features.float(), class_embeddings.float()) * float(logit_scale)
    return logits.softmax(dim=-1)[..., 1]


def zero_shot_auroc(
    image_features: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    class_embeddings: torch.Tensor,
    logit_scale: float | torch.Tensor = 100.0,
    ignore_index: int = -1,
) -> np.ndarray:
    """Per-finding AUROC of zero-shot scores against labels (N, C); uncertain labels are ignored."""
    scores = zero_shot_scores(image_features, class_embeddings, logit_scale).cpu().numpy()
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return multilabel_auroc(scores, labels, ignore_index=ignore_index)
