"""An image classifier: the shared patch encoder, dropout and a linear multi-label head.

The network of the linear-probe protocol of CLIP (Radford et al., ICML 2021,
arXiv:2103.00020) and of the CheXpert fine-tuning baselines (Irvin et al., AAAI 2019,
arXiv:1901.07031): one logit per label over the encoder's pooled feature. With
``freeze_encoder`` it is a linear probe: the encoder takes no gradients and stays in
eval mode (no dropout, no BatchNorm statistics updates), whatever ``train()`` says.

Plain torch: no Lightning, usable in a notebook as is. Images arrive already normalised
by the data pipeline; the network never normalises again. The losses of
:mod:`medvl.losses` consume its output (``MaskedBCELoss()(**model(image), labels=y)``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medvl.encoders import create_encoder

__all__ = ["ImageClassifier"]


class ImageClassifier(nn.Module):
    """Encoder ``visual``, dropout ``head_drop`` and linear ``head`` with one output per class.

    Args:
        num_classes: Outputs (one per label name).
        vision_encoder: Registry name of the image encoder, or a built encoder (e.g.
            ``medvl.load_encoder(folder)``) with ``forward_features``/``forward_head``.
        img_size: Square input size a registry encoder is built for.
        in_chans: Image channels of a registry encoder.
        dropout: Dropout on the pooled feature before the head.
        freeze_encoder: Linear probe: no gradients into the encoder, kept in eval mode.
        vision_kwargs: Extra overrides for a registry encoder (e.g. ``drop_path_rate``).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        vision_encoder: str | nn.Module = "vit_small_patch16",
        img_size: int = 224,
        in_chans: int = 1,
        dropout: float = 0.0,
        freeze_encoder: bool = False,
        vision_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if isinstance(vision_encoder, str):
            vision_encoder = create_encoder(vision_encoder, img_size=img_size, in_chans=in_chans,
                                            **(vision_kwargs or {}))
        self.visual = vision_encoder
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.visual.num_features, num_classes)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)  # small: the first logits are near 0 (p = 0.5)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.visual.requires_grad_(False)
            self.visual.eval()

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.visual.eval()  # frozen: no dropout, no BatchNorm statistics updates
        return self

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` normalised image -> pooled feature ``(B, D)``."""
        if self.freeze_encoder:
            # Callers (Lightning among them) may set submodule modes one by one, bypassing train().
            self.visual.eval()
            with torch.no_grad():
                return self.visual.forward_head(self.visual.forward_features(image), pre_logits=True)
        return self.visual.forward_head(self.visual.forward_features(image), pre_logits=True)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, C, S, S)`` normalised image -> ``{"logits": (B, K), "image_features": (B, D)}``."""
        feats = self.encode_image(image)  # (B, D)
        return {"logits": self.head(self.head_drop(feats)), "image_features": feats}
