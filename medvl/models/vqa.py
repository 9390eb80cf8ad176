"""Medical visual question answering: the task around :class:`medvl.networks.FusionVQA` and ``GenerativeVQA``.

Two heads on the shared patch encoder (random, or read from an export folder or a medvl
task checkpoint through :func:`medvl.encoders.source.read_encoder_source`; frozen,
partly frozen or trained, as in report generation):

- ``head="fusion"``: METER/M3AE-style co-attention over the question's tokens and the
  patch tokens, classified over an answer vocabulary (:class:`medvl.losses.VQALoss`:
  BCE on soft scores or cross-entropy).
- ``head="generative"``: a report decoder (the word-level transformer or the prefix
  design on a local causal LM) reads the question and writes the answer (greedy or
  beam search), or ranks candidate answers by likelihood (``answer_mode="rank"``, as
  MUMC ranks its answer list): the closed questions over the closed answers seen in
  training (``rank_candidates="closed"``, open questions generated) or every question
  over the whole answer vocabulary (``"all"``).

The answer vocabulary is the data module's (:meth:`medvl.datamodules.VQADataModule.answer_vocabulary`:
the training split's normalised answers unless a flag that says it leaks asks for the
test answers too) and travels in the checkpoint. Validation and test score with
:mod:`medvl.metrics.vqa` (closed/open/overall accuracy, open token recall and F1,
BLEU-1, per question and content type, bootstrap 95% intervals); the test writes
``test_metrics.json`` (with every evaluation choice: closed rule, vocabulary policy,
validation split origin, decoding, the checkpoint scored, answers outside the
vocabulary), ``test_metrics.md`` and ``test_answers.jsonl``. ``medvl predict`` writes
``predictions.jsonl`` (question id, study id, question, answer). Checkpoints are chosen
on the validation split (``val/overall_accuracy`` in the recipes); the test split is
never looked at before the test.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import lightning as L
import torch

from medvl.data.vocab import SPECIAL_TOKENS, WordTokenizer
from medvl.heads.vqa import ANSWER_TOKEN
from medvl.losses import CaptioningLoss, VQALoss
from medvl.models._compile import ENCODER_METHODS, compile_in_place
from medvl.models._health import RunHealth, RunHealthHooks
from medvl.models._encoder import PretrainedSourceHooks, read_pretrained_encoder, read_pretrained_text
from medvl.models._reporting import gather_rows, out_dir, write_jsonl
from medvl.networks import FusionVQA, GenerativeVQA
from medvl.optim import adamw, param_groups, record_shapes, warmup_cosine

__all__ = ["VQA"]

log = logging.getLogger(__name__)

HEADS = ("fusion", "generative")
_GROUPS = ("question_type", "content_type")


class VQA(PretrainedSourceHooks, RunHealthHooks, L.LightningModule):
    """Visual question answering on the shared patch encoder; the network is ``self.model``.

    Args:
        head: ``fusion`` (answer classifier) or ``generative`` (a report decoder answers).
        pretrained: Export folder or medvl task checkpoint whose encoder starts training;
            None: random init of ``vision_encoder``.
        vision_encoder: Registry name without ``pretrained``.
        img_size: Square input size of the data (linked from the data module); None: the
            pretrained encoder's, else 224.
        in_chans: Image channels of the data; None: the pretrained encoder's, else 1.
        image_mean: Mean the data pipeline subtracted (recorded; the task does not normalise).
        image_std: Std the data pipeline divided by.
        window: DICOM window the data pipeline applied.
        label_names: The data's label columns (recorded; VQA does not use them).
        vision_kwargs: Extra encoder overrides (on top of the pretrained encoder's).
        freeze: ``none`` trains the encoder, ``all`` freezes it, ``partial`` trains only
            its last ``unfreeze_last`` blocks and final norm.
        unfreeze_last: Blocks trained when ``freeze="partial"``.
        text_encoder: Fusion head: registry name of the question encoder; None (default):
            ``text_pretrained``'s, else ``text_transformer_tiny`` (``hf_text`` with
            ``text_kwargs.model_path`` for a local Hugging Face encoder such as the bundled MiniLM).
        text_pretrained: Fusion head: an export folder or a medvl task checkpoint with a
            text tower (``exports/quickstart``, which ``make demo`` writes from its contrastive
            checkpoint) whose tower starts the question encoder, as METER and M3AE start theirs from a
            pretrained text encoder: it already reads finding names, sides and negations.
            Its ``text_encoder`` and ``text_kwargs`` are taken from the checkpoint; a
            configured ``text_encoder`` that differs is an error.
        text_kwargs: Fusion head: overrides for the question encoder.
        fusion_kwargs: Fusion head: ``dim``, ``depth``, ``num_heads``, ``dropout``.
        pool: Fusion head: ``spatial`` (default; the image stream's mean plus a
            position-preserving readout, which side and lobe questions need) or ``mean``
            (METER's; see :class:`medvl.heads.vqa.AnswerClassifier`).
        spatial_channels: Fusion head: values per image token of the ``spatial`` readout.
        loss: Fusion head: ``bce`` (soft scores, summed over answers) or ``ce``.
        answers: The answer vocabulary; None takes the data module's at set-up (then
            saved with the checkpoint).
        closed_candidates: Answers ranked for closed questions (``answer_mode="rank"``,
            ``rank_candidates="closed"``); None takes the data module's at set-up.
        decoder: Generative head: ``transformer`` (word vocabulary) or ``prefix_lm``.
        decoder_kwargs: Generative head: decoder overrides (``dim``, ``depth``, ...).
        lm_path: Local Hugging Face causal LM folder for ``decoder="prefix_lm"``.
        lm_stage1_epochs: Prefix LM: epochs training only the projector before the LM
            joins; None keeps the LM frozen.
        vocab: Generative transformer: its word vocabulary; None builds it from the
            training questions and answers at set-up.
        vocab_min_freq: Minimum count of a word to enter that vocabulary.
        max_question_length: Question tokens kept by the generative head.
        max_answer_length: Answer tokens the generative head writes at most.
        answer_mode: Generative head: ``generate`` or ``rank`` (see the module docstring).
        rank_candidates: ``closed`` or ``all`` (see the module docstring).
        decoding: Generative head: ``greedy`` or ``beam``.
        num_beams: Beam width.
        lr: Peak learning rate (head).
        encoder_lr_scale: Encoder learning rate relative to ``lr``.
        text_lr_scale: Fusion head: the question encoder's learning rate relative to ``lr``
            (METER trains its pretrained text encoder at a fraction of the fusion layers'
            rate; a pretrained ``hf_text`` encoder wants about 0.05 of a 1e-3 ``lr``).
        weight_decay: Decoupled weight decay (norms, biases, embeddings exempt).
        warmup_fraction: Share of steps in linear warm-up.
        label_smoothing: Cross-entropy label smoothing (``loss="ce"`` and the generative head).
        n_bootstrap: Bootstrap resamples of the test metrics' 95% intervals (0: none).
        feature_cache_mb: With ``freeze: all`` (``partial``: the frozen trunk's output, the trained
            blocks run each step): megabytes of encoder tokens kept per input image,
            so each image is encoded once per run (not once per epoch, and for VQA once per
            question); 0 (default) encodes every time. Keys are digests of the input tensor
            (augmented images miss, never collide); a resumed run re-encodes in other batches,
            so it matches an uninterrupted one to float rounding, not bit for bit.
        compile: ``torch.compile`` the image encoder's ``forward_features`` (what the network
            calls) in place (True or a mode name).
    """

    def __init__(
        self,
        head: Literal["fusion", "generative"] = "fusion",
        pretrained: str | None = None,
        vision_encoder: str = "vit_small_patch16",
        img_size: int | None = None,
        in_chans: int | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        window: tuple[float, float] | str | None = None,
        label_names: list[str] | None = None,
        vision_kwargs: dict[str, Any] | None = None,
        freeze: Literal["none", "all", "partial"] = "none",
        unfreeze_last: int = 2,
        text_encoder: str | None = None,
        text_kwargs: dict[str, Any] | None = None,
        text_pretrained: str | None = None,
        fusion_kwargs: dict[str, Any] | None = None,
        pool: Literal["mean", "spatial"] = "spatial",
        spatial_channels: int = 16,
        loss: Literal["bce", "ce"] = "bce",
        answers: list[str] | None = None,
        closed_candidates: list[str] | None = None,
        decoder: Literal["transformer", "prefix_lm"] = "transformer",
        decoder_kwargs: dict[str, Any] | None = None,
        lm_path: str | None = None,
        lm_stage1_epochs: int | None = 1,
        vocab: list[str] | None = None,
        vocab_min_freq: int = 1,
        max_question_length: int = 32,
        max_answer_length: int = 16,
        answer_mode: Literal["generate", "rank"] = "generate",
        rank_candidates: Literal["closed", "all"] = "closed",
        decoding: Literal["greedy", "beam"] = "greedy",
        num_beams: int = 3,
        lr: float = 5e-4,
        encoder_lr_scale: float = 0.1,
        text_lr_scale: float = 1.0,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        label_smoothing: float = 0.0,
        n_bootstrap: int = 1000,
        compile: bool | str = False,
        feature_cache_mb: float = 0.0,
    ) -> None:
        super().__init__()
        choices = {"head": (head, HEADS), "answer_mode": (answer_mode, ("generate", "rank")),
                   "rank_candidates": (rank_candidates, ("closed", "all")), "decoding": (decoding, ("greedy", "beam")),
                   "loss": (loss, ("bce", "ce")), "pool": (pool, ("mean", "spatial"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"VQA: {name} must be one of {allowed}, got {value!r}")
        if head == "generative" and text_pretrained is not None:
            raise ValueError("VQA: text_pretrained is for the fusion head (the generative head's decoder reads the question)")
        if head == "fusion" and answer_mode == "rank":
            raise ValueError("VQA: answer_mode='rank' is for the generative head (the fusion head classifies)")
        self.save_hyperparameters()
        encoder = read_pretrained_encoder(self.hparams, "VQA")
        hp = self.hparams
        hp.label_names = None if label_names is None else list(label_names)
        common = dict(vision_encoder=hp.vision_encoder, img_size=hp.img_size, in_chans=hp.in_chans,
                      vision_kwargs=hp.vision_kwargs, encoder=encoder, freeze=freeze, unfreeze_last=unfreeze_last,
                      feature_cache_mb=feature_cache_mb)
        if head == "fusion":
            text = read_pretrained_text(hp)
            self.model: FusionVQA | GenerativeVQA = FusionVQA(
                answers, text_encoder=hp.text_encoder, text_kwargs=hp.text_kwargs, text_module=text,
                fusion_kwargs=fusion_kwargs, pool=pool,
                spatial_channels=spatial_channels, **common)
            self.loss_fn: torch.nn.Module = VQALoss(loss, label_smoothing=label_smoothing if loss == "ce" else 0.0)
        else:
            self.model = GenerativeVQA(
                decoder=decoder, decoder_kwargs=decoder_kwargs, vocab=vocab if decoder == "transformer" else None,
                lm_path=lm_path, train_lm=lm_stage1_epochs == 0, max_question_length=max_question_length,
                max_answer_length=max_answer_length, **common)
            self.loss_fn = CaptioningLoss(label_smoothing=label_smoothing)
        compile_in_place(self.model.visual, compile, ENCODER_METHODS)
        self._index = {a: i for i, a in enumerate(answers or [])}
        self._rows: list[dict[str, Any]] = []
        self._predictions: list[dict[str, str]] = []
        self.health = RunHealth()

    # -- set-up ---------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        hp = self.hparams
        dm = self._trainer.datamodule if self._trainer is not None else None
        needs = hp.answers is None or (hp.head == "generative" and hp.decoder == "transformer" and hp.vocab is None)
        if needs and (dm is None or not hasattr(dm, "answer_vocabulary")):
            raise ValueError("VQA needs `answers` (and a generative `vocab`), or a VQA data module "
                             "(medvl.datamodules.VQADataModule) to build them from its training split")
        if hp.answers is None:
            self._set_answers(dm.answer_vocabulary())
            log.info("answer vocabulary: %d answers (%s)", len(hp.answers), dm.vqa_options().get("answer_vocabulary"))
        if hp.closed_candidates is None and dm is not None and hasattr(dm, "closed_candidates"):
            hp.closed_candidates = list(dm.closed_candidates())
        if hp.head == "generative" and hp.decoder == "transformer" and self.model.decoder is None:
            self._set_vocab(self._build_vocab(dm))

    def _set_answers(self, answers: list[str]) -> None:
        self.hparams.answers = list(answers)
        self._index = {a: i for i, a in enumerate(answers)}
        if isinstance(self.model, FusionVQA):
            self.model.set_answers(answers)

    def _build_vocab(self, dm: Any) -> list[str]:
        pairs = dm.train_questions()
        tok = WordTokenizer.build([t for qa in pairs for t in qa], min_freq=self.hparams.vocab_min_freq)
        return [*SPECIAL_TOKENS, ANSWER_TOKEN, *tok.vocab[len(SPECIAL_TOKENS):]]

    def _set_vocab(self, vocab: list[str]) -> None:
        self.hparams.vocab = list(vocab)
        self.model.set_vocab(vocab)
        log.info("question/answer word vocabulary: %d tokens", len(vocab))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # the run-health counters (RunHealthHooks)
        saved = checkpoint.get("hyper_parameters", {})
        if saved.get("answers") and saved["answers"] != self.hparams.answers:
            self._set_answers(saved["answers"])
        if saved.get("closed_candidates") is not None:
            self.hparams.closed_candidates = saved["closed_candidates"]
        if (self.hparams.head == "generative" and self.hparams.decoder == "transformer" and saved.get("vocab")
                and saved["vocab"] != self.model.vocab):
            self._set_vocab(saved["vocab"])

    def tokenizers(self) -> dict[str, Any]:
        """Run in the loader workers: the question encoder's (fusion) or the question-answer one (generative)."""
        if isinstance(self.model, FusionVQA):
            return {"question": self.model.tokenizer}
        if self.model.tokenizer is None:
            return {}
        return {"qa": self.model.qa_tokenizer}

    # -- training -----------------------------------------------------------------------

    def _targets(self, answers: list[str]) -> torch.Tensor:
        return torch.tensor([self._index.get(a, -1) for a in answers], dtype=torch.long, device=self.device)

    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        if isinstance(self.model, FusionVQA):
            out = self.model(batch["image"], batch.get("question_tokens") or batch["question"])
            return self.loss_fn(**out, targets=self._targets(batch["answer"]))
        tokens = batch.get("qa_tokens") or (batch["question"], batch["answer"])
        return self.loss_fn(**self.model(batch["image"], tokens))

    def on_train_epoch_start(self) -> None:
        stage1 = self.hparams.lm_stage1_epochs
        if self.hparams.head == "generative" and self.hparams.decoder == "prefix_lm" and stage1 is not None:
            train_lm = self.current_epoch >= stage1
            if train_lm != self.model.train_lm:
                self.model.set_train_lm(train_lm)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.health.count(self, batch)
        if "image" not in batch:
            return self.health.empty_step(self)
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return self.health.guard(self, loss)

    def on_train_epoch_end(self) -> None:
        self.health.report(self, "train")

    def configure_model(self) -> None:
        # After setup, before any strategy wraps the network: the weight-decay groups stay those of
        # the unwrapped network under FSDP (medvl.optim).
        record_shapes(self)

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.model.visual, weight_decay=hp.weight_decay, lr=hp.lr * hp.encoder_lr_scale)
        for name, module in self.model.named_children():
            if name != "visual":
                lr = hp.lr * (hp.text_lr_scale if name == "text" else 1.0)  # only the fusion head has one
                groups += param_groups(module, weight_decay=hp.weight_decay, lr=lr, skip_frozen=False)
        opt = adamw(groups, lr=hp.lr, betas=(0.9, 0.98))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total_steps=total, warmup_steps=int(hp.warmup_fraction * total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- answering ----------------------------------------------------------------------

    @torch.no_grad()
    def answer(self, batch: dict[str, Any]) -> list[str]:
        """The configured answers for a batch (normalised, as the references are)."""
        from medvl.metrics.vqa import normalize_answer

        hp = self.hparams
        image = batch["image"]
        if isinstance(self.model, FusionVQA):
            raw = self.model.answer(image, batch.get("question_tokens") or batch["question"])
        elif hp.answer_mode == "generate":
            raw = self.model.answer(image, batch["question"], decoding=hp.decoding, num_beams=hp.num_beams)
        elif hp.rank_candidates == "all":
            raw = self.model.rank(image, batch["question"], hp.answers)
        else:
            raw = self.model.answer(image, batch["question"], decoding=hp.decoding, num_beams=hp.num_beams)
            closed = [i for i, t in enumerate(batch["answer_type"]) if t == "closed"]
            if closed and not hp.closed_candidates:
                raise ValueError("rank_candidates='closed' but there are no closed candidate answers")
            if closed:
                ranked = self.model.rank(image[closed], [batch["question"][i] for i in closed], hp.closed_candidates)
                for i, a in zip(closed, ranked):
                    raw[i] = a
        return [normalize_answer(a) for a in raw]

    # -- evaluation ---------------------------------------------------------------------

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        self.health.count(self, batch)
        if "image" not in batch:
            return
        self.log(f"{stage}/loss", self._loss(batch), batch_size=batch["image"].shape[0])
        keys = ("question_id", "study_id", "question", "answer", "answer_type", *_GROUPS)
        for i, pred in enumerate(self.answer(batch)):
            row = {k: batch[k][i] for k in keys if k in batch}
            row["prediction"] = pred
            self._rows.append(row)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _score(self, stage: str) -> dict[str, float]:
        from medvl.metrics.vqa import vqa_scores

        self.health.report(self, stage)
        rows, self._rows = gather_rows(self.trainer, self._rows), []
        if not rows:
            return {}
        groups = {g: [r.get(g, "") for r in rows] for g in _GROUPS if any(r.get(g) for r in rows)}
        metrics = vqa_scores([r["prediction"] for r in rows], [r["answer"] for r in rows],
                             [r["answer_type"] for r in rows], groups=groups if stage == "test" else None,
                             n_bootstrap=self.hparams.n_bootstrap if stage == "test" else 0)
        vocab = set(self.hparams.answers or ())
        metrics["n_answers_outside_vocab"] = float(sum(r["answer"] not in vocab for r in rows))
        for k, v in metrics.items():
            if "/" not in k:
                self.log(f"{stage}/{k}", v, rank_zero_only=True, prog_bar=k == "overall_accuracy")
        if stage == "test" and self.trainer.is_global_zero:
            self._write_test_report(rows, metrics)
        return metrics

    def evaluation_options(self) -> dict[str, Any]:
        """Every choice behind the numbers: the data's rules, the head, decoding, the checkpoint."""
        hp = self.hparams
        dm = self._trainer.datamodule if self._trainer is not None else None
        opts: dict[str, Any] = dict(dm.vqa_options()) if dm is not None and hasattr(dm, "vqa_options") else {}
        opts.update(head=hp.head, answers_in_vocabulary=len(hp.answers or ()),
                    checkpoint=str(self.trainer.ckpt_path) if self.trainer.ckpt_path else "weights in memory")
        if hp.head == "fusion":
            opts.update(loss=hp.loss, image_pool=hp.pool, prediction="argmax over the answer vocabulary")
        else:
            opts.update(decoder=hp.decoder, answer_mode=hp.answer_mode, decoding=hp.decoding)
            if hp.decoding == "beam":
                opts["num_beams"] = hp.num_beams
            if hp.answer_mode == "rank":
                opts["rank_candidates"] = (f"closed questions over {len(hp.closed_candidates or ())} closed answers"
                                           if hp.rank_candidates == "closed" else
                                           f"all questions over {len(hp.answers or ())} answers")
        opts["confidence_intervals"] = f"percentile bootstrap, {hp.n_bootstrap} resamples of questions, 95%"
        return opts

    def _write_test_report(self, rows: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        from rich.console import Console
        from rich.table import Table

        from medvl.metrics.vqa import HEADLINE_METRICS, vqa_markdown

        out = out_dir(self.trainer)
        options = self.evaluation_options()
        write_jsonl(out / "test_answers.jsonl", rows)
        (out / "test_metrics.json").write_text(json.dumps({"metrics": metrics, "options": options}, indent=2))
        title = f"VQA ({self.hparams.head} head), test split, {len(rows)} questions"
        (out / "test_metrics.md").write_text(vqa_markdown(metrics, title=title, options=options))
        table = Table(title=title)
        for col in ("metric", "value", "95% CI"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for k in HEADLINE_METRICS:
            if k in metrics:
                ci = (f"{metrics[k + '_ci_low']:.3f}–{metrics[k + '_ci_high']:.3f}" if k + "_ci_low" in metrics else "")
                table.add_row(k, f"{metrics[k]:.4f}", ci)
        console = Console()
        console.print(table)
        console.print(f"questions: {int(metrics['n'])} ({int(metrics['n_closed'])} closed, {int(metrics['n_open'])} "
                      f"open, closed rule {options.get('closed_rule', '?')}); answers outside the vocabulary: "
                      f"{int(metrics['n_answers_outside_vocab'])}")
        console.print(f"answers and metrics written to {out}")

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        self.health.count(self, batch)
        if "image" not in batch:
            return []
        rows = [{"question_id": qid, "study_id": sid, "question": q, "answer": a}
                for qid, sid, q, a in zip(batch["question_id"], batch["study_id"], batch["question"], self.answer(batch))]
        self._predictions.extend(rows)
        return rows

    def on_predict_epoch_end(self) -> None:
        rows, self._predictions = self._predictions, []
        path = write_jsonl(out_dir(self.trainer) / "predictions.jsonl", rows)
        log.info("wrote %d answers to %s", len(rows), path)
