"""Word-level report vocabulary, as used by the R2Gen family of report generators.

R2Gen (Chen et al., EMNLP 2020, arXiv:2010.16056) and R2GenCMN (Chen et al., ACL 2021,
arXiv:2204.13258) tokenise reports into lower-cased words and punctuation and keep the
words seen at least ``min_freq`` times in the training reports; everything else maps to
``<unk>``. A vocabulary of a few thousand words keeps the output layer small, which is
what makes a report decoder trainable on a CPU. The vocabulary is a plain list of
strings, so it travels inside a checkpoint's hyper-parameters and reloads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

__all__ = ["SPECIAL_TOKENS", "WordTokenizer", "normalise_report", "tokenize_words"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
_TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*|[.,;:?!()/%-]")
_NO_SPACE_BEFORE = frozenset(".,;:?!%)")


def normalise_report(text: str) -> str:
    """NFKC, lower case, control and zero-width characters dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", str(text))
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\n\t")
    return " ".join(text.lower().split())


def tokenize_words(text: str) -> list[str]:
    """Words (with internal dots/apostrophes, e.g. ``2.5``) and punctuation marks."""
    return _TOKEN.findall(normalise_report(text))


class WordTokenizer:
    """Maps reports to id sequences ``<bos> w1 ... wn <eos>`` and back.

    Args:
        vocab: The token list; the four special tokens must come first, in order.
        max_length: Maximum sequence length including ``<bos>``/``<eos>``; longer
            reports are truncated (keeping ``<eos>`` so the model learns to stop).
    """

    def __init__(self, vocab: Sequence[str], max_length: int = 128) -> None:
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(4)

    @classmethod
    def build(cls, texts: Iterable[str], *, min_freq: int = 3, max_length: int = 128) -> WordTokenizer:
        """A vocabulary of the words seen at least ``min_freq`` times, most frequent first."""
        counts = Counter(w for t in texts for w in tokenize_words(t))
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls([*SPECIAL_TOKENS, *words], max_length=max_length)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids = [self.index.get(w, self.unk_id) for w in tokenize_words(text)][: self.max_length - 2]
        return [self.bos_id, *ids, self.eos_id]

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Pad a batch: ``{"input_ids": (B, T), "attention_mask": (B, T)}``.

        A plain, picklable object: data-loader workers run it on the batch's raw texts.
        """
        seqs = [self.encode(t) for t in ([texts] if isinstance(texts, str) else texts)]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long()}

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids back to text, stopping at ``<eos>``; punctuation re-attached."""
        words: list[str] = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.vocab[i] if 0 <= i < len(self.vocab) else "<unk>")
        out = ""
        for w in words:
            out += w if (w in _NO_SPACE_BEFORE or not out) else " " + w
        return out
