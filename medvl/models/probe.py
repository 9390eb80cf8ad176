"""Downstream classification from a medvl encoder: linear probe or full fine-tune.

The standard evaluation of a pretrained medical image encoder (e.g. the linear-probe
protocol of CLIP, Radford et al. 2021, and the CheXpert fine-tuning protocol of
Irvin et al. 2019): a linear multi-label head over the pooled image feature, trained
with binary cross-entropy, scored by per-class AUROC. Labels follow medvl's convention
(1 positive, 0 negative, -1 uncertain or not mentioned); the ``uncertain`` policy says
what -1 means for the loss (CheXpert's U-Ignore, U-Ones, U-Zeros); AUROC always ignores it.

The encoder comes from an export folder (``medvl export``), from the registry at random
initialisation, or from a task checkpoint's exported weights. Checkpoints of this task
follow the export contract (hyper-parameters ``vision_encoder``/``img_size``/``in_chans``/
``vision_kwargs``/``image_mean``/``image_std``, encoder weights under ``visual.``), so a
fine-tuned encoder exports again with ``medvl export``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from medvl.data.labels import FINDINGS
from medvl.encoders import create_encoder
from medvl.metrics.classification import multilabel_auroc
from medvl.models._compile import compile_in_place
from medvl.models._optim import build_adamw, warmup_cosine
from medvl.models._reporting import report_classification

__all__ = ["Classifier"]

log = logging.getLogger(__name__)


class Classifier(L.LightningModule):
    """Multi-label image classification on top of a (pretrained) patch encoder.

    Args:
        pretrained: Export folder of an encoder (``medvl export`` / ``make demo``); its
            ``config.json`` fixes the architecture, input size, channels and normalisation,
            overriding the four arguments below. None: a randomly initialised encoder.
        vision_encoder: Registry name when no ``pretrained`` folder is given.
        img_size: Square input size when no ``pretrained`` folder is given.
        in_chans: Input channels when no ``pretrained`` folder is given.
        image_mean: Subtracted from [0, 1] grey levels (taken from the export when given).
        image_std: Divides the centred grey levels (taken from the export when given).
        vision_kwargs: Extra encoder overrides (e.g. ``drop_path_rate`` for fine-tuning).
        label_names: Label columns of the data's ``labels`` tensor, in order; one output each.
        mode: ``linear`` trains only the head on a frozen encoder (kept in eval mode);
            ``finetune`` trains everything, the encoder at ``lr * encoder_lr_scale``.
        uncertain: Training target for label -1: ``ignore`` (masked out), ``ones`` or ``zeros``.
        lr: Peak learning rate of the head.
        encoder_lr_scale: Encoder learning rate relative to ``lr`` when fine-tuning;
            small values keep pretrained features from being overwritten early.
        weight_decay: Decoupled weight decay (norms, biases, embeddings exempt).
        warmup_fraction: Share of the optimiser steps spent in linear warm-up.
        head_dropout: Dropout on the pooled feature before the head.
        compile: ``torch.compile`` the encoder in place (state-dict keys unchanged): True for
            the default mode, or a mode name (CPU bf16 fast path: ``max-autotune-no-cudagraphs``).
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
        if uncertain not in ("ignore", "ones", "zeros"):
            raise ValueError(f"uncertain must be 'ignore', 'ones' or 'zeros', got {uncertain!r}")
        self.save_hyperparameters()
        weights = None
        if pretrained is not None:
            cfg_path = Path(pretrained) / "config.json"
            if cfg_path.is_file():
                weights = self._resolve_pretrained(Path(pretrained), json.loads(cfg_path.read_text()))
            else:
                # Loading one of our own checkpoints after the export folder moved: the
                # resolved architecture is in the saved hyper-parameters and the weights
                # in the checkpoint, so the folder is not needed.
                log.warning("%s: no export folder there; building %s from hyper-parameters",
                            pretrained, self.hparams.vision_encoder)
        hp = self.hparams
        self.visual = create_encoder(hp.vision_encoder, img_size=hp.img_size, in_chans=hp.in_chans,
                                     **(hp.vision_kwargs or {}))
        if weights is not None:
            self.visual.load_state_dict(weights)
        self.label_names = list(label_names or FINDINGS)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.visual.num_features, len(self.label_names))
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)
        if mode == "linear":
            self.visual.requires_grad_(False)
        compile_in_place(self.visual, compile)  # state-dict keys stay "visual.*"
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _resolve_pretrained(self, folder: Path, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Take architecture and preprocessing from an export's config; return its weights."""
        from safetensors.torch import load_file

        kwargs = dict(cfg["encoder_kwargs"])
        pre = cfg.get("preprocessing", {})
        self.hparams.update(
            vision_encoder=cfg["architecture"],
            img_size=kwargs.pop("img_size"),
            in_chans=kwargs.pop("in_chans"),
            image_mean=pre.get("mean", self.hparams.image_mean),
            image_std=pre.get("std", self.hparams.image_std),
            vision_kwargs={**kwargs, **(self.hparams.vision_kwargs or {})},
        )
        return load_file(str(folder / "model.safetensors"))

    # -- forward ------------------------------------------------------------------------

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, C, S, S)`` in [0, 1] -> ``{"logits": (B, K), "image_features": (B, D)}``."""
        x = (image - self.hparams.image_mean) / self.hparams.image_std
        if self.hparams.mode == "linear":
            # Frozen: no dropout, no BatchNorm statistics updates. Lightning restores
            # submodule modes one by one after validation, bypassing train(); re-assert here.
            self.visual.eval()
            with torch.no_grad():
                feats = self.visual.forward_head(self.visual.forward_features(x), pre_logits=True)
        else:
            feats = self.visual.forward_head(self.visual.forward_features(x), pre_logits=True)
        return {"logits": self.head(self.head_drop(feats)), "image_features": feats}

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.hparams.mode == "linear":
            self.visual.eval()  # frozen: no dropout, no BatchNorm statistics updates
        return self

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Masked BCE; label -1 handled by the ``uncertain`` policy."""
        target = labels.clone()
        policy = self.hparams.uncertain
        if policy == "ones":
            target[target < 0] = 1.0
        elif policy == "zeros":
            target[target < 0] = 0.0
        mask = (target >= 0).to(logits.dtype)
        # fp32 island: the per-element BCE and its mean over few valid labels.
        with torch.autocast(logits.device.type, enabled=False):
            bce = F.binary_cross_entropy_with_logits(logits.float(), target.clamp_min(0).float(), reduction="none")
            return (bce * mask).sum() / mask.sum().clamp_min(1.0)

    # -- loops --------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "image" not in batch:  # every sample of the batch was unreadable
            return None
        out = self(batch["image"])
        loss = self.loss(out["logits"], batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Any]) -> None:
        if "image" in batch:
            self._outputs.append((torch.sigmoid(self(batch["image"])["logits"]).float(), batch["labels"]))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = torch.sigmoid(self(batch["image"])["logits"])
        return {"study_id": batch.get("study_id"), "probabilities": probs, "label_names": self.label_names}

    def _epoch_end(self, stage: str) -> dict[str, float]:
        if not self._outputs:
            return {}
        scores = torch.cat([s for s, _ in self._outputs])
        labels = torch.cat([y for _, y in self._outputs])
        self._outputs = []
        if self.trainer.world_size > 1:
            scores, labels = (self.all_gather(t).flatten(0, 1) for t in (scores, labels))
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

    def configure_optimizers(self):
        hp = self.hparams
        if hp.mode == "linear":
            opt = build_adamw(self.head, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            head = build_adamw(self.head, lr=hp.lr, weight_decay=hp.weight_decay)
            enc = build_adamw(self.visual, lr=hp.lr * hp.encoder_lr_scale, weight_decay=hp.weight_decay)
            for g in enc.param_groups:
                g["lr"] = hp.lr * hp.encoder_lr_scale
            opt = torch.optim.AdamW(head.param_groups + enc.param_groups, lr=hp.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total_steps=total, warmup_steps=int(hp.warmup_fraction * total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
