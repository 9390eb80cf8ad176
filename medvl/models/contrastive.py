"""Contrastive image–report pretraining as a LightningModule.

The task wires a registry vision encoder and text encoder, two projection heads and a
contrastive loss: CLIP's symmetric InfoNCE (Radford et al., 2021) or SigLIP's pairwise
sigmoid loss (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training").
Validation and test report zero-shot AUROC per finding from positive/negative prompt
pairs (CheXzero, Tiu et al., 2022) and image↔report retrieval recall@K.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from medvl.data.labels import FINDINGS
from medvl.data.prompts import CXR_PROMPTS
from medvl.encoders import create_encoder
from medvl.heads import ProjectionHead
from medvl.losses import ClipLoss, SigLipLoss
from medvl.metrics.retrieval import retrieval_recall_at_k
from medvl.metrics.zeroshot import prompt_embeddings, zero_shot_auroc, zero_shot_scores
from medvl.models._reporting import report_metrics
from medvl.models._compile import compile_in_place
from medvl.models._optim import build_adamw, warmup_cosine

__all__ = ["ContrastivePretraining"]


class ContrastivePretraining(L.LightningModule):
    """CLIP/SigLIP pretraining on image–report pairs.

    Args:
        vision_encoder: Registry name of the image encoder (see ``medvl.list_encoders()``).
        text_encoder: Registry name of the report encoder (``text_transformer_small``, or
            ``hf_text`` for a local Hugging Face model given by ``text_kwargs.model_path``).
        img_size: Square input size the image encoder is built for.
        in_chans: Image channels; radiographs are single-channel.
        image_mean: Subtracted from the [0, 1] grey levels before the encoder; zero-centred
            inputs keep the first steps of a ViT from collapsing all images together.
        image_std: Divides the centred grey levels.
        embed_dim: Width of the joint embedding space.
        projection: ``"linear"`` (CLIP) or ``"mlp"`` (ConVIRT) projection heads.
        loss: ``"clip"`` (softmax InfoNCE) or ``"siglip"`` (pairwise sigmoid).
        init_temperature: Initial softmax temperature; the logit scale starts at its inverse.
        init_logit_bias: Initial SigLIP bias; -10 offsets the prior of mostly negative pairs.
        max_logit_scale: Clamp on the learned logit scale (CLIP uses 100).
        lr: Peak learning rate of AdamW.
        weight_decay: Decoupled weight decay; biases, norms, embeddings and the temperature
            are exempt.
        betas: AdamW betas; 0.98 as in CLIP for stability with large batches.
        warmup_fraction: Share of all optimiser steps spent in linear warm-up.
        min_lr_ratio: Floor of the cosine decay as a fraction of ``lr``.
        vision_kwargs: Extra overrides for the vision encoder factory (e.g. ``patch_dropout``).
        text_kwargs: Extra overrides for the text encoder factory.
        prompts: ``{finding: {"positive": [...], "negative": [...]}}`` for zero-shot
            evaluation; defaults to :data:`medvl.data.prompts.CXR_PROMPTS`.
        label_names: The label columns of the data's ``labels`` tensor, in order; defaults
            to :data:`medvl.data.labels.FINDINGS`. Every prompt key must be one of them.
        retrieval_ks: K values for recall@K.
        blockwise_loss: Memory-lean loss that never holds the B x B logits (large batches).
        compile: ``torch.compile`` the image encoder in place (parameter names and
            checkpoints are unchanged): True for the default mode, or a mode name; the
            CPU fast path for bf16 is ``max-autotune-no-cudagraphs``. On a GPU, pair with
            ``trainer.precision: bf16-mixed`` for the Triton kernels of :mod:`medvl.kernels`.
    """

    def __init__(
        self,
        vision_encoder: str = "vit_small_patch16",
        text_encoder: str = "text_transformer_small",
        img_size: int = 224,
        in_chans: int = 1,
        image_mean: float = 0.5,
        image_std: float = 0.25,
        embed_dim: int = 256,
        projection: Literal["linear", "mlp"] = "linear",
        loss: Literal["clip", "siglip"] = "clip",
        init_temperature: float = 0.07,
        init_logit_bias: float = -10.0,
        max_logit_scale: float = 100.0,
        lr: float = 5e-4,
        weight_decay: float = 0.2,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.0,
        vision_kwargs: dict[str, Any] | None = None,
        text_kwargs: dict[str, Any] | None = None,
        prompts: dict[str, dict[str, list[str]]] | None = None,
        label_names: list[str] | None = None,
        retrieval_ks: tuple[int, ...] = (1, 5, 10),
        blockwise_loss: bool = False,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.visual = create_encoder(vision_encoder, img_size=img_size, in_chans=in_chans, **(vision_kwargs or {}))
        self.text = create_encoder(text_encoder, **(text_kwargs or {}))
        self.image_proj = ProjectionHead(self.visual.num_features, embed_dim, projection)
        self.text_proj = ProjectionHead(self.text.num_features, embed_dim, projection)
        compile_in_place(self.visual, compile)  # state-dict keys stay "visual.*"
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.logit_bias = nn.Parameter(torch.tensor(init_logit_bias)) if loss == "siglip" else None
        self.loss_fn = SigLipLoss(blockwise=blockwise_loss) if loss == "siglip" else ClipLoss(blockwise=blockwise_loss)
        self.prompts = prompts or CXR_PROMPTS
        names = list(label_names or FINDINGS)
        unknown = [k for k in self.prompts if k not in names]
        if unknown:
            raise ValueError(f"prompts name findings {unknown} that are not label columns {names}")
        self._label_index = [names.index(k) for k in self.prompts]
        self._eval_outputs: list[dict[str, Any]] = []
        self._skipped = 0

    # -- features -----------------------------------------------------------------------

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (normalised embedding (B, E), patch tokens (B, N, D))."""
        image = (image - self.hparams.image_mean) / self.hparams.image_std
        tokens = self.visual.forward_features(image)  # (B, 1+N, D)
        pooled = self.visual.forward_head(tokens, pre_logits=True)  # (B, D)
        prefix = getattr(self.visual, "num_prefix_tokens", 1)
        return F.normalize(self.image_proj(pooled), dim=-1), tokens[:, prefix:]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Tokenise and embed raw texts; returns normalised (B, E)."""
        tok = {k: v.to(self.device) for k, v in self.text.tokenize(texts).items()}
        return F.normalize(self.text_proj(self.text(**tok)), dim=-1)

    def forward(self, image: torch.Tensor, report: list[str]) -> dict[str, torch.Tensor]:
        image_features, patch_tokens = self.encode_image(image)
        out = {
            "image_features": image_features,
            "text_features": self.encode_text(report),
            "patch_tokens": patch_tokens,
            "logit_scale": self.logit_scale.clamp(max=math.log(self.hparams.max_logit_scale)).exp(),
        }
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out

    # -- training -----------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self._skipped += int(batch.get("n_skipped", 0))
        out = self(batch["image"], batch["report"])
        loss = self.loss_fn(**out)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/logit_scale", out["logit_scale"], batch_size=bs)
        return loss

    def on_train_epoch_end(self) -> None:
        self._report_skipped("train")

    def configure_optimizers(self):
        opt = build_adamw(self, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, betas=self.hparams.betas)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total_steps=total, warmup_steps=int(self.hparams.warmup_fraction * total),
                              min_lr_ratio=self.hparams.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation ---------------------------------------------------------------------

    def _eval_step(self, batch: dict[str, Any]) -> None:
        self._skipped += int(batch.get("n_skipped", 0))
        image_features, _ = self.encode_image(batch["image"])
        self._eval_outputs.append({
            "image_features": image_features.float(),
            "text_features": self.encode_text(batch["report"]).float(),
            "labels": batch["labels"],
            "report": list(batch["report"]),
        })

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        image_features, _ = self.encode_image(batch["image"])
        class_emb = prompt_embeddings(self.encode_text, self.prompts)
        return {
            "study_id": batch.get("study_id"),
            "image_features": image_features,
            "zero_shot": zero_shot_scores(image_features, class_emb, self.logit_scale.exp()),
        }

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        metrics, scores, labels = self._eval_epoch_end("test")
        if metrics and self.trainer.is_global_zero:
            report_metrics(metrics, scores, labels, list(self.prompts), self.trainer)

    def _gather(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        outs, self._eval_outputs = self._eval_outputs, []
        img = torch.cat([o["image_features"] for o in outs])
        txt = torch.cat([o["text_features"] for o in outs])
        lab = torch.cat([o["labels"] for o in outs])[:, self._label_index]
        reports = [r for o in outs for r in o["report"]]
        if self.trainer.world_size > 1:
            # Every rank scores the whole split; reports travel as their text-group ids below.
            img, txt, lab = (self.all_gather(t).flatten(0, 1) for t in (img, txt, lab))
            gathered: list[list[str]] = [None] * self.trainer.world_size  # type: ignore[list-item]
            torch.distributed.all_gather_object(gathered, reports)
            reports = [r for part in gathered for r in part]
        return img, txt, lab, reports

    def _eval_epoch_end(self, stage: str):
        if not self._eval_outputs:
            return {}, None, None
        img, txt, lab, reports = self._gather()
        class_emb = prompt_embeddings(self.encode_text, self.prompts)
        scale = self.logit_scale.clamp(max=math.log(self.hparams.max_logit_scale)).exp()
        aurocs = zero_shot_auroc(img, lab, class_emb, scale)
        metrics: dict[str, float] = {}
        for name, value in zip(self.prompts, aurocs):
            metrics[f"auroc/{name}"] = float(value)
        valid = [float(v) for v in aurocs if v == v]
        metrics["auroc_mean"] = sum(valid) / len(valid) if valid else float("nan")
        # Identical report texts are interchangeable matches (normal studies repeat).
        group_of: dict[str, int] = {}
        groups = torch.tensor([group_of.setdefault(r, len(group_of)) for r in reports])
        metrics.update(retrieval_recall_at_k(img, txt, ks=self.hparams.retrieval_ks, groups=groups))
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", float(v), sync_dist=False, rank_zero_only=True)
        self._report_skipped(stage)
        scores = zero_shot_scores(img, class_emb, scale)
        return metrics, scores.cpu().numpy(), lab.cpu().numpy()

    def _report_skipped(self, stage: str) -> None:
        skipped, self._skipped = self._skipped, 0
        self.log(f"{stage}/skipped_samples", float(skipped), rank_zero_only=True)
        if skipped and self.trainer.is_global_zero:
            print(f"[medvl] {stage}: skipped {skipped} unreadable sample(s) this epoch")
