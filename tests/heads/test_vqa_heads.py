"""The VQA classifier's image pooling: a mean forgets where a feature was, the spatial readout does not."""

from __future__ import annotations

import pytest
import torch

from medvl.heads.vqa import AnswerClassifier

DIM, TOKENS = 16, 8


def _side_task(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Image streams with one 'finding' token, in the left half (label 0) or the right half (label 1).

    Every stream holds the same multiset of token vectors (``TOKENS - 1`` background
    tokens and the finding), so its mean, like any permutation-invariant pooling, is the
    same for both labels.
    """
    g = torch.Generator().manual_seed(0)
    background = torch.randn(DIM, generator=g)
    finding = torch.randn(DIM, generator=g) * 3
    labels = torch.randint(0, 2, (n,), generator=g)
    images = background.repeat(n, TOKENS, 1)
    for i, y in enumerate(labels.tolist()):
        pos = int(torch.randint(0, TOKENS // 2, (1,), generator=g)) + y * (TOKENS // 2)
        images[i, pos] = finding
    return images, labels


def _fit(pool: str) -> float:
    torch.manual_seed(0)
    images, labels = _side_task()
    text, mask = torch.ones(len(labels), 3, DIM), torch.ones(len(labels), 3)
    head = AnswerClassifier(DIM, 2, dropout=0.0, pool=pool, num_image_tokens=TOKENS, spatial_channels=4)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(text, mask, images), labels).backward()
        opt.step()
    return (head(text, mask, images).argmax(-1) == labels).float().mean().item()


def test_spatial_readout_reads_position_the_mean_cannot():
    images, _ = _side_task()
    assert torch.allclose(images.mean(1), images[0].mean(0).expand(len(images), DIM), atol=1e-5)
    assert _fit("mean") <= 0.7  # the mean is the same for both sides: no better than the majority
    assert _fit("spatial") == 1.0


def test_pool_options_are_checked():
    with pytest.raises(ValueError, match="pool must be one of"):
        AnswerClassifier(DIM, 2, pool="max", num_image_tokens=TOKENS)
    with pytest.raises(ValueError, match="needs num_image_tokens"):
        AnswerClassifier(DIM, 2, pool="spatial")
    head = AnswerClassifier(DIM, 2, pool="spatial", num_image_tokens=TOKENS)
    with pytest.raises(ValueError, match="built for 8 image tokens, got 5"):
        head(torch.ones(1, 3, DIM), torch.ones(1, 3), torch.ones(1, 5, DIM))
    mean = AnswerClassifier(DIM, 2, pool="mean")  # METER's head: no fixed token count needed
    assert mean(torch.ones(2, 3, DIM), torch.ones(2, 3), torch.ones(2, 5, DIM)).shape == (2, 2)
    assert not any("spatial" in k for k in mean.state_dict())
