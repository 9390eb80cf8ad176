"""Visual question answering networks on the shared patch encoder: a fusion classifier and a generator.

:class:`FusionVQA` (METER, CVPR 2022, arXiv:2111.02387; M3AE, MICCAI 2022,
arXiv:2209.07098): the question is encoded by a text encoder (the project's own
``text_transformer_*`` or a local Hugging Face one, ``hf_text``), fused with the patch
tokens by co-attention layers (:class:`medvl.heads.vqa.FusionEncoder`), pooled and
classified over an answer vocabulary (:class:`medvl.heads.vqa.AnswerClassifier`).

:class:`GenerativeVQA` is the report generator (:class:`ReportGenerator`: the
transformer decoder over a word vocabulary, or the prefix design on a local causal LM)
conditioned on the image and the question: the decoder reads ``question <answer>`` and
writes the answer, by greedy or beam search, or ranks a list of candidate answers by
their likelihood (as MUMC ranks its answer list: Li et al., "Masked Vision and Language
Pre-training with Unimodal and Multimodal Contrastive Losses for Medical Visual Question
Answering", MICCAI 2023, arXiv:2307.05314).

Plain torch: no Lightning. Images arrive normalised by the data pipeline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from medvl.encoders import create_encoder
from medvl.heads import generation
from medvl.heads.vqa import AnswerClassifier, FusionEncoder, QATokenizer, answer_log_likelihood
from medvl.networks._feature_cache import frozen_feature_cache, image_tokens
from medvl.networks._freeze import apply_freeze, frozen_to_eval
from medvl.networks.report import ReportGenerator

__all__ = ["FusionVQA", "GenerativeVQA"]

Tokens = Mapping[str, torch.Tensor]


class FusionVQA(nn.Module):
    """Image encoder ``visual``, question encoder ``text``, ``fusion`` layers and the answer ``head``.

    The classifier needs its answer vocabulary: give ``answers``, or call
    :meth:`set_answers` once it is known (the task does so in ``setup``).

    Args:
        answers: The answer vocabulary (normalised answers; the classifier's outputs).
        vision_encoder: Registry name of the image encoder, used when ``encoder`` is None.
        img_size: Input size of a created encoder, and of the images the fusion layers
            expect (their image position embedding has one entry per encoder token).
        in_chans: Input channels.
        vision_kwargs: Extra overrides for a created encoder.
        encoder: An encoder built elsewhere (e.g. read from an export), used as is.
        freeze: ``none``, ``all`` or ``partial`` (see :func:`medvl.networks._freeze.apply_freeze`).
        unfreeze_last: Blocks trained when ``freeze="partial"``.
        text_encoder: Registry name of the question encoder (``text_transformer_tiny``,
            ``hf_text`` with ``text_kwargs["model_path"]`` for a local Hugging Face model).
        text_kwargs: Overrides for the question encoder.
        text_module: A question encoder built elsewhere (e.g. a pretrained text tower), used
            as is instead of building ``text_encoder``.
        fusion_kwargs: ``dim``, ``depth``, ``num_heads``, ``dropout`` of the fusion layers.
        pool: How the classifier pools the image stream: ``spatial`` (default: the mean
            plus a position-preserving readout, which "which side?" and "which lobe?"
            need) or ``mean`` (METER's); see :class:`medvl.heads.vqa.AnswerClassifier`.
        spatial_channels: Values per image token kept by the ``spatial`` readout.
        feature_cache_mb: With ``freeze="all"`` (or ``"partial"``: the frozen trunk's tokens):
            megabytes of encoder tokens kept per input
            image (:mod:`medvl.networks._feature_cache`), so each image is encoded once
            rather than once per question and epoch; 0 (default) encodes every time.
    """

    def __init__(
        self,
        answers: Sequence[str] | None = None,
        *,
        vision_encoder: str = "vit_small_patch16",
        img_size: int = 224,
        in_chans: int = 1,
        vision_kwargs: dict[str, Any] | None = None,
        encoder: nn.Module | None = None,
        freeze: Literal["none", "all", "partial"] = "none",
        unfreeze_last: int = 2,
        text_encoder: str = "text_transformer_tiny",
        text_kwargs: dict[str, Any] | None = None,
        text_module: nn.Module | None = None,
        fusion_kwargs: dict[str, Any] | None = None,
        pool: Literal["mean", "spatial"] = "spatial",
        spatial_channels: int = 16,
        feature_cache_mb: float = 0.0,
    ) -> None:
        super().__init__()
        self.visual = encoder if encoder is not None else create_encoder(
            vision_encoder, img_size=img_size, in_chans=in_chans, **(vision_kwargs or {}))
        self.freeze, self.unfreeze_last = freeze, unfreeze_last
        apply_freeze(self.visual, freeze, unfreeze_last)
        self.feature_cache = frozen_feature_cache(self.visual, freeze, feature_cache_mb, unfreeze_last)
        self.text = text_module if text_module is not None else create_encoder(text_encoder, **(text_kwargs or {}))
        self.num_image_tokens = self._count_tokens(img_size, in_chans)
        self.fusion = FusionEncoder(self.text.num_features, self.visual.num_features,
                                    num_image_tokens=self.num_image_tokens, **(fusion_kwargs or {}))
        self.head_kwargs = {"dropout": (fusion_kwargs or {}).get("dropout", 0.1), "pool": pool,
                            "num_image_tokens": self.num_image_tokens, "spatial_channels": spatial_channels}
        self.answers: list[str] = []
        self.head: AnswerClassifier | None = None
        if answers is not None:
            self.set_answers(answers)

    def set_answers(self, answers: Sequence[str]) -> None:
        """(Re)build the answer classifier for the vocabulary ``answers``."""
        if not answers:
            raise ValueError("FusionVQA needs a non-empty answer vocabulary")
        if len(set(answers)) != len(answers):
            raise ValueError("the answer vocabulary repeats answers")
        self.answers = list(answers)
        device = self.fusion.text_proj.weight.device
        self.head = AnswerClassifier(self.fusion.dim, len(self.answers), **self.head_kwargs).to(device)

    def _count_tokens(self, img_size: int, in_chans: int) -> int:
        """Tokens ``visual.forward_features`` gives for one image (a dry run in eval mode)."""
        mode = self.visual.training
        self.visual.eval()
        with torch.no_grad():
            n = self.visual.forward_features(torch.zeros(1, in_chans, img_size, img_size)).shape[1]
        self.visual.train(mode)
        return int(n)

    @property
    def tokenizer(self):
        """The question encoder's picklable tokenizer: ``texts -> {"input_ids", "attention_mask"}``."""
        return self.text.tokenizer

    def train(self, mode: bool = True) -> FusionVQA:
        super().train(mode)
        frozen_to_eval(self.visual, self.freeze, self.unfreeze_last)  # the frozen part runs as at inference
        return self

    def forward(self, image: torch.Tensor, question: Tokens | Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"logits": (B, num_answers)}`` for normalised images ``(B, C, S, S)`` and questions.

        ``question``: token dict from :attr:`tokenizer`, or raw strings (tokenised here).
        """
        if self.head is None:
            raise RuntimeError("the answer classifier has no vocabulary yet: pass answers= or call set_answers()")
        if not isinstance(question, Mapping):
            question = self.tokenizer(list(question))
        ids = question["input_ids"].to(image.device)
        mask = question.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.to(image.device)
        patches = image_tokens(self.visual, image, self.freeze, self.feature_cache)  # (B, P + N, D)
        words, mask = self.text.forward_tokens(ids, mask)  # (B, L, Dt), (B, L)
        t, v = self.fusion(words, mask, patches)
        return {"logits": self.head(t, mask, v)}

    @torch.no_grad()
    def answer(self, image: torch.Tensor, question: Tokens | Sequence[str]) -> list[str]:
        """The most likely vocabulary answer per question."""
        idx = self(image, question)["logits"].argmax(-1).tolist()
        return [self.answers[i] for i in idx]


class GenerativeVQA(ReportGenerator):
    """A :class:`ReportGenerator` that reads ``question <answer>`` and writes the answer.

    Takes the arguments of :class:`ReportGenerator`; the word vocabulary (``vocab``, or
    :meth:`set_vocab`) must hold :data:`medvl.heads.vqa.ANSWER_TOKEN`.

    Args:
        max_question_length: Question tokens kept.
        max_answer_length: Answer tokens generated at most (``<eos>`` excluded).
        **kwargs: :class:`ReportGenerator`'s arguments (``max_length`` is derived).
    """

    def __init__(self, *, max_question_length: int = 32, max_answer_length: int = 16, **kwargs: Any) -> None:
        self.max_question_length, self.max_answer_length = max_question_length, max_answer_length
        super().__init__(max_length=max_question_length + max_answer_length + 8, **kwargs)

    @property
    def qa_tokenizer(self) -> QATokenizer:
        """The picklable ``(questions, answers) -> {"input_ids", "attention_mask", "answer_mask"}`` tokenizer."""
        self._require_decoder()
        return QATokenizer(self.tokenizer, self.max_question_length, self.max_answer_length)

    def forward(self, image: torch.Tensor, tokens: Tokens | tuple[Sequence[str], Sequence[str]]
                ) -> dict[str, torch.Tensor]:
        """Teacher-forced logits of the answer tokens.

        Args:
            image: Normalised images ``(B, C, S, S)``.
            tokens: :attr:`qa_tokenizer` output, or ``(questions, answers)`` strings.

        Returns:
            ``{"logits": (B, T-1, V), "targets": (B, T-1)}``; targets are -100 except at
            the answer tokens (the question is context, not a target).
        """
        if not isinstance(tokens, Mapping):
            tokens = self.qa_tokenizer(*tokens)
        ids = tokens["input_ids"].to(image.device)
        mask = tokens["attention_mask"].to(image.device)
        logits = self.decoder(ids[:, :-1], self.visual_context(image), attention_mask=mask[:, :-1])
        targets = ids[:, 1:].masked_fill(tokens["answer_mask"].to(image.device)[:, 1:] == 0, -100)
        return {"logits": logits, "targets": targets}

    @torch.no_grad()
    def answer(self, image: torch.Tensor, questions: Sequence[str], *,
               decoding: Literal["greedy", "beam"] = "greedy", num_beams: int = 3) -> list[str]:
        """Generated answers, one per question (questions of equal prompt length decode together)."""
        if decoding not in ("greedy", "beam"):
            raise ValueError(f"decoding must be 'greedy' or 'beam', got {decoding!r}")
        qa = self.qa_tokenizer
        ctx = self.visual_context(image)  # (B, L, dim)
        prompts = [qa.prompt(q) for q in questions]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            groups[len(p)].append(i)
        out: list[str] = [""] * len(prompts)
        banned = sorted(qa.banned_ids())

        def step(ids: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            logits = self.decoder(ids, ctx)[:, -1]
            logits[:, banned] = float("-inf")  # never write padding, <bos> or the separator
            return logits

        for T0, rows in groups.items():
            prefix = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=image.device)
            sub = ctx[rows]
            common = dict(bos_id=qa.bos_id, eos_id=qa.eos_id, max_length=T0 + self.max_answer_length + 1,
                          device=image.device, prefix=prefix)
            if decoding == "beam":
                sub_k = sub.repeat_interleave(num_beams, dim=0)
                ids = generation.beam_search(lambda t: step(t, sub_k), len(rows),
                                             num_beams=num_beams, **common)
            else:
                ids = generation.greedy(lambda t: step(t, sub), len(rows), **common)
            for i, row in zip(rows, ids[:, T0:]):
                out[i] = qa.decode(row)
        return out

    @torch.no_grad()
    def rank(self, image: torch.Tensor, questions: Sequence[str], candidates: Sequence[str]) -> list[str]:
        """The candidate answer of highest likelihood (summed token log-probabilities) per question."""
        if not candidates:
            raise ValueError("rank needs at least one candidate answer")
        qa = self.qa_tokenizer
        ctx = self.visual_context(image)
        out = []
        for i, q in enumerate(questions):
            tokens = qa([q] * len(candidates), list(candidates))
            k = len(candidates)
            res = self.decoder(tokens["input_ids"][:, :-1].to(image.device), ctx[i: i + 1].expand(k, -1, -1),
                               attention_mask=tokens["attention_mask"][:, :-1].to(image.device))
            targets = tokens["input_ids"][:, 1:].masked_fill(tokens["answer_mask"][:, 1:] == 0, -100)
            out.append(candidates[int(answer_log_likelihood(res, targets.to(image.device)).argmax())])
        return out
