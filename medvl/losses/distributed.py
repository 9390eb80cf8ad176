"""Contrastive losses over the global batch of a data-parallel run.

With ``P`` processes each holding ``n_r`` pairs, a per-rank loss contrasts every image
with only ``n_r`` texts: the negatives shrink by ``P`` and the run optimises a different
objective from the single-process one. Here every rank gathers the features of all ranks
with gradients (PyTorch's functional all-gather; its backward is a reduce-scatter) and
scores its *local* rows against the *global* columns, as open_clip's ``gather_with_grad``
+ ``local_loss``:
memory ``n_r x N`` rather than ``N x N``. Each rank's loss is scaled by ``P / N`` (``N``
the global batch) so that the mean over ranks, which DDP's gradient averaging optimises,
is exactly the single-process loss of the global batch -- also when ranks hold different
batch sizes (the last batch of an epoch): features are padded to the largest rank's size
for the collective and the padding is cut off again.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["GlobalBatch", "gather_global_batch", "global_clip_loss", "global_siglip_loss", "world_size"]


def world_size() -> int:
    """Processes in the default group; 1 outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class GlobalBatch:
    """Local and gathered features of one step.

    Attributes:
        image, text: Local features ``(n, D)`` (fp32).
        all_image, all_text: Features of every rank, ``(N, D)``, rank order, local rows
            carrying this rank's autograd graph (others' gradients flow back through the
            collective's backward).
        offset: Index of this rank's first row in the global batch.
        total: ``N``.
        world: Number of processes ``P``.
    """

    def __init__(self, image: torch.Tensor, text: torch.Tensor) -> None:
        self.world = dist.get_world_size()
        rank = dist.get_rank()
        n = torch.tensor([image.shape[0]], device=image.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        counts = [int(s.item()) for s in sizes]
        self.image, self.text = image, text
        self.offset, self.total = sum(counts[:rank]), sum(counts)
        self.all_image = _gather(image, counts)
        self.all_text = _gather(text, counts)


def _gather(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    size = max(counts)
    padded = F.pad(x, (0, 0, 0, size - x.shape[0])) if size > x.shape[0] else x  # equal shapes for the collective
    gather_autograd = _differentiable_all_gather()
    if gather_autograd is not None:  # functional collective; its backward is a reduce-scatter
        stacked = gather_autograd(padded.contiguous(), gather_dim=0, group=dist.group.WORLD)
        parts = stacked.split(size, dim=0)  # (P * size, D) -> P x (size, D)
    else:  # older PyTorch
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0)  # (N, D)


def _differentiable_all_gather():
    """PyTorch's differentiable all-gather, under whichever name this release gives it."""
    from torch.distributed import _functional_collectives as fc

    for name in ("all_gather_single_autograd", "all_gather_tensor_autograd"):  # newest name first
        if hasattr(fc, name):
            return getattr(fc, name)
    return None


def gather_global_batch(image_features: torch.Tensor, text_features: torch.Tensor) -> GlobalBatch:
    """Gathers fp32 copies of both feature sets from every rank (see :class:`GlobalBatch`)."""
    return GlobalBatch(image_features.float(), text_features.float())


def global_clip_loss(batch: GlobalBatch, logit_scale: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """This rank's share of the InfoNCE loss of the global batch (fp32; call with autocast off)."""
    n = batch.image.shape[0]
    labels = torch.arange(n, device=batch.image.device) + batch.offset  # positives: own rows' global index
    logits_i2t = logit_scale * batch.image @ batch.all_text.T  # (n, N)
    logits_t2i = logit_scale * batch.text @ batch.all_image.T  # (n, N)
    loss = F.cross_entropy(logits_i2t, labels, reduction="sum", label_smoothing=label_smoothing)
    loss = loss + F.cross_entropy(logits_t2i, labels, reduction="sum", label_smoothing=label_smoothing)
    return loss / 2 * (batch.world / max(batch.total, 1))


def global_siglip_loss(batch: GlobalBatch, logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """This rank's share of the sigmoid loss of the global batch (fp32; call with autocast off)."""
    n = batch.image.shape[0]
    logits = logit_scale * batch.image @ batch.all_text.T + logit_bias  # (n, N): local images x all texts
    labels = -torch.ones_like(logits)
    rows = torch.arange(n, device=logits.device)
    labels[rows, rows + batch.offset] = 1.0
    return -F.logsigmoid(labels * logits).sum() * (batch.world / max(batch.total, 1))
