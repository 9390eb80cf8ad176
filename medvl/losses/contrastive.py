"""Contrastive image-text losses: CLIP's softmax InfoNCE and SigLIP's pairwise sigmoid.

* :class:`ClipLoss` -- the symmetric InfoNCE loss of Radford et al., "Learning
  Transferable Visual Models From Natural Language Supervision" (CLIP, ICML 2021,
  arXiv:2103.00020), in the form of open_clip's ``ClipLoss``; optional label smoothing.
* :class:`SigLipLoss` -- the pairwise sigmoid loss of Zhai et al., "Sigmoid Loss for
  Language Image Pre-Training" (SigLIP, ICCV 2023, arXiv:2303.15343), normalised as in
  big_vision and open_clip: ``-sum(logsigmoid(labels * logits)) / batch_size``.

Models return features and losses consume them (STYLE.md, item 1): both losses take the
model's output dict as keywords, ``loss = ClipLoss()(**out)``, and ignore keys they do
not use (``patch_tokens``, ...). Features are expected L2-normalised and ``logit_scale``
already exponentiated (``logit_scale = model.logit_scale.exp()``, i.e. the inverse
temperature itself, not its log). ``logit_scale`` and ``logit_bias`` are numbers or
tensors of one element, 0-d or of shape ``(1,)`` (the parameters' shape, which FSDP
needs); the loss is 0-d either way. Logits and the loss are computed in an explicit fp32
island, so bf16/fp16 features under autocast give the fp32 value.

Under data parallelism (``torch.distributed`` initialised with several processes, as in
Lightning's DDP) both losses contrast over the global batch by default: features are
gathered from every rank with gradients and each rank scores its own rows against all
columns (:mod:`medvl.losses.distributed`), so the run optimises the loss of the global
batch. ``gather=False`` keeps each rank to its local batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvl.losses import distributed

__all__ = ["ClipLoss", "SigLipLoss"]


def _check_pair(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    if image_features.ndim != 2 or text_features.ndim != 2:
        raise ValueError(
            "expected (B, D) image and text features, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if image_features.shape != text_features.shape:
        raise ValueError(
            "image and text features must be paired with equal shapes, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )


def _one_value(value: torch.Tensor | float, name: str) -> torch.Tensor | float:
    """A number as is; a tensor of one element (0-d or ``(1,)``) as a 0-d tensor, keeping its autograd graph."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.numel() != 1:
        raise ValueError(f"{name} must hold one value (0-d or shape (1,)), got shape {tuple(value.shape)}")
    return value.reshape(())


def _as_fp32(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A scalar (0-d tensor or number) as fp32 on ``like``'s device, keeping its autograd graph."""
    if isinstance(value, torch.Tensor):
        return value.float()
    return torch.tensor(float(value), device=like.device, dtype=torch.float32)


class _PairedContrastiveLoss(nn.Module):
    """What :class:`ClipLoss` and :class:`SigLipLoss` share: the checks and the path choice.

    :meth:`_loss` checks the pair, then computes the loss over the global batch
    (``gather`` with several processes), tile by tile (``blockwise``), or locally in an
    fp32 island; each subclass supplies those three computations, called with its scalar
    arguments (``logit_scale``, and ``logit_bias`` for SigLIP: :attr:`scalar_names`) in
    order, each a number or a 0-d tensor.

    Args:
        blockwise: Compute the loss tile by tile (:mod:`medvl.kernels`).
        block_size: Tile side for ``blockwise``.
        gather: With several processes, contrast over the global batch.
    """

    scalar_names: tuple[str, ...] = ("logit_scale",)
    """The scalar arguments of the loss, in the order :meth:`_loss` receives them."""

    def __init__(self, blockwise: bool, block_size: int, gather: bool) -> None:
        super().__init__()
        self.blockwise, self.block_size = blockwise, block_size
        self.gather = gather

    def _loss(
        self, image_features: torch.Tensor, text_features: torch.Tensor, *scalars: torch.Tensor | float
    ) -> torch.Tensor:
        _check_pair(image_features, text_features)
        scalars = tuple(_one_value(s, name) for s, name in zip(scalars, self.scalar_names, strict=True))
        if self.gather and distributed.world_size() > 1:
            with torch.autocast(device_type=image_features.device.type, enabled=False):
                batch = distributed.gather_global_batch(image_features, text_features)
                return self._global_loss(batch, *(_as_fp32(s, batch.image) for s in scalars))
        if self.blockwise:
            return self._blockwise_loss(image_features, text_features, *scalars)
        # fp32 island (see each subclass's ``_local_loss`` for why): autocast is switched
        # off and the inputs are upcast explicitly.
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            img = image_features.float()
            txt = text_features.float()
            return self._local_loss(img, txt, *(_as_fp32(s, img) for s in scalars))

    def _global_loss(self, batch: distributed.GlobalBatch, *scalars: torch.Tensor) -> torch.Tensor:
        """The loss of this rank's rows against the gathered batch; fp32 scalars."""
        raise NotImplementedError

    def _blockwise_loss(self, img: torch.Tensor, txt: torch.Tensor, *scalars: torch.Tensor | float) -> torch.Tensor:
        """The tiled kernel on the features and scalars as given."""
        raise NotImplementedError

    def _local_loss(self, img: torch.Tensor, txt: torch.Tensor, *scalars: torch.Tensor) -> torch.Tensor:
        """The loss of the local batch; fp32 features and scalars, autocast off."""
        raise NotImplementedError


class ClipLoss(_PairedContrastiveLoss):
    """Symmetric InfoNCE over a batch of paired image and text features.

    For ``B`` pairs, ``logits = logit_scale * image_features @ text_features.T`` and the
    loss is the mean of the cross-entropies of its rows (image -> text) and columns
    (text -> image), the diagonal being the positive pair.

    Args:
        label_smoothing: Cross-entropy label smoothing in ``[0, 1)``; 0 is plain CLIP.
        blockwise: Compute the loss tile by tile without ever holding the B x B logits
            (:func:`medvl.kernels.blockwise_clip_loss`: Triton on GPU, a blockwise
            PyTorch reference elsewhere); same value and gradients, memory O(block^2).
        block_size: Tile side for ``blockwise``.
        gather: With several processes, contrast over the global batch (local rows
            against gathered columns; ``blockwise`` then does not apply). False: each
            rank contrasts its local batch only.
    """

    def __init__(self, label_smoothing: float = 0.0, blockwise: bool = False, block_size: int = 256,
                 gather: bool = True) -> None:
        super().__init__(blockwise, block_size, gather)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        **unused: Any,
    ) -> torch.Tensor:
        """Computes the loss.

        Args:
            image_features: L2-normalised image embeddings, ``(B, D)``.
            text_features: L2-normalised text embeddings, ``(B, D)``; row ``i`` pairs
                with image ``i``.
            logit_scale: Inverse temperature, already exponentiated (a float or a tensor of
                one element, 0-d or ``(1,)``); gradients flow back into it.
            **unused: Other model outputs, ignored. A ``logit_bias`` is ignored too:
                adding a constant to every logit leaves a softmax unchanged.

        Returns:
            Scalar fp32 loss.
        """
        return self._loss(image_features, text_features, logit_scale)

    def _global_loss(self, batch: distributed.GlobalBatch, scale: torch.Tensor) -> torch.Tensor:
        return distributed.global_clip_loss(batch, scale, self.label_smoothing)

    def _blockwise_loss(self, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
        from medvl.kernels import blockwise_clip_loss

        return blockwise_clip_loss(img, txt, scale, label_smoothing=self.label_smoothing, block_size=self.block_size)

    def _local_loss(self, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # fp32: the B x B logits and their log-softmax are the numerically sensitive part
        # (a large logit_scale over bf16 dot products loses the margin between positives
        # and hard negatives).
        logits_per_image = scale * img @ txt.T  # (B, B): row i scores image i vs all texts
        labels = torch.arange(img.shape[0], device=img.device)  # (B,) positives on the diagonal
        loss_i2t = F.cross_entropy(logits_per_image, labels, label_smoothing=self.label_smoothing)
        loss_t2i = F.cross_entropy(logits_per_image.T, labels, label_smoothing=self.label_smoothing)
        return (loss_i2t + loss_t2i) / 2


class SigLipLoss(_PairedContrastiveLoss):
    """Pairwise sigmoid loss: every image-text pair is an independent binary problem.

    ``logits = logit_scale * image_features @ text_features.T + logit_bias``, labels are
    +1 on the diagonal and -1 elsewhere, and
    ``loss = -sum_ij logsigmoid(labels_ij * logits_ij) / B`` (big_vision / open_clip).
    SigLIP initialises ``logit_scale = 10`` (``log 10`` before ``exp``) and
    ``logit_bias = -10``.

    Args:
        blockwise: Compute tile by tile without the B x B logits
            (:func:`medvl.kernels.blockwise_siglip_loss`); same value and gradients.
        block_size: Tile side for ``blockwise``.
        gather: With several processes, score local images against the gathered texts
            of every rank (the global batch; ``blockwise`` then does not apply). False:
            each rank uses its local batch only.
    """

    scalar_names = ("logit_scale", "logit_bias")

    def __init__(self, blockwise: bool = False, block_size: int = 256, gather: bool = True) -> None:
        super().__init__(blockwise, block_size, gather)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float,
        **unused: Any,
    ) -> torch.Tensor:
        """Computes the loss.

        Args:
            image_features: L2-normalised image embeddings, ``(B, D)``.
            text_features: L2-normalised text embeddings, ``(B, D)``.
            logit_scale: Inverse temperature, already exponentiated (a float or a tensor of
                one element, 0-d or ``(1,)``).
            logit_bias: Learnt additive bias on every logit (likewise).
            **unused: Other model outputs, ignored.

        Returns:
            Scalar fp32 loss.
        """
        return self._loss(image_features, text_features, logit_scale, logit_bias)

    def _global_loss(self, batch: distributed.GlobalBatch, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return distributed.global_siglip_loss(batch, scale, bias)

    def _blockwise_loss(self, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor | float,
                        bias: torch.Tensor | float) -> torch.Tensor:
        from medvl.kernels import blockwise_siglip_loss

        return blockwise_siglip_loss(img, txt, scale, bias, block_size=self.block_size)

    def _local_loss(self, img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # fp32: logsigmoid of B x B scaled logits, summed; in bf16 the sum over B^2 small
        # negative terms would round away.
        logits = scale * img @ txt.T + bias  # (B, B)
        B = img.shape[0]
        labels = 2 * torch.eye(B, device=img.device) - 1  # (B, B): +1 diagonal, -1 elsewhere
        return -F.logsigmoid(labels * logits).sum() / B
