"""Decoding strategies for the report decoders: greedy, beam search and sampling.

All three drive a ``step(ids) -> logits`` function that returns the next-token logits
``(B, V)`` for every row of a ``(B, T)`` prefix, so they work for any decoder of
:mod:`medvl.heads.report_decoder` (the caller binds the visual context, repeated per
beam). Beam search follows the conventions of Hugging Face ``generate``: scores are
summed log-probabilities, finished hypotheses are ranked by ``score / length **
length_penalty`` (Wu et al. 2016, GNMT), and ``no_repeat_ngram_size`` forbids any
n-gram from occurring twice (Paulus et al. 2017), the fix for the repetition loops
report generators are prone to.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["beam_search", "greedy", "sample"]

Step = Callable[[torch.Tensor], torch.Tensor]


def _banned_ngram_tokens(seq: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in ``seq``."""
    if n <= 0 or len(seq) < n:
        return set()
    prefix = tuple(seq[len(seq) - n + 1 :])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix}


def _block_ngrams(logp: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    if n <= 0:
        return logp
    for row, seq in enumerate(ids.tolist()):
        banned = _banned_ngram_tokens(seq, n)
        if banned:
            logp[row, list(banned)] = float("-inf")
    return logp


def _start(batch_size: int, bos_id: int, device, prefix: torch.Tensor | None) -> torch.Tensor:
    """The ids decoding starts from: ``<bos>`` per row, or the given ``(B, T0)`` prefix."""
    if prefix is None:
        return torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    if prefix.ndim != 2 or prefix.shape[0] != batch_size or prefix.shape[1] == 0:
        raise ValueError(f"prefix must be ({batch_size}, T0 > 0) ids, got {tuple(prefix.shape)}")
    return prefix.to(device=device, dtype=torch.long)


def _extend(step: Step, batch_size: int, bos_id: int, eos_id: int, max_length: int, device,
            pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], prefix: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Grow ``(B, T)`` ids one token at a time, ``pick(logits, ids) -> (B,)``, until all end."""
    ids = _start(batch_size, bos_id, device, prefix)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for _ in range(max_length - ids.shape[1]):
        nxt = pick(step(ids), ids).masked_fill(done, eos_id)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if done.all():
            break
    return ids


@torch.no_grad()
def greedy(step: Step, batch_size: int, *, bos_id: int, eos_id: int, max_length: int, device=None,
           no_repeat_ngram_size: int = 0, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Pick the most likely token at every step.

    Returns ``(B, T)`` ids starting with ``<bos>``, or with ``prefix`` (``(B, T0)`` ids the
    decoding continues, e.g. a question; ``max_length`` counts it).
    """

    def pick(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return _block_ngrams(F.log_softmax(logits.float(), dim=-1), ids, no_repeat_ngram_size).argmax(-1)

    return _extend(step, batch_size, bos_id, eos_id, max_length, device, pick, prefix)


@torch.no_grad()
def sample(step: Step, batch_size: int, *, bos_id: int, eos_id: int, max_length: int, device=None,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
           prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Ancestral sampling with temperature, top-k and nucleus (top-p, Holtzman et al. 2020) filtering.

    ``prefix``: ``(B, T0)`` ids to continue instead of ``<bos>`` (as :func:`greedy`).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    def pick(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits = logits.float() / temperature  # (B, V)
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
            logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(ids.device)[:, 0]

    return _extend(step, batch_size, bos_id, eos_id, max_length, device, pick, prefix)


@torch.no_grad()
def beam_search(step: Step, batch_size: int, *, bos_id: int, eos_id: int, max_length: int, device=None,
                num_beams: int = 3, length_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Beam search; ``step`` sees ``(B * num_beams, T)`` ids, beams of one sample contiguous.

    ``prefix``: ``(B, T0)`` ids to continue instead of ``<bos>`` (as :func:`greedy`);
    length normalisation counts only the generated tokens.

    Returns:
        The best finished hypothesis per sample, ``(B, T)``, right-padded with ``<eos>``.
    """
    K = num_beams
    ids = _start(batch_size, bos_id, device, prefix).repeat_interleave(K, dim=0)  # (B*K, T0)
    start = ids.shape[1]
    steps = max_length - start
    # Only the first beam of each sample is live at the start (the others are copies).
    scores = torch.full((batch_size, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch_size)]
    for t in range(1, steps + 1):
        logp = F.log_softmax(step(ids).float(), dim=-1)  # (B*K, V)
        logp = _block_ngrams(logp, ids, no_repeat_ngram_size)
        V = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(batch_size, K * V)  # (B, K*V)
        top, flat = cand.topk(2 * K, dim=-1)  # room for beams that end here
        new_ids, new_scores = [], []
        for b in range(batch_size):
            row_ids, row_scores = [], []
            for s, f in zip(top[b].tolist(), flat[b].tolist()):
                if s == float("-inf"):
                    break
                beam, tok = divmod(f, V)
                seq = ids[b * K + beam].tolist() + [tok]
                if tok == eos_id or t == steps:
                    finished[b].append((s / (len(seq) - start) ** length_penalty, seq))
                else:
                    row_ids.append(seq)
                    row_scores.append(s)
                if len(row_ids) == K:
                    break
            while len(row_ids) < K:  # pad dead beams so shapes stay fixed
                row_ids.append(ids[b * K].tolist() + [eos_id])
                row_scores.append(float("-inf"))
            new_ids += row_ids
            new_scores.append(row_scores)
        ids = torch.tensor(new_ids, dtype=torch.long, device=device)
        scores = torch.tensor(new_scores, device=device)
        # Stop when every sample has K finished hypotheses better than any live beam can get.
        if all(len(f) >= K for f in finished) and all(
            max(s for s, _ in finished[b]) >= (scores[b].max().item() / max(1, t) ** length_penalty
                                               if length_penalty > 0 else scores[b].max().item())
            for b in range(batch_size)
        ):
            break
    best = []
    for b in range(batch_size):
        if not finished[b]:  # nothing ended: take the best live beam
            finished[b].append((scores[b, 0].item(), ids[b * K].tolist()))
        best.append(max(finished[b], key=lambda x: x[0])[1])
    T = max(len(s) for s in best)
    return torch.tensor([s + [eos_id] * (T - len(s)) for s in best], dtype=torch.long, device=device)
