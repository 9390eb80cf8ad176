"""Radiology report generation: the task around :class:`medvl.networks.ReportGenerator`.

The network (the shared patch encoder, random or read from an export folder or a medvl
task checkpoint through :func:`medvl.encoders.source.read_encoder_source`; frozen,
partly frozen or trained; and a report decoder of :mod:`medvl.heads.report_decoder`)
lives in :mod:`medvl.networks`. This task adds teacher-forced next-token cross-entropy
(:class:`medvl.losses.CaptioningLoss`) on the datamodule's text field (``text_key``:
findings, impression or the whole report), AdamW with the encoder at a fraction of the
decoder's learning rate, LLaVA-Med's two stages for the prefix LM (``lm_stage1_epochs``
epochs train only the projector, then the LM joins), and the evaluation: validation and
test generate with the configured strategy and score with :mod:`medvl.metrics.nlg`
(BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) and :mod:`medvl.metrics.clinical` (CheXpert-
observation clinical efficacy); the test writes the generated reports, a JSON and a
Markdown table of the metrics. ``medvl predict`` writes ``predictions.jsonl`` (study id,
generated report).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import lightning as L
import torch

from medvl.data.labels import CHEXPERT_LABELS
from medvl.data.vocab import WordTokenizer
from medvl.losses import CaptioningLoss
from medvl.models._compile import ENCODER_METHODS, compile_in_place
from medvl.models._health import RunHealth, RunHealthHooks
from medvl.models._encoder import PretrainedSourceHooks, read_pretrained_encoder
from medvl.models._reporting import gather_rows, out_dir, write_jsonl
from medvl.networks import ReportGenerator
from medvl.optim import adamw, param_groups, record_shapes, warmup_cosine

__all__ = ["ReportGeneration"]

log = logging.getLogger(__name__)


class ReportGeneration(PretrainedSourceHooks, RunHealthHooks, L.LightningModule):
    """Image-to-report generation on the shared patch encoder; the network is ``self.model``.

    Args:
        pretrained: Export folder or medvl task checkpoint whose encoder (architecture,
            input size, preprocessing and weights) starts training; None: random init
            of ``vision_encoder``.
        vision_encoder: Registry name without ``pretrained``.
        img_size: Square input size of the data (linked from the data module); None: the
            pretrained encoder's, else 224. A value that disagrees with ``pretrained``
            is an error naming both.
        in_chans: Image channels of the data; None: the pretrained encoder's, else 1.
        image_mean: Mean the data pipeline subtracted (recorded; the task does not
            normalise); None: the pretrained encoder's, else 0.5.
        image_std: Std the data pipeline divided by; None: the pretrained encoder's, else 0.25.
        window: DICOM window the data pipeline applied; None: the pretrained encoder's,
            else each file's own.
        label_names: The data's label columns (recorded; report generation does not use them).
        vision_kwargs: Extra encoder overrides (on top of the pretrained encoder's).
        freeze: ``none`` trains the encoder, ``all`` freezes it, ``partial`` trains only
            its last ``unfreeze_last`` blocks and final norm (``norm``, or ``fc_norm``).
        unfreeze_last: Blocks trained when ``freeze="partial"``.
        decoder: ``transformer`` (cross-attention, optional memory) or ``prefix_lm``.
        decoder_kwargs: Overrides for the decoder (e.g. ``dim``, ``depth``,
            ``memory_slots`` for the transformer; ``num_prefix_tokens`` for the prefix LM).
        lm_path: Local Hugging Face causal LM folder for ``decoder="prefix_lm"``.
        lm_stage1_epochs: Prefix LM: epochs training only the projector before the LM
            is unfrozen (LLaVA-Med stage 1); None keeps the LM frozen throughout.
        vocab: Word vocabulary of the transformer decoder; None builds it from the
            training split's texts at set-up (then saved with the checkpoint).
        vocab_min_freq: Minimum count of a word to enter the vocabulary.
        max_length: Longest report in tokens, ``<bos>``/``<eos>`` included.
        lr: Peak learning rate (decoder).
        encoder_lr_scale: Encoder learning rate relative to ``lr``.
        weight_decay: Decoupled weight decay (norms, biases, embeddings exempt).
        warmup_fraction: Share of steps in linear warm-up.
        label_smoothing: Cross-entropy label smoothing.
        decoding: ``greedy``, ``beam`` or ``sample`` for validation, test and predict.
        num_beams: Beam width.
        length_penalty: Beam-search length normalisation exponent.
        no_repeat_ngram_size: Forbid repeating any n-gram of this size (0: off).
        temperature: Sampling temperature.
        top_k: Sampling top-k (0: off).
        top_p: Sampling nucleus mass (1: off).
        max_eval_batches: Generate for at most this many batches per validation epoch
            (decoding is the slow part); None: all. The test always uses everything.
        ce_observations: CheXpert observation names the clinical-efficacy macro averages
            run over (micro too); None: all 14, the convention of MIMIC-CXR papers. A
            dataset that never mentions some observations (the synthetic one has seven)
            should list the ones it has, or their F1 of 0 caps the macro average.
        feature_cache_mb: With ``freeze: all`` (``partial``: the frozen trunk's output, the trained
            blocks run each step): megabytes of encoder tokens kept per input image,
            so each image is encoded once per run (not once per epoch, and for VQA once per
            question); 0 (default) encodes every time. Keys are digests of the input tensor
            (augmented images miss, never collide); a resumed run re-encodes in other batches,
            so it matches an uninterrupted one to float rounding, not bit for bit.
        compile: ``torch.compile`` the image encoder's ``forward_features`` (what the network
            calls) in place: True for the default mode,
            or a mode name (CPU bf16 fast path: ``max-autotune-no-cudagraphs``).
    """

    text_fields = ("report",)
    """Sample fields the task reads text from: every record must have one (the data module checks)."""

    def __init__(
        self,
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
        decoder: Literal["transformer", "prefix_lm"] = "transformer",
        decoder_kwargs: dict[str, Any] | None = None,
        lm_path: str | None = None,
        lm_stage1_epochs: int | None = 1,
        vocab: list[str] | None = None,
        vocab_min_freq: int = 3,
        max_length: int = 128,
        lr: float = 5e-4,
        encoder_lr_scale: float = 0.1,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        label_smoothing: float = 0.0,
        decoding: Literal["greedy", "beam", "sample"] = "beam",
        num_beams: int = 3,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 3,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_eval_batches: int | None = None,
        ce_observations: list[str] | None = None,
        compile: bool | str = False,
        feature_cache_mb: float = 0.0,
    ) -> None:
        super().__init__()
        if decoder == "prefix_lm" and not lm_path:
            raise ValueError("decoder='prefix_lm' needs lm_path (a local Hugging Face causal LM folder)")
        if decoding not in ("greedy", "beam", "sample"):
            raise ValueError(f"decoding must be 'greedy', 'beam' or 'sample', got {decoding!r}")
        unknown = sorted(set(ce_observations or ()) - set(CHEXPERT_LABELS))
        if unknown:
            raise ValueError(f"ce_observations: unknown {unknown}; known: {list(CHEXPERT_LABELS)}")
        self.save_hyperparameters()
        encoder = read_pretrained_encoder(self.hparams, "ReportGeneration")
        hp = self.hparams
        hp.label_names = None if label_names is None else list(label_names)
        self.model = ReportGenerator(
            vision_encoder=hp.vision_encoder, img_size=hp.img_size, in_chans=hp.in_chans,
            vision_kwargs=hp.vision_kwargs, encoder=encoder, freeze=freeze, unfreeze_last=unfreeze_last,
            decoder=decoder, decoder_kwargs=decoder_kwargs, vocab=vocab if decoder == "transformer" else None,
            lm_path=lm_path, train_lm=lm_stage1_epochs == 0, max_length=max_length,
            feature_cache_mb=feature_cache_mb,
        )
        compile_in_place(self.model.visual, compile, ENCODER_METHODS)  # state-dict keys stay "model.visual.*"
        self.loss_fn = CaptioningLoss(label_smoothing=label_smoothing)
        self._eval: list[dict[str, Any]] = []
        self.health = RunHealth()
        self._predictions: list[dict[str, str]] = []

    # -- construction -----------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if self.model.decoder is not None:
            return
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or not hasattr(dm, "train_texts"):
            raise ValueError("ReportGeneration needs `vocab`, or a datamodule with train_texts() to build it")
        tok = WordTokenizer.build(dm.train_texts(), min_freq=self.hparams.vocab_min_freq, max_length=self.hparams.max_length)
        self.hparams.vocab = tok.vocab  # saved with the checkpoint: reloads without the data
        log.info("report vocabulary: %d words (min count %d)", len(tok), self.hparams.vocab_min_freq)
        self.model.set_vocab(tok.vocab)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # the run-health counters (RunHealthHooks)
        saved = checkpoint.get("hyper_parameters", {}).get("vocab")
        if self.hparams.decoder == "transformer" and saved and self.model.vocab != saved:
            self.hparams.vocab = saved
            self.model.set_vocab(saved)

    def tokenizers(self) -> dict[str, Any]:
        """``{"report": tokenizer}``: the decoder's picklable tokenizer, run in loader workers.

        The transformer decoder's vocabulary exists once :meth:`setup` has run (Lightning
        calls it before it asks for dataloaders); before that there is nothing to give.
        """
        if self.model.tokenizer is None:
            log.debug("no report vocabulary yet: reports are tokenised in the steps")
            return {}
        return {"report": self.model.tokenizer}

    # -- forward ------------------------------------------------------------------------

    @staticmethod
    def _tokens(batch: dict[str, Any]) -> Any:
        """The batch's report tokens when the loader made them, else the raw texts."""
        return batch["report_tokens"] if "report_tokens" in batch else batch["report"]

    def forward(self, image: torch.Tensor, report: Any) -> dict[str, torch.Tensor]:
        """Teacher-forced ``{"logits": (B, T-1, V), "targets": (B, T-1)}`` (tokens or raw texts)."""
        return self.model(image, report)

    def decoding_options(self) -> dict[str, Any]:
        """The configured decoding, as keyword arguments of :meth:`ReportGenerator.generate`."""
        hp = self.hparams
        keys = ("decoding", "num_beams", "length_penalty", "no_repeat_ngram_size", "temperature", "top_k", "top_p",
                "max_length")
        return {k: hp[k] for k in keys}

    def generate(self, image: torch.Tensor, **overrides: Any) -> list[str]:
        """Reports for a batch of normalised images with the configured (or overridden) decoding."""
        return self.model.generate(image, **{**self.decoding_options(), **overrides})

    # -- training -----------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        stage1 = self.hparams.lm_stage1_epochs
        if self.hparams.decoder == "prefix_lm" and stage1 is not None:
            train_lm = self.current_epoch >= stage1
            if train_lm != self.model.train_lm:
                self.model.set_train_lm(train_lm)
                log.info("epoch %d: %s", self.current_epoch,
                         "stage 2, training projector and LM" if train_lm else "stage 1, projector only")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.health.count(self, batch)
        if "image" not in batch:
            return self.health.empty_step(self)
        loss = self.loss_fn(**self.model(batch["image"], self._tokens(batch)))
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
        # Frozen encoder parts never train; the staged LM is kept (unfrozen at stage 2).
        groups = (param_groups(self.model.visual, weight_decay=hp.weight_decay, lr=hp.lr * hp.encoder_lr_scale)
                  + param_groups(self.model.decoder, weight_decay=hp.weight_decay, lr=hp.lr, skip_frozen=False))
        opt = adamw(groups, lr=hp.lr, betas=(0.9, 0.98))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total_steps=total, warmup_steps=int(hp.warmup_fraction * total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation ---------------------------------------------------------------------

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        self.health.count(self, batch)
        if "image" not in batch:
            return
        loss = self.loss_fn(**self.model(batch["image"], self._tokens(batch)))
        self.log(f"{stage}/loss", loss, batch_size=batch["image"].shape[0])
        limit = self.hparams.max_eval_batches
        if stage == "val" and limit is not None and batch_idx >= limit:
            return
        for sid, hyp, ref in zip(batch["study_id"], self.generate(batch["image"]), batch["report"]):
            self._eval.append({"study_id": sid, "generated": hyp, "reference": ref})

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _score(self, stage: str) -> dict[str, float]:
        self.health.report(self, stage)
        rows, self._eval = self._eval, []
        rows = gather_rows(self.trainer, rows)
        if not rows:
            return {}
        from medvl.metrics.clinical import clinical_efficacy
        from medvl.metrics.nlg import compute_nlg

        hyps, refs = [r["generated"] for r in rows], [r["reference"] for r in rows]
        metrics = {**compute_nlg(hyps, refs), **clinical_efficacy(hyps, refs, self.hparams.ce_observations)}
        metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, rank_zero_only=True)
        if stage == "test" and self.trainer.is_global_zero:
            self._write_test_report(rows, metrics)
        return metrics

    def _write_test_report(self, rows: list[dict[str, str]], metrics: dict[str, float]) -> None:
        from rich.console import Console
        from rich.table import Table

        out = out_dir(self.trainer)
        write_jsonl(out / "test_reports.jsonl", rows)
        (out / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
        headline = [k for k in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider",
                                "ce_micro_f1", "ce_macro_f1", "ce_micro_precision", "ce_micro_recall") if k in metrics]
        md = ["| metric | value |", "|---|---:|", *(f"| {k} | {metrics[k]:.4f} |" for k in headline)]
        (out / "test_metrics.md").write_text("\n".join(md) + "\n")
        table = Table(title=f"Report generation (test split, {len(rows)} studies, {self.hparams.decoding} decoding)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k in headline:
            table.add_row(k, f"{metrics[k]:.4f}")
        console = Console()
        console.print(table)
        console.print(f"generated reports and metrics written to {out}")

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, str]]:
        self.health.count(self, batch)
        if "image" not in batch:  # every sample of the batch was unreadable
            return []
        rows = [{"study_id": sid, "report": hyp} for sid, hyp in zip(batch["study_id"], self.generate(batch["image"]))]
        self._predictions.extend(rows)
        return rows

    def on_predict_epoch_end(self) -> None:
        rows, self._predictions = self._predictions, []
        path = write_jsonl(out_dir(self.trainer) / "predictions.jsonl", rows)
        log.info("wrote %d generated reports to %s", len(rows), path)
