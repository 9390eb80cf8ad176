"""A two-tower image–text network: vision encoder, text encoder, projections and temperature.

The network of CLIP (Radford et al., ICML 2021, arXiv:2103.00020) in the shape of
open_clip's ``CLIP`` module: towers from the encoder registry, a projection head per
tower (linear as in CLIP, or ConVIRT's MLP, Zhang et al., MLHC 2022), a learnt logit
scale (clamped, as open_clip clamps at 100) and, for SigLIP (Zhai et al., ICCV 2023,
arXiv:2303.15343), a learnt logit bias. The forward returns features; the losses of
:mod:`medvl.losses` consume them (``ClipLoss()(**model(image, tokens))``).

The temperature and bias are parameters of shape ``(1,)``, not 0-d: torch's FSDP
flattens parameters into shards and refuses 0-d ones. The forward still returns them as
0-d scalars. State dicts written before (0-d ``logit_scale`` / ``logit_bias``) load as
they are: :meth:`ImageTextModel._load_from_state_dict` reshapes them.

Under a sharding wrapper (FSDP) the parameters are whole only inside the wrapped root's
forward, so everything a task computes from the network goes through the forward:
``model(image, text)`` for both towers, ``model(text=texts)`` for the text tower alone
(zero-shot prompts), ``model(image=images)`` for the image tower alone; each output
carries ``logit_scale`` (and ``logit_bias``).

Plain torch: no Lightning, usable in a notebook as is. Images arrive already
normalised by the data pipeline; the network never normalises again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from medvl.encoders import create_encoder
from medvl.heads import ProjectionHead

__all__ = ["ImageTextModel"]

Text = Mapping[str, torch.Tensor] | torch.Tensor | Sequence[str] | str


class ImageTextModel(nn.Module):
    """Vision tower ``visual``, text tower ``text``, ``image_proj``/``text_proj``, ``logit_scale``.

    Args:
        vision_encoder: Registry name of the image encoder (``medvl.list_encoders(kind="vision")``).
        text_encoder: Registry name of the report encoder (``text_transformer_small``, or
            ``hf_text`` for a local Hugging Face model given by ``text_kwargs["model_path"]``).
        img_size: Square input size the image encoder is built for.
        in_chans: Image channels; radiographs are single-channel.
        embed_dim: Width of the joint embedding space.
        projection: ``"linear"`` (CLIP) or ``"mlp"`` (ConVIRT) projection heads.
        init_temperature: Initial softmax temperature; the logit scale starts at its log-inverse.
        max_logit_scale: Clamp on the exponentiated logit scale (CLIP uses 100).
        init_logit_bias: SigLIP's learnt bias, initialised here (-10 offsets the prior of
            mostly negative pairs); None (CLIP) has no bias.
        vision_kwargs: Extra overrides for the vision encoder factory (e.g. ``patch_dropout``).
        text_kwargs: Extra overrides for the text encoder factory.
    """

    def __init__(
        self,
        *,
        vision_encoder: str = "vit_small_patch16",
        text_encoder: str = "text_transformer_small",
        img_size: int = 224,
        in_chans: int = 1,
        embed_dim: int = 256,
        projection: Literal["linear", "mlp"] = "linear",
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        init_logit_bias: float | None = None,
        vision_kwargs: dict[str, Any] | None = None,
        text_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.visual = create_encoder(vision_encoder, img_size=img_size, in_chans=in_chans, **(vision_kwargs or {}))
        self.text = create_encoder(text_encoder, **(text_kwargs or {}))
        self.image_proj = ProjectionHead(self.visual.num_features, embed_dim, projection)
        self.text_proj = ProjectionHead(self.text.num_features, embed_dim, projection)
        # (1,), not 0-d: FSDP refuses 0-d parameters (the forward returns them as 0-d scalars).
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1.0 / init_temperature)))
        self.logit_bias = nn.Parameter(torch.full((1,), float(init_logit_bias))) if init_logit_bias is not None \
            else None
        self.max_logit_scale = max_logit_scale
        self.embed_dim = embed_dim

    @property
    def tokenizer(self) -> Callable[[list[str]], dict[str, torch.Tensor]]:
        """The text tower's picklable tokenizer: ``texts -> {"input_ids", "attention_mask"}``."""
        return self.text.tokenizer

    def scale(self) -> torch.Tensor:
        """The exponentiated logit scale, clamped at ``max_logit_scale``: a 0-d tensor.

        Under FSDP the parameter is whole only inside the wrapped forward; outside it, take
        ``model(text=...)["logit_scale"]`` instead.
        """
        return self.logit_scale.clamp(max=math.log(self.max_logit_scale)).exp().reshape(())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # State dicts of medvl before the (1,)-shaped temperature hold 0-d logit_scale/logit_bias:
        # reshaped here, so older checkpoints and exports load unchanged (Module.load_state_dict
        # passes a copy of the caller's dict).
        for name in ("logit_scale", "logit_bias"):
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor) and value.ndim == 0:
                state_dict[prefix + name] = value.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- towers ------------------------------------------------------------------------

    def encode_image(
        self, image: torch.Tensor, normalize: bool = True, return_tokens: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Embed normalised images ``(B, C, S, S)``.

        Returns:
            ``(B, E)`` embeddings (L2-normalised unless ``normalize=False``); with
            ``return_tokens`` also the patch tokens ``(B, N, D)`` (prefix tokens dropped).
        """
        tokens = self.visual.forward_features(image)  # (B, P + N, D)
        pooled = self.visual.forward_head(tokens, pre_logits=True)  # (B, D)
        emb = self.image_proj(pooled)  # (B, E)
        emb = F.normalize(emb, dim=-1) if normalize else emb
        if return_tokens:
            return emb, tokens[:, getattr(self.visual, "num_prefix_tokens", 1):]
        return emb

    def encode_text(self, text: Text, normalize: bool = True) -> torch.Tensor:
        """Embed texts: raw strings (tokenised here), a token dict, or an id tensor ``(B, T)``.

        Returns:
            ``(B, E)`` embeddings, L2-normalised unless ``normalize=False``.
        """
        device = self.logit_scale.device
        if isinstance(text, str) or (isinstance(text, Sequence) and not isinstance(text, torch.Tensor)):
            tokens = self.tokenizer([text] if isinstance(text, str) else list(text))
        elif isinstance(text, torch.Tensor):
            tokens = {"input_ids": text}
        else:
            tokens = dict(text)
        tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        emb = self.text_proj(self.text(**tokens))  # (B, E)
        return F.normalize(emb, dim=-1) if normalize else emb

    def forward(self, image: torch.Tensor | None = None, text: Text | None = None) -> dict[str, torch.Tensor]:
        """Both towers, or one: ``model(image, text)``, ``model(text=texts)``, ``model(image=images)``.

        One tower alone is the way to embed outside a training step under FSDP (zero-shot
        prompts, a gallery): the wrapped root's forward gathers the parameters, a call of
        :meth:`encode_text` on the wrapped network would see shards.

        Returns:
            ``{"image_features", "patch_tokens"}`` for an image, ``{"text_features"}`` for a
            text, and in every case the 0-d ``"logit_scale"`` (exponentiated, clamped) and,
            with SigLIP's bias, the 0-d ``"logit_bias"``.
        """
        if image is None and text is None:
            raise ValueError("ImageTextModel.forward needs an image, a text or both")
        out: dict[str, torch.Tensor] = {}
        patch_tokens = None
        if image is not None:
            out["image_features"], patch_tokens = self.encode_image(image, return_tokens=True)
        if text is not None:
            out["text_features"] = self.encode_text(text)
        if patch_tokens is not None:
            out["patch_tokens"] = patch_tokens
        out["logit_scale"] = self.scale()
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias.reshape(())
        return out
