"""Radiology report generation as a LightningModule: patch encoder -> report decoder.

The shared patch encoder (random, from a medvl task checkpoint, or from an exported
encoder; frozen, partly frozen or trained) feeds one of the decoders of
:mod:`medvl.heads.report_decoder`: a transformer decoder with optional cross-modal
memory (R2Gen/R2GenCMN) or a prefix design on a local Hugging Face causal LM
(LLaVA-Med's two stages: ``lm_stage1_epochs`` epochs train only the projector, then the
LM joins). Training is teacher-forced next-token cross-entropy on the datamodule's text
field (``text_key``: findings, impression or the whole report). Validation and test
generate with the configured strategy and score with :mod:`medvl.metrics.nlg`
(BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) and :mod:`medvl.metrics.clinical` (CheXpert-
observation clinical efficacy); the test writes the generated reports, a JSON and a
Markdown table of the metrics. ``medvl predict`` writes ``predictions.jsonl`` (study id,
generated report).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F

from medvl.data.labels import CHEXPERT_LABELS
from medvl.data.vocab import WordTokenizer
from medvl.encoders import create_encoder
from medvl.heads import generation
from medvl.heads.report_decoder import PrefixLMDecoder, TransformerReportDecoder
from medvl.models._compile import compile_in_place
from medvl.models._optim import warmup_cosine

__all__ = ["ReportGeneration", "load_encoder_weights"]

log = logging.getLogger(__name__)

_ENCODER_HP = ("vision_encoder", "img_size", "in_chans", "vision_kwargs", "image_mean", "image_std")


def load_encoder_weights(source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Encoder hyper-parameters and weights from an export folder or a medvl task checkpoint.

    Returns:
        ``({vision_encoder, img_size, in_chans, vision_kwargs, image_mean, image_std}, state_dict)``.
    """
    path = Path(source)
    if path.is_dir():
        from safetensors.torch import load_file

        cfg = json.loads((path / "config.json").read_text())
        kwargs = dict(cfg["encoder_kwargs"])
        pre = cfg.get("preprocessing", {})
        hp = {"vision_encoder": cfg["architecture"], "img_size": kwargs.pop("img_size"),
              "in_chans": kwargs.pop("in_chans"), "vision_kwargs": kwargs,
              "image_mean": pre.get("mean", 0.0), "image_std": pre.get("std", 1.0)}
        return hp, load_file(str(path / "model.safetensors"))
    if not path.is_file():
        raise FileNotFoundError(f"{source}: neither an export folder nor a checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    saved = ckpt.get("hyper_parameters", {})
    missing = [k for k in _ENCODER_HP[:3] if k not in saved]
    if missing:
        raise ValueError(f"{source}: not a medvl task checkpoint (hyper-parameters lack {missing})")
    hp = {k: saved.get(k) for k in _ENCODER_HP}
    hp["vision_kwargs"] = hp["vision_kwargs"] or {}
    state = {k[len("visual."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("visual.")}
    return hp, state


class ReportGeneration(L.LightningModule):
    """Image-to-report generation on the shared patch encoder.

    Args:
        pretrained: Export folder or medvl task checkpoint whose encoder (architecture,
            input size, normalisation and weights) starts training; None: random init
            with the four arguments below.
        vision_encoder: Registry name without ``pretrained``.
        img_size: Input size without ``pretrained``.
        in_chans: Input channels without ``pretrained``.
        image_mean: Normalisation mean without ``pretrained``.
        image_std: Normalisation std without ``pretrained``.
        vision_kwargs: Extra encoder overrides.
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
        compile: ``torch.compile`` the image encoder in place: True for the default mode,
            or a mode name (CPU bf16 fast path: ``max-autotune-no-cudagraphs``).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        vision_encoder: str = "vit_small_patch16",
        img_size: int = 224,
        in_chans: int = 1,
        image_mean: float = 0.5,
        image_std: float = 0.25,
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
    ) -> None:
        super().__init__()
        if decoder == "prefix_lm" and not lm_path:
            raise ValueError("decoder='prefix_lm' needs lm_path (a local Hugging Face causal LM folder)")
        unknown = sorted(set(ce_observations or ()) - set(CHEXPERT_LABELS))
        if unknown:
            raise ValueError(f"ce_observations: unknown {unknown}; known: {list(CHEXPERT_LABELS)}")
        self.save_hyperparameters()
        weights = None
        if pretrained is not None:
            if Path(pretrained).exists():
                enc_hp, weights = load_encoder_weights(pretrained)
                enc_hp["vision_kwargs"] = {**enc_hp["vision_kwargs"], **(vision_kwargs or {})}
                self.hparams.update(enc_hp)
            else:  # reloading our own checkpoint: hyper-parameters already resolved
                log.warning("%s not found; building %s from hyper-parameters", pretrained, self.hparams.vision_encoder)
        hp = self.hparams
        self.visual = create_encoder(hp.vision_encoder, img_size=hp.img_size, in_chans=hp.in_chans,
                                     **(hp.vision_kwargs or {}))
        if weights is not None:
            self.visual.load_state_dict(weights)
        self._apply_freeze()
        compile_in_place(self.visual, compile)  # state-dict keys stay "visual.*"
        self.decoder: TransformerReportDecoder | PrefixLMDecoder | None = None
        self.tokenizer: WordTokenizer | PrefixLMDecoder | None = None
        if decoder == "prefix_lm":
            self._build_decoder()
        elif vocab is not None:
            self._build_decoder(vocab)
        self._eval: list[dict[str, Any]] = []
        self._predictions: list[dict[str, str]] = []

    # -- construction -----------------------------------------------------------------

    def _apply_freeze(self) -> None:
        mode = self.hparams.freeze
        if mode not in ("none", "all", "partial"):
            raise ValueError(f"freeze must be 'none', 'all' or 'partial', got {mode!r}")
        self.visual.requires_grad_(mode == "none")
        if mode == "partial":
            n = len(self.visual.blocks)
            for blk in list(self.visual.blocks)[max(0, n - self.hparams.unfreeze_last):]:
                blk.requires_grad_(True)
            self.visual.norm.requires_grad_(True)
            self.visual.fc_norm.requires_grad_(True)  # the final norm of fc_norm encoders (norm is then Identity)

    def _build_decoder(self, vocab: list[str] | None = None) -> None:
        hp = self.hparams
        kwargs = dict(hp.decoder_kwargs or {})
        if hp.decoder == "prefix_lm":
            self.decoder = PrefixLMDecoder(hp.lm_path, self.visual.num_features, max_length=hp.max_length,
                                           train_lm=hp.lm_stage1_epochs == 0, **kwargs)
            self.tokenizer = self.decoder
            self.bos_id, self.eos_id, self.pad_id = self.decoder.bos_id, self.decoder.eos_id, self.decoder.pad_id
        else:
            tok = WordTokenizer(vocab, max_length=hp.max_length)
            self.decoder = TransformerReportDecoder(len(tok), self.visual.num_features, max_length=hp.max_length, **kwargs)
            self.tokenizer = tok
            self.bos_id, self.eos_id, self.pad_id = tok.bos_id, tok.eos_id, tok.pad_id

    def setup(self, stage: str) -> None:
        if self.decoder is not None:
            return
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or not hasattr(dm, "train_texts"):
            raise ValueError("ReportGeneration needs `vocab`, or a datamodule with train_texts() to build it")
        tok = WordTokenizer.build(dm.train_texts(), min_freq=self.hparams.vocab_min_freq, max_length=self.hparams.max_length)
        self.hparams.vocab = tok.vocab  # saved with the checkpoint: reloads without the data
        log.info("report vocabulary: %d words (min count %d)", len(tok), self.hparams.vocab_min_freq)
        self._build_decoder(tok.vocab)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("vocab")
        if self.hparams.decoder == "transformer" and saved and (self.tokenizer is None or self.tokenizer.vocab != saved):
            self.hparams.vocab = saved
            self._build_decoder(saved)

    # -- forward ------------------------------------------------------------------------

    def visual_context(self, image: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, S, S)`` in [0, 1] -> decoder context (projected tokens)."""
        x = (image - self.hparams.image_mean) / self.hparams.image_std
        frozen = self.hparams.freeze == "all"
        if frozen:
            self.visual.eval()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            tokens = self.visual.forward_features(x)  # (B, P + N, D)
        return self.decoder.encode_visual(tokens)

    def forward(self, image: torch.Tensor, report: list[str]) -> dict[str, torch.Tensor]:
        """Teacher-forced logits and targets: ``{"logits": (B, T-1, V), "targets": (B, T-1)}``."""
        tok = self.tokenizer(report) if self.hparams.decoder == "transformer" else self.decoder.tokenize(report)
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        logits = self.decoder(ids[:, :-1], self.visual_context(image), attention_mask=mask[:, :-1])
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        return {"logits": logits, "targets": targets}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # fp32 island: softmax over the vocabulary.
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100,
                               label_smoothing=self.hparams.label_smoothing)

    @torch.no_grad()
    def generate(self, image: torch.Tensor, **overrides: Any) -> list[str]:
        """Reports for a batch of images with the configured (or overridden) decoding."""
        hp = {**self.hparams, **overrides}
        ctx = self.visual_context(image)
        B = image.shape[0]
        common = dict(bos_id=self.bos_id, eos_id=self.eos_id, max_length=hp["max_length"], device=image.device)
        if hp["decoding"] == "beam":
            K = hp["num_beams"]
            ctx_k = ctx.repeat_interleave(K, dim=0)
            ids = generation.beam_search(lambda t: self.decoder(t, ctx_k)[:, -1], B, num_beams=K,
                                         length_penalty=hp["length_penalty"],
                                         no_repeat_ngram_size=hp["no_repeat_ngram_size"], **common)
        elif hp["decoding"] == "sample":
            ids = generation.sample(lambda t: self.decoder(t, ctx)[:, -1], B, temperature=hp["temperature"],
                                    top_k=hp["top_k"], top_p=hp["top_p"], **common)
        elif hp["decoding"] == "greedy":
            ids = generation.greedy(lambda t: self.decoder(t, ctx)[:, -1], B,
                                    no_repeat_ngram_size=hp["no_repeat_ngram_size"], **common)
        else:
            raise ValueError(f"decoding must be 'greedy', 'beam' or 'sample', got {hp['decoding']!r}")
        return [self.tokenizer.decode(row) for row in ids]

    # -- training -----------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        stage1 = self.hparams.lm_stage1_epochs
        if self.hparams.decoder == "prefix_lm" and stage1 is not None:
            train_lm = self.current_epoch >= stage1
            if train_lm != self.decoder.train_lm:
                self.decoder.set_train_lm(train_lm)
                print(f"[medvl] epoch {self.current_epoch}: {'stage 2, training projector and LM' if train_lm else 'stage 1, projector only'}")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if "image" not in batch:
            return None
        out = self(batch["image"], batch["report"])
        loss = self.loss(out["logits"], out["targets"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        exempt: set[str] = set()
        for prefix, child in self.named_modules():
            fn = getattr(child, "no_weight_decay", None)
            if callable(fn) and child is not self:
                exempt |= {f"{prefix}.{n}" if prefix else n for n in fn()}
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, p in self.named_parameters():
            is_enc = name.startswith("visual.")
            if is_enc and not p.requires_grad:
                continue  # frozen encoder parts never train; a staged LM is kept (unfrozen later)
            groups.setdefault((is_enc, p.ndim < 2 or name in exempt), []).append(p)
        params = [
            {"params": ps, "lr": hp.lr * (hp.encoder_lr_scale if enc else 1.0),
             "weight_decay": 0.0 if no_decay else hp.weight_decay}
            for (enc, no_decay), ps in groups.items()
        ]
        opt = torch.optim.AdamW(params, lr=hp.lr, betas=(0.9, 0.98))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total_steps=total, warmup_steps=int(hp.warmup_fraction * total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation ---------------------------------------------------------------------

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        if "image" not in batch:
            return
        out = self(batch["image"], batch["report"])
        loss = self.loss(out["logits"], out["targets"])
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
        rows, self._eval = self._eval, []
        if self.trainer.world_size > 1:
            gathered: list[list[dict]] = [None] * self.trainer.world_size  # type: ignore[list-item]
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
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

        out = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "test_reports.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
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
        rows = [{"study_id": sid, "report": hyp} for sid, hyp in zip(batch["study_id"], self.generate(batch["image"]))]
        self._predictions.extend(rows)
        return rows

    def on_predict_epoch_end(self) -> None:
        rows, self._predictions = self._predictions, []
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "predictions.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"[medvl] wrote {len(rows)} generated reports to {path}")
