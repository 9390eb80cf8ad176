"""Downstream classification from a medvl encoder: linear probe or full fine-tune.

The standard evaluation of a pretrained medical image encoder (e.g. the linear-probe
protocol of CLIP, Radford et al. 2021, and the CheXpert fine-tuning protocol of
Irvin et al. 2019): a linear multi-label head over the pooled image feature
(:class:`~medvl.networks.ImageClassifier`), trained with binary cross-entropy
(:class:`~medvl.losses.MaskedBCELoss`; the ``uncertain`` policy says what label -1
means: CheXpert's U-Ignore, U-Ones, U-Zeros), scored by per-class AUROC (which always
ignores -1).

The encoder comes from ``pretrained`` (an export folder, or a task checkpoint of any
medvl task, read by :func:`~medvl.encoders.read_encoder_source`) or from the registry at
random initialisation. Its architecture and preprocessing fix the data settings: a
given ``img_size``/``in_chans``/``image_mean``/``image_std``/``window`` that disagrees
with the encoder's raises. The network is ``self.model``, so a checkpoint of this task
holds the encoder under ``model.visual.`` and its resolved hyper-parameters, and exports
again with ``medvl export``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch

from medvl.encoders import EncoderSource, read_encoder_source
from medvl.losses import MaskedBCELoss
from medvl.metrics.classification import multilabel_auroc
from medvl.models._compile import ENCODER_METHODS, compile_in_place
from medvl.models._encoder import PretrainedSourceHooks
from medvl.models._health import RunHealth, RunHealthHooks
from medvl.models._reporting import gather_uneven, report_classification
from medvl.networks import ImageClassifier
from medvl.optim import adamw, param_groups, record_shapes, warmup_cosine

__all__ = ["Classifier"]

log = logging.getLogger(__name__)

# Without a pretrained source: the registry default and the data module's defaults.
_DEFAULTS = {"vision_encoder": "vit_small_patch16", "img_size": 224, "in_chans": 1, "image_mean": 0.5,
             "image_std": 0.25}


class Classifier(PretrainedSourceHooks, RunHealthHooks, L.LightningModule):
    """Multi-label image classification on top of a (pretrained) patch encoder.

    Args:
        pretrained: Export folder (``medvl export`` / ``make demo``) or medvl task
            checkpoint whose encoder starts training; it fixes the architecture, input
            size, channels and normalisation. None: a randomly initialised encoder.
        vision_encoder: Registry name; None: the pretrained one, else ``vit_small_patch16``.
            Given together with ``pretrained`` it must name the pretrained architecture.
        img_size: Square input size of the (normalised) images; None: the pretrained
            encoder's, else 224.
        in_chans: Image channels; None: the pretrained encoder's, else 1.
        image_mean: Mean the data subtracted from the [0, 1] grey levels; None: the
            pretrained encoder's, else 0.5. Recorded for the export only: the data
            normalises, this task never does.
        image_std: Std the data divided by; None: the pretrained encoder's, else 0.25.
        window: DICOM window of the data (``(center, width)`` or a preset name); None:
            the pretrained encoder's, else each file's own.
        vision_kwargs: Extra encoder overrides (e.g. ``drop_path_rate`` for fine-tuning),
            on top of the pretrained encoder's.
        label_names: Label columns of the data's ``labels`` tensor, in order; one output
            each. None: the ones the pretrained source records; none at all is an error.
        mode: ``linear`` trains only the head on a frozen encoder (kept in eval mode);
            ``finetune`` trains everything, the encoder at ``lr * encoder_lr_scale``.
        uncertain: Training target for label -1: ``ignore`` (masked out), ``ones`` or ``zeros``.
        lr: Peak learning rate of the head.
        encoder_lr_scale: Encoder learning rate relative to ``lr`` when fine-tuning;
            small values keep pretrained features from being overwritten early.
        weight_decay: Decoupled weight decay (norms, biases, embeddings exempt).
        warmup_fraction: Share of the optimiser steps spent in linear warm-up.
        head_dropout: Dropout on the pooled feature before the head.
        compile: ``torch.compile`` the encoder's ``forward_features`` in place (state-dict keys
            unchanged): True for
            the default mode, or a mode name (CPU bf16 fast path: ``max-autotune-no-cudagraphs``).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        vision_encoder: str | None = None,
        img_size: int | None = None,
        in_chans: int | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        window: tuple[float, float] | str | None = None,
        vision_kwargs: dict[str, Any] | None = None,
        label_names: list[str] | None = None,
        mode: Literal["linear", "finetune"] = "linear",
        uncertain: Literal["ignore", "ones", "zeros"] = "ignore",
        lr: float = 1e-3,
        encoder_lr_scale: float = 0.1,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        head_dropout: float = 0.0,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if mode not in ("linear", "finetune"):
            raise ValueError(f"mode must be 'linear' or 'finetune', got {mode!r}")
        self.save_hyperparameters()
        self.loss_fn = MaskedBCELoss(uncertain)
        src = self._read_pretrained(pretrained)
        self._resolve(src)
        hp = self.hparams
        self.label_names: list[str] = list(hp.label_names)
        # The pretrained encoder itself, unless overrides of its settings (drop_path_rate, ...) need a rebuild.
        rebuild = src is not None and any(src.encoder_kwargs.get(k) != v for k, v in (vision_kwargs or {}).items())
        self.model = ImageClassifier(
            num_classes=len(self.label_names),
            vision_encoder=src.encoder if src is not None and not rebuild else hp.vision_encoder,
            img_size=hp.img_size, in_chans=hp.in_chans, dropout=head_dropout, freeze_encoder=mode == "linear",
            vision_kwargs=hp.vision_kwargs,
        )
        if rebuild:
            try:
                self.model.visual.load_state_dict(src.encoder.state_dict())
            except RuntimeError as err:
                raise ValueError(f"{pretrained}: weights do not fit {hp.vision_encoder} with vision_kwargs "
                                 f"{hp.vision_kwargs}: {err}") from err
        compile_in_place(self.model.visual, compile, ENCODER_METHODS)  # state-dict keys stay "model.visual.*"
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.health = RunHealth()

    # -- construction -----------------------------------------------------------------

    def _read_pretrained(self, pretrained: str | None) -> EncoderSource | None:
        if pretrained is None:
            return None
        if not Path(pretrained).exists():
            hp = self.hparams
            if all(hp[k] is not None for k in (*_DEFAULTS, "label_names")):
                # Reloading one of our own checkpoints after the source moved: the resolved
                # architecture is in the hyper-parameters and the weights in the checkpoint.
                log.warning("%s: not found; building %s from the saved hyper-parameters", pretrained,
                            hp.vision_encoder)
                return None
            raise FileNotFoundError(f"Classifier: pretrained={pretrained}: no such export folder or checkpoint file")
        return read_encoder_source(pretrained)

    def _resolve(self, src: EncoderSource | None) -> None:
        """Fill the None data settings from ``src`` (or the defaults); raise where given ones disagree."""
        hp = self.hparams
        if src is None:
            resolved = {k: v if hp[k] is None else hp[k] for k, v in _DEFAULTS.items()}
        else:
            where = f"Classifier(pretrained={hp.pretrained!r})"
            if hp.vision_encoder is not None and hp.vision_encoder != src.architecture:
                raise ValueError(f"{where}: vision_encoder {hp.vision_encoder!r} given, but the pretrained "
                                 f"encoder is {src.architecture!r}; leave vision_encoder unset")
            src.check_preprocessing(img_size=hp.img_size, in_chans=hp.in_chans, mean=hp.image_mean,
                                    std=hp.image_std, window=hp.window, where=where)
            kwargs = dict(src.encoder_kwargs)
            pre = src.preprocessing
            recorded = {"img_size": kwargs.pop("img_size"), "in_chans": kwargs.pop("in_chans"),
                        "image_mean": pre.get("mean"), "image_std": pre.get("std")}
            resolved = {k: hp[k] if hp[k] is not None else recorded[k] if recorded[k] is not None else v
                        for k, v in _DEFAULTS.items() if k != "vision_encoder"}
            resolved["vision_encoder"] = src.architecture
            resolved["vision_kwargs"] = {**kwargs, **(hp.vision_kwargs or {})}
            if hp.window is None and pre.get("window") is not None:
                resolved["window"] = pre["window"]
            if hp.label_names is None and src.label_names:
                resolved["label_names"] = list(src.label_names)
        window = resolved.get("window", hp.window)
        resolved["window"] = tuple(window) if isinstance(window, list) else window
        names = resolved.get("label_names", hp.label_names)
        if not names:
            raise ValueError("Classifier: no label_names (one output per label name); pass the data module's "
                             "label_names" + ("" if src is None else f" (the pretrained {src.origin} records none)"))
        resolved["label_names"] = list(names)
        hp.update(resolved)

    def tokenizers(self) -> dict[str, Callable[[list[str]], dict[str, torch.Tensor]]]:
        """No text: images and labels only."""
        return {}

    # -- forward ------------------------------------------------------------------------

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, C, S, S)`` normalised image -> ``{"logits": (B, K), "image_features": (B, D)}``."""
        return self.model(image)

    # -- loops --------------------------------------------------------------------------

    def _labels(self, batch: dict[str, Any]) -> torch.Tensor:
        labels = batch["labels"]  # (B, K)
        if labels.shape[1] != len(self.label_names):
            raise ValueError(f"the batch has {labels.shape[1]} label columns but label_names has "
                             f"{len(self.label_names)}: {self.label_names}; link the model's label_names to the "
                             "data module's")
        return labels

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.health.count(self, batch)
        if "image" not in batch:  # every sample of the batch was unreadable
            return self.health.empty_step(self)
        out = self(batch["image"])
        loss = self.loss_fn(**out, labels=self._labels(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return self.health.guard(self, loss)

    def on_train_epoch_end(self) -> None:
        self.health.report(self, "train")

    def _eval_step(self, batch: dict[str, Any]) -> None:
        self.health.count(self, batch)
        if "image" in batch:
            self._outputs.append((torch.sigmoid(self(batch["image"])["logits"]).float(), self._labels(batch)))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        self.health.count(self, batch)
        probs = torch.sigmoid(self(batch["image"])["logits"])
        return {"study_id": batch.get("study_id"), "probabilities": probs, "label_names": self.label_names}

    def _epoch_end(self, stage: str) -> dict[str, float]:
        self.health.report(self, stage)
        outputs, self._outputs = self._outputs, []
        scores = torch.cat([s for s, _ in outputs]) if outputs else None
        labels = torch.cat([y for _, y in outputs]) if outputs else None
        if self.trainer.world_size > 1:  # skipped samples leave the ranks with different row counts, or none
            scores, labels = gather_uneven(self, scores, labels)
        if scores is None:  # every sample of the split was unreadable
            return {}
        aurocs = multilabel_auroc(scores, labels, ignore_index=-1)
        metrics = {f"auroc/{n}": float(v) for n, v in zip(self.label_names, aurocs)}
        valid = [float(v) for v in aurocs if v == v]
        metrics["auroc_mean"] = sum(valid) / len(valid) if valid else float("nan")
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, rank_zero_only=True)
        if stage == "test" and self.trainer.is_global_zero:
            report_classification(metrics, scores.cpu().numpy(), labels.cpu().numpy(), self.label_names,
                                  self.trainer, title=f"Classification ({self.hparams.mode}, test split)")
        return metrics

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def configure_model(self) -> None:
        # After setup, before any strategy wraps the network: the weight-decay groups stay those of
        # the unwrapped network under FSDP (medvl.optim).
        record_shapes(self)

    def configure_optimizers(self):
        hp = self.hparams
        # A frozen (linear-probe) encoder has no trainable parameters: its groups come out empty.
        groups = param_groups(self.model.head, weight_decay=hp.weight_decay, lr=hp.lr)
        groups += param_groups(self.model.visual, weight_decay=hp.weight_decay, lr=hp.lr * hp.encoder_lr_scale)
        opt = adamw(groups, lr=hp.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total_steps=total, warmup_steps=int(hp.warmup_fraction * total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
