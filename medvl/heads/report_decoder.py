"""Report decoders on top of the patch encoder's tokens: a transformer decoder and a prefix LM.

Two designs, one interface (``encode_visual`` once per image, then ``forward`` on token
ids, returning next-token logits), so training and every decoding strategy of
:mod:`medvl.heads.generation` work with either:

* :class:`TransformerReportDecoder` -- a pre-norm transformer decoder whose words
  cross-attend to the projected patch tokens (Vaswani et al. 2017; the R2Gen family,
  Chen et al. EMNLP 2020, arXiv:2010.16056), with an optional cross-modal memory
  (:class:`medvl.heads.memory.CrossModalMemory`, R2GenCMN, ACL 2021) read by both the
  visual tokens and the word embeddings. Word-level vocabulary
  (:class:`medvl.data.vocab.WordTokenizer`), output layer tied to the embedding.
* :class:`PrefixLMDecoder` -- LLaVA-Med style (Li et al., NeurIPS 2023, arXiv:2306.00890;
  LLaVA-1.5's two-layer MLP projector, arXiv:2310.03744): patch tokens, pooled to a
  fixed number, are projected into the embedding space of a Hugging Face causal
  language model loaded from a local folder and prepended to the report's embeddings.
  ``train_lm=False`` is stage 1 (only the projector learns); ``True`` is stage 2.
  Its tokenisation is the picklable :class:`PrefixLMTokenizer` (``decoder.tokenizer``),
  so data-loader workers can run it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medvl._hf import LazyHFTokenizer
from medvl.heads.memory import CrossModalMemory

__all__ = ["PrefixLMDecoder", "PrefixLMTokenizer", "TransformerReportDecoder"]


class TransformerReportDecoder(nn.Module):
    """Word decoder cross-attending to visual tokens.

    Args:
        vocab_size: Output vocabulary (word-level; see ``WordTokenizer``).
        visual_dim: Width of the encoder's patch tokens.
        dim: Decoder width.
        depth: Decoder layers.
        num_heads: Attention heads.
        max_length: Longest token sequence (learnt position embeddings).
        dropout: Dropout in attention/MLP, as R2Gen's 0.1.
        memory_slots: > 0 adds a cross-modal memory with this many slots (R2GenCMN).
        memory_topk: Slots each query reads.
    """

    def __init__(
        self,
        vocab_size: int,
        visual_dim: int,
        dim: int = 256,
        depth: int = 3,
        num_heads: int = 8,
        max_length: int = 128,
        dropout: float = 0.1,
        memory_slots: int = 0,
        memory_topk: int = 32,
    ) -> None:
        super().__init__()
        self.visual_proj = nn.Sequential(nn.Linear(visual_dim, dim), nn.LayerNorm(dim))
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_length, dim))
        self.memory = CrossModalMemory(dim, memory_slots, num_heads, memory_topk, dropout) if memory_slots else None
        layer = nn.TransformerDecoderLayer(dim, num_heads, 4 * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, depth)
        self.norm = nn.LayerNorm(dim)
        self.max_length = max_length
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"pos", "embed.weight"} | ({"memory.memory"} if self.memory is not None else set())

    def encode_visual(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, visual_dim) -> (B, N, dim)``: projected (and memory-read) visual context."""
        v = self.visual_proj(patch_tokens)
        return self.memory(v) if self.memory is not None else v

    def forward(self, input_ids: torch.Tensor, visual: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` for ids ``(B, T)`` given ``encode_visual`` output."""
        T = input_ids.shape[1]
        if T > self.max_length:
            raise ValueError(f"sequence of {T} tokens exceeds max_length {self.max_length}")
        x = self.embed(input_ids) * math.sqrt(self.embed.embedding_dim) + self.pos[:, :T]
        if self.memory is not None:
            x = self.memory(x)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # True: may not attend
        pad = None if attention_mask is None else attention_mask == 0
        x = self.layers(x, visual, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=pad)
        return F.linear(self.norm(x), self.embed.weight)  # (B, T, V), tied output layer


class PrefixLMTokenizer(LazyHFTokenizer):
    """``<bos> report <eos>`` ids for a local Hugging Face causal LM, and back.

    Picklable: the Hugging Face tokenizer is dropped from the pickle and reloaded from
    ``lm_path`` on first use in each process (e.g. a data-loader worker).

    Args:
        lm_path: Folder with the LM's tokenizer files.
        max_length: Longest sequence in tokens, ``<bos>``/``<eos>`` included (truncated beyond).
    """

    def __init__(self, lm_path: str, max_length: int = 128) -> None:
        super().__init__()
        self.lm_path = str(lm_path)
        self.max_length = max_length
        tok = self._load()
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if self.eos_id is None:
            raise ValueError(f"{lm_path}: the tokenizer defines no eos/sep token to end reports with")
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else self.eos_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tok)

    def _tokenizer_path(self) -> str:
        return self.lm_path

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``{"input_ids", "attention_mask"}``, each ``(B, T)``."""
        if isinstance(texts, str):
            texts = [texts]
        tok = self._load()
        seqs = [[self.bos_id, *tok(t, add_special_tokens=False)["input_ids"][: self.max_length - 2], self.eos_id]
                for t in texts]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(seqs), T, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids back to text: a leading ``<bos>`` skipped, stopping at ``<eos>``."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        out = []
        for i in ids[1:] if ids and ids[0] == self.bos_id else ids:
            if i == self.eos_id:
                break
            out.append(i)
        return self._load().decode(out, skip_special_tokens=True).strip()


class PrefixLMDecoder(nn.Module):
    """A local Hugging Face causal LM conditioned on projected patch tokens.

    Args:
        lm_path: Folder with a causal LM (``config.json`` + weights) and its tokenizer.
        visual_dim: Width of the encoder's patch tokens.
        num_prefix_tokens: Patch tokens are average-pooled to this many (in raster
            order) before projection: a short prefix keeps the LM's context for the report.
        train_lm: Train the LM too (stage 2); False freezes it (stage 1, projector only).
        max_length: Longest report in tokens (truncated beyond).
    """

    def __init__(self, lm_path: str, visual_dim: int, num_prefix_tokens: int = 16, train_lm: bool = False,
                 max_length: int = 128) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.lm = AutoModelForCausalLM.from_pretrained(lm_path)
        self.tokenizer = PrefixLMTokenizer(lm_path, max_length=max_length)
        hidden = self.lm.get_input_embeddings().embedding_dim
        self.projector = nn.Sequential(nn.Linear(visual_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.num_prefix_tokens = num_prefix_tokens
        self.max_length = max_length
        self.bos_id, self.eos_id, self.pad_id = self.tokenizer.bos_id, self.tokenizer.eos_id, self.tokenizer.pad_id
        self.set_train_lm(train_lm)

    def set_train_lm(self, train: bool) -> None:
        """Stage 1 (False): only the projector learns. Stage 2 (True): the LM learns too."""
        self.train_lm = train
        self.lm.requires_grad_(train)

    def encode_visual(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, visual_dim) -> (B, num_prefix_tokens, hidden)`` prefix embeddings."""
        pooled = F.adaptive_avg_pool1d(patch_tokens.transpose(1, 2), self.num_prefix_tokens).transpose(1, 2)
        return self.projector(pooled)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``<bos> report <eos>`` ids, right-padded: ``{"input_ids", "attention_mask"}`` (B, T)."""
        return self.tokenizer(texts)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.tokenizer.decode(ids)

    def forward(self, input_ids: torch.Tensor, visual: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` at the text positions."""
        P = visual.shape[1]
        words = self.lm.get_input_embeddings()(input_ids)  # (B, T, hidden)
        embeds = torch.cat([visual.to(words.dtype), words], dim=1)  # (B, P + T, hidden)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = torch.cat([attention_mask.new_ones(input_ids.shape[0], P), attention_mask], dim=1)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits  # (B, P + T, V)
        return logits[:, P:]
