"""An image-to-report network: the shared patch encoder feeding a report decoder.

The encoder's patch tokens condition one of the decoders of
:mod:`medvl.heads.report_decoder`: a transformer decoder with optional cross-modal
memory (R2Gen, Chen et al., EMNLP 2020, arXiv:2010.16056; R2GenCMN, ACL 2021,
arXiv:2204.13258) over a word vocabulary, or a prefix design on a local Hugging Face
causal LM (LLaVA-Med, Li et al., NeurIPS 2023, arXiv:2306.00890). The forward is
teacher-forced and returns ``{"logits", "targets"}`` for
:class:`medvl.losses.CaptioningLoss`; :meth:`ReportGenerator.generate` decodes reports
with greedy search, beam search or sampling (:mod:`medvl.heads.generation`).

Plain torch: no Lightning, usable in a notebook as is. Images arrive already
normalised by the data pipeline; the network never normalises again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from medvl.data.vocab import WordTokenizer
from medvl.encoders import create_encoder
from medvl.heads import generation
from medvl.heads.report_decoder import PrefixLMDecoder, PrefixLMTokenizer, TransformerReportDecoder
from medvl.networks._feature_cache import frozen_feature_cache, image_tokens
from medvl.networks._freeze import FREEZE_MODES, apply_freeze, frozen_to_eval

__all__ = ["ReportGenerator"]

DECODINGS = ("greedy", "beam", "sample")


class ReportGenerator(nn.Module):
    """Encoder ``visual`` + decoder ``decoder`` + their ``tokenizer``.

    The transformer decoder needs its vocabulary: give ``vocab``, or build the encoder
    first and call :meth:`set_vocab` once it is known (the task does so in ``setup``).

    Args:
        vision_encoder: Registry name of the image encoder, used when ``encoder`` is None.
        img_size: Input size of a created encoder.
        in_chans: Input channels of a created encoder.
        vision_kwargs: Extra overrides for a created encoder.
        encoder: An encoder built elsewhere (e.g. ``read_encoder_source(...).encoder``),
            used as is instead of creating ``vision_encoder``.
        freeze: ``none`` trains the encoder, ``all`` freezes it (kept in eval mode),
            ``partial`` trains only its last ``unfreeze_last`` blocks and final norm
            (``norm``, or ``fc_norm`` for mean-pooled encoders).
        unfreeze_last: Blocks trained when ``freeze="partial"``.
        decoder: ``transformer`` (cross-attention, optional memory) or ``prefix_lm``.
        decoder_kwargs: Overrides for the decoder (``dim``, ``depth``, ``memory_slots`` for
            the transformer; ``num_prefix_tokens`` for the prefix LM).
        vocab: Word vocabulary of the transformer decoder (special tokens first).
        lm_path: Local Hugging Face causal LM folder for ``decoder="prefix_lm"``.
        train_lm: Prefix LM: train the LM too (stage 2); False trains only the projector.
        max_length: Longest report in tokens, ``<bos>``/``<eos>`` included.
        feature_cache_mb: With ``freeze="all"`` (or ``"partial"``: the frozen trunk's tokens):
            megabytes of encoder tokens kept per input
            image (:mod:`medvl.networks._feature_cache`), so each image is encoded once per
            run instead of once per epoch; 0 (default) encodes every time.
    """

    def __init__(
        self,
        *,
        vision_encoder: str = "vit_small_patch16",
        img_size: int = 224,
        in_chans: int = 1,
        vision_kwargs: dict[str, Any] | None = None,
        encoder: nn.Module | None = None,
        freeze: Literal["none", "all", "partial"] = "none",
        unfreeze_last: int = 2,
        decoder: Literal["transformer", "prefix_lm"] = "transformer",
        decoder_kwargs: dict[str, Any] | None = None,
        vocab: Sequence[str] | None = None,
        lm_path: str | None = None,
        train_lm: bool = False,
        max_length: int = 128,
        feature_cache_mb: float = 0.0,
    ) -> None:
        super().__init__()
        if freeze not in FREEZE_MODES:
            raise ValueError(f"freeze must be one of {FREEZE_MODES}, got {freeze!r}")
        if decoder not in ("transformer", "prefix_lm"):
            raise ValueError(f"decoder must be 'transformer' or 'prefix_lm', got {decoder!r}")
        if decoder == "prefix_lm" and not lm_path:
            raise ValueError("decoder='prefix_lm' needs lm_path (a local Hugging Face causal LM folder)")
        self.visual = encoder if encoder is not None else create_encoder(
            vision_encoder, img_size=img_size, in_chans=in_chans, **(vision_kwargs or {}))
        self.freeze, self.unfreeze_last = freeze, unfreeze_last
        self.decoder_kind = decoder
        self.decoder_kwargs = dict(decoder_kwargs or {})
        self.max_length = max_length
        self._apply_freeze()
        self.feature_cache = frozen_feature_cache(self.visual, freeze, feature_cache_mb, unfreeze_last)
        self.decoder: TransformerReportDecoder | PrefixLMDecoder | None = None
        self.tokenizer: WordTokenizer | PrefixLMTokenizer | None = None
        if decoder == "prefix_lm":
            self.decoder = PrefixLMDecoder(lm_path, self.visual.num_features, max_length=max_length,
                                           train_lm=train_lm, **self.decoder_kwargs)
            self.tokenizer = self.decoder.tokenizer
        elif vocab is not None:
            self.set_vocab(vocab)

    # -- construction -----------------------------------------------------------------

    def _apply_freeze(self) -> None:
        apply_freeze(self.visual, self.freeze, self.unfreeze_last)

    def set_vocab(self, vocab: Sequence[str]) -> None:
        """(Re)build the word tokenizer and the transformer decoder for ``vocab``."""
        if self.decoder_kind != "transformer":
            raise ValueError(f"set_vocab is for the transformer decoder; this one is {self.decoder_kind!r}")
        self.tokenizer = WordTokenizer(vocab, max_length=self.max_length)
        self.decoder = TransformerReportDecoder(len(self.tokenizer), self.visual.num_features,
                                                max_length=self.max_length, **self.decoder_kwargs)

    @property
    def vocab(self) -> list[str] | None:
        """The transformer decoder's word list (None before :meth:`set_vocab`, or for a prefix LM)."""
        return self.tokenizer.vocab if isinstance(self.tokenizer, WordTokenizer) else None

    @property
    def train_lm(self) -> bool:
        """Prefix LM: whether the LM trains (stage 2)."""
        return isinstance(self.decoder, PrefixLMDecoder) and self.decoder.train_lm

    def set_train_lm(self, train: bool) -> None:
        """Prefix LM stage switch: False trains only the projector, True the LM too."""
        if not isinstance(self.decoder, PrefixLMDecoder):
            raise ValueError("set_train_lm is for the prefix LM decoder")
        self.decoder.set_train_lm(train)

    def train(self, mode: bool = True) -> ReportGenerator:
        super().train(mode)
        frozen_to_eval(self.visual, self.freeze, self.unfreeze_last)  # the frozen part runs as at inference
        return self

    def _require_decoder(self) -> None:
        if self.decoder is None:
            raise RuntimeError("the transformer decoder has no vocabulary yet: pass vocab= or call set_vocab()")

    # -- forward ------------------------------------------------------------------------

    def visual_context(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(B, C, S, S)`` -> the decoder's visual context ``(B, L, dim)``."""
        self._require_decoder()
        tokens = image_tokens(self.visual, image, self.freeze, self.feature_cache)  # (B, P + N, D)
        return self.decoder.encode_visual(tokens)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}`` ``(B, T)`` of ``<bos> report <eos>`` sequences."""
        self._require_decoder()
        return self.tokenizer(list(texts))

    def forward(
        self, image: torch.Tensor, tokens: Mapping[str, torch.Tensor] | Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced next-token logits.

        Args:
            image: Normalised images ``(B, C, S, S)``.
            tokens: ``{"input_ids", "attention_mask"}`` from :attr:`tokenizer`, or raw
                report strings (tokenised here).

        Returns:
            ``{"logits": (B, T-1, V), "targets": (B, T-1)}``; padding targets are -100.
        """
        if not isinstance(tokens, Mapping):
            tokens = self.tokenize(tokens)
        ids = tokens["input_ids"].to(image.device)  # (B, T)
        mask = tokens.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.to(image.device)
        logits = self.decoder(ids[:, :-1], self.visual_context(image), attention_mask=mask[:, :-1])
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        return {"logits": logits, "targets": targets}

    @torch.no_grad()
    def generate(
        self,
        image: torch.Tensor,
        *,
        decoding: Literal["greedy", "beam", "sample"] = "greedy",
        num_beams: int = 3,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_length: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Reports for a batch of normalised images ``(B, C, S, S)``.

        Args:
            image: The images.
            decoding: ``greedy``, ``beam`` or ``sample``.
            num_beams: Beam width.
            length_penalty: Beam-search length normalisation exponent.
            no_repeat_ngram_size: Forbid repeating any n-gram of this size (greedy and beam; 0: off).
            temperature: Sampling temperature.
            top_k: Sampling top-k (0: off).
            top_p: Sampling nucleus mass (1: off).
            max_length: Longest generated sequence; defaults to the network's.
            generator: Random generator for sampling.
        """
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
        ctx = self.visual_context(image)  # (B, L, dim)
        B = image.shape[0]
        tok = self.tokenizer
        common = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, max_length=max_length or self.max_length,
                      device=image.device)
        if decoding == "beam":
            ctx_k = ctx.repeat_interleave(num_beams, dim=0)  # (B * K, L, dim), beams of a sample contiguous
            ids = generation.beam_search(lambda t: self.decoder(t, ctx_k)[:, -1], B, num_beams=num_beams,
                                         length_penalty=length_penalty,
                                         no_repeat_ngram_size=no_repeat_ngram_size, **common)
        elif decoding == "sample":
            ids = generation.sample(lambda t: self.decoder(t, ctx)[:, -1], B, temperature=temperature,
                                    top_k=top_k, top_p=top_p, generator=generator, **common)
        else:
            ids = generation.greedy(lambda t: self.decoder(t, ctx)[:, -1], B,
                                    no_repeat_ngram_size=no_repeat_ngram_size, **common)
        return [tok.decode(row) for row in ids]  # ids: (B, T)
