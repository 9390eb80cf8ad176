"""Contrastive image–report pretraining: the task around :class:`medvl.networks.ImageTextModel`.

The network (towers, projections, temperature) lives in :mod:`medvl.networks`; this
task adds the loss, CLIP's symmetric InfoNCE (Radford et al., 2021) or SigLIP's pairwise
sigmoid loss (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training"), AdamW
with a warm-up + cosine schedule, logging, and the evaluation: zero-shot AUROC per
finding from positive/negative prompt pairs (CheXzero, Tiu et al., 2022) and
image↔report retrieval recall@K.

Under FSDP (``trainer/fsdp.yaml``) everything the task computes from the network runs
inside the wrapped root's forward, where the parameters are whole: the steps (Lightning
calls them through the wrapper), and at an evaluation epoch's end the prompt embeddings
and the logit scale of zero-shot scoring, through :meth:`ContrastivePretraining._wrapped`.
The weight-decay groups are those of the unwrapped network (:func:`medvl.optim.record_shapes`
in :meth:`ContrastivePretraining.configure_model`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning as L
import torch

from medvl.data.labels import FINDINGS
from medvl.data.prompts import prompts_for
from medvl.losses import ClipLoss, SigLipLoss
from medvl.metrics.retrieval import retrieval_recall_at_k
from medvl.metrics.zeroshot import prompt_embeddings, zero_shot_auroc, zero_shot_scores
from medvl.models._compile import compile_in_place
from medvl.models._health import RunHealth, RunHealthHooks
from medvl.models._reporting import gather_rows, gather_uneven, report_metrics
from medvl.networks import ImageTextModel
from medvl.optim import adamw, param_groups, record_shapes, warmup_cosine

__all__ = ["ContrastivePretraining"]

log = logging.getLogger(__name__)

# What an image is when neither the data module nor a pretrained source says.
_DATA_DEFAULTS = {"img_size": 224, "in_chans": 1, "image_mean": 0.5, "image_std": 0.25}


class ContrastivePretraining(RunHealthHooks, L.LightningModule):
    """CLIP/SigLIP pretraining on image–report pairs; the network is ``self.model``.

    Args:
        vision_encoder: Registry name of the image encoder (see ``medvl.list_encoders()``).
        text_encoder: Registry name of the report encoder (``text_transformer_small``, or
            ``hf_text`` for a local Hugging Face model given by ``text_kwargs.model_path``).
        img_size: Square input size of the data (linked from the data module); None: 224.
        in_chans: Image channels of the data; None: 1 (radiographs).
        image_mean: Mean the data pipeline subtracted from the [0, 1] grey levels
            (recorded for the export; the task does not normalise); None: 0.5.
        image_std: Std the data pipeline divided by; None: 0.25.
        window: DICOM window the data pipeline applied (recorded for the export); None:
            each file's own.
        label_names: The label columns of the data's ``labels`` tensor, in order; None:
            :data:`medvl.data.labels.FINDINGS`; ``[]``: captions only, retrieval metrics only.
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
            evaluation, every key one of ``label_names``; None: the entries of
            :data:`medvl.data.prompts.CXR_PROMPTS` for ``label_names`` (labels without
            one are not scored, and listed as ``unscored_labels`` in test_metrics.json).
        retrieval_ks: K values for recall@K.
        blockwise_loss: Memory-lean loss that never holds the B x B logits (large batches).
        compile: ``torch.compile`` the network in place (both towers and projections in
            one graph per input signature; parameter names and checkpoints are unchanged):
            True for the default mode, or a mode name; the
            CPU fast path for bf16 is ``max-autotune-no-cudagraphs``. On a GPU, pair with
            ``trainer.precision: bf16-mixed`` for the Triton kernels of :mod:`medvl.kernels`.
    """

    text_fields = ("report",)
    """Sample fields the task reads text from: every record must have one (the data module checks)."""

    def __init__(
        self,
        vision_encoder: str = "vit_small_patch16",
        text_encoder: str = "text_transformer_small",
        img_size: int | None = None,
        in_chans: int | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        window: tuple[float, float] | str | None = None,
        label_names: list[str] | None = None,
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
        retrieval_ks: tuple[int, ...] = (1, 5, 10),
        blockwise_loss: bool = False,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if loss not in ("clip", "siglip"):
            raise ValueError(f"loss must be 'clip' or 'siglip', got {loss!r}")
        self.save_hyperparameters()
        hp = self.hparams
        for key, default in _DATA_DEFAULTS.items():  # resolved values travel in the checkpoint
            if hp[key] is None:
                hp[key] = default
        names = list(FINDINGS) if label_names is None else list(label_names)
        hp.label_names = names
        self.model = ImageTextModel(
            vision_encoder=vision_encoder, text_encoder=text_encoder, img_size=hp.img_size, in_chans=hp.in_chans,
            embed_dim=embed_dim, projection=projection, init_temperature=init_temperature,
            max_logit_scale=max_logit_scale, init_logit_bias=init_logit_bias if loss == "siglip" else None,
            vision_kwargs=vision_kwargs, text_kwargs=text_kwargs,
        )
        compile_in_place(self.model, compile)  # both towers and projections, one graph; keys stay "model.*"
        self.loss_fn = SigLipLoss(blockwise=blockwise_loss) if loss == "siglip" else ClipLoss(blockwise=blockwise_loss)
        if prompts is None:
            self.prompts, self.unscored = prompts_for(names)
            if self.unscored:
                log.warning("no zero-shot prompts for label(s) %s: they are not scored", self.unscored)
        else:
            unknown = [k for k in prompts if k not in names]
            if unknown:
                raise ValueError(f"prompts name findings {unknown} that are not label columns {names}")
            self.prompts, self.unscored = dict(prompts), [n for n in names if n not in prompts]
        self._label_index = [names.index(k) for k in self.prompts]  # label columns by name, in prompt order
        self._eval_outputs: list[dict[str, Any]] = []
        self.health = RunHealth()

    # -- data ---------------------------------------------------------------------------

    def tokenizers(self) -> dict[str, Any]:
        """``{"report": tokenizer}``: the text tower's picklable tokenizer, run in loader workers."""
        return {"report": self.model.tokenizer}

    @staticmethod
    def _text(batch: dict[str, Any]) -> Any:
        """The batch's report tokens when the loader made them, else the raw texts."""
        return batch["report_tokens"] if "report_tokens" in batch else batch["report"]

    def _labels(self, batch: dict[str, Any]) -> torch.Tensor:
        names = self.hparams.label_names
        labels = batch.get("labels")
        if labels is None:
            labels = torch.zeros(batch["image"].shape[0], 0, device=self.device)
        if labels.shape[1] != len(names):
            raise ValueError(f"the batch has {labels.shape[1]} label columns but label_names has {len(names)}: "
                             f"{names}; link the model's label_names to the data module's")
        return labels

    def forward(self, image: torch.Tensor | None = None, text: Any = None) -> dict[str, torch.Tensor]:
        """The network's output (:meth:`ImageTextModel.forward`: both towers, or one of them)."""
        return self.model(image, text)

    def _wrapped(self) -> torch.nn.Module:
        """What to call for a forward outside a step: the FSDP wrapper around this task, else the task.

        Under torch's FSDP a step runs inside the wrapper's forward (Lightning redirects the
        step through it), where the parameters are gathered; an epoch-end hook does not, and
        a call of the network there would see shards. Calling this module runs the task's
        :meth:`forward` inside the wrapper. DDP's wrapper is not used: its forward would sync
        buffers and prepare gradient reduction for nothing; the task itself is the same
        computation. (FSDP2's ``fully_shard`` hooks the module itself, so the task is right.)
        """
        trainer = self._trainer
        wrapper = getattr(getattr(trainer, "strategy", None), "model", None)
        if wrapper is not None and wrapper is not self and torch.distributed.is_available():
            from torch.distributed.fsdp import FullyShardedDataParallel

            if isinstance(wrapper, FullyShardedDataParallel):
                return wrapper
        return self

    @torch.no_grad()
    def _zero_shot_inputs(self, forward: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts' class embeddings ``(C, 2, E)`` and the 0-d logit scale, from text-only forwards.

        Args:
            forward: Called as ``forward(text=texts)`` for the network's output; None:
                :meth:`_wrapped` (outside a step). Inside a step, ``self.model``.
        """
        forward = self._wrapped() if forward is None else forward
        scale: list[torch.Tensor] = []

        def encode(texts: list[str]) -> torch.Tensor:
            out = forward(text=texts)
            scale.append(out["logit_scale"])
            return out["text_features"]

        class_emb = prompt_embeddings(encode, self.prompts)
        return class_emb, scale[-1].float()

    # -- training -----------------------------------------------------------------------

    def _empty_batch(self) -> dict[str, Any]:
        """A batch of no samples: a distributed rank whose samples were all unreadable still takes the step.

        Under DDP every rank must join the loss's all-gather and the gradient all-reduce, or
        the others wait for it (and pair their next collective with its). With no rows the
        rank's share of the global loss (``medvl.losses.distributed``: a sum over its own rows,
        scaled by world / global rows) is exactly 0, so the step equals a single process
        training on the samples the other ranks hold.
        """
        hp = self.hparams
        image = torch.zeros(0, hp.in_chans, hp.img_size, hp.img_size, device=self.device)
        tokens = {k: v[:0].to(self.device) for k, v in self.model.tokenizer(["."]).items()}
        return {"image": image, "report_tokens": tokens, "report": []}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.health.count(self, batch)
        empty = "image" not in batch  # every sample of the batch was unreadable
        if empty:
            if self.trainer.world_size == 1:
                return None  # Lightning skips the step
            batch = self._empty_batch()
        out = self.model(batch["image"], self._text(batch))
        loss = self.loss_fn(**out)
        if not empty:
            bs = batch["image"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            self.log("train/logit_scale", out["logit_scale"], batch_size=bs)
        return self.health.guard(self, loss)

    def on_train_epoch_end(self) -> None:
        self.health.report(self, "train")

    def configure_model(self) -> None:
        # Before any strategy wraps the network: the weight-decay groups stay those of the
        # unwrapped network under FSDP (medvl.optim).
        record_shapes(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        _reshape_scalar_moments(checkpoint)

    def configure_optimizers(self):
        hp = self.hparams
        opt = adamw(param_groups(self.model, weight_decay=hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = warmup_cosine(opt, total_steps=total, warmup_steps=int(hp.warmup_fraction * total),
                              min_lr_ratio=hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation ---------------------------------------------------------------------

    def _eval_step(self, batch: dict[str, Any]) -> None:
        self.health.count(self, batch)
        if "image" not in batch:  # every sample of the batch was unreadable
            if self._trainer is not None and self.trainer.world_size > 1:
                # Under a sharding strategy (FSDP) the forward gathers each unit's parameters with the
                # other ranks: a rank that skipped it would leave them waiting. No rows, no outputs.
                empty = self._empty_batch()
                self.model(empty["image"], empty["report_tokens"])
            return
        out = self.model(batch["image"], self._text(batch))  # the network's forward: hooked by a sharding wrapper
        self._eval_outputs.append({
            "image_features": out["image_features"].float(),
            "text_features": out["text_features"].float(),
            "labels": self._labels(batch),
            "report": list(batch["report"]),
        })

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        self.health.count(self, batch)
        image_features = self.model(image=batch["image"])["image_features"]
        out = {"study_id": batch.get("study_id"), "image_features": image_features}
        if self.prompts:
            class_emb, scale = self._zero_shot_inputs(self.model)  # inside the step: the network itself
            out["zero_shot"] = zero_shot_scores(image_features, class_emb, scale)
        return out

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        metrics, scores, labels = self._eval_epoch_end("test")
        if metrics and self.trainer.is_global_zero:
            report_metrics(metrics, scores, labels, list(self.prompts), self.trainer, unscored=self.unscored)

    def _gather(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, list[str]]:
        """The split's features, labels and reports from every rank (None when no sample was scored anywhere)."""
        outs, self._eval_outputs = self._eval_outputs, []
        img = torch.cat([o["image_features"] for o in outs]) if outs else None
        txt = torch.cat([o["text_features"] for o in outs]) if outs else None
        lab = torch.cat([o["labels"] for o in outs])[:, self._label_index] if outs else None
        reports = [r for o in outs for r in o["report"]]
        if self.trainer.world_size > 1:
            # Every rank scores the whole split; reports travel as their text-group ids below. Skipped
            # samples leave the ranks with different row counts (or none), so every rank joins the gather.
            img, txt, lab = gather_uneven(self, img, txt, lab)
            reports = gather_rows(self.trainer, reports)
        return img, txt, lab, reports

    def _eval_epoch_end(self, stage: str):
        self.health.report(self, stage)
        img, txt, lab, reports = self._gather()
        if img is None:  # every sample of the split was unreadable
            return {}, None, None
        metrics: dict[str, float] = {}
        scores = None
        if self.prompts:
            class_emb, scale = self._zero_shot_inputs()  # outside a step: through the FSDP wrapper, if any
            aurocs = zero_shot_auroc(img, lab, class_emb, scale)
            for name, value in zip(self.prompts, aurocs):
                metrics[f"auroc/{name}"] = float(value)
            valid = [float(v) for v in aurocs if v == v]
            metrics["auroc_mean"] = sum(valid) / len(valid) if valid else float("nan")
            scores = zero_shot_scores(img, class_emb, scale).cpu().numpy()
        # Identical report texts are interchangeable matches (normal studies repeat).
        group_of: dict[str, int] = {}
        groups = torch.tensor([group_of.setdefault(r, len(group_of)) for r in reports])
        metrics.update(retrieval_recall_at_k(img, txt, ks=self.hparams.retrieval_ks, groups=groups))
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", float(v), sync_dist=False, rank_zero_only=True)
        return metrics, scores, lab.cpu().numpy()



def _reshape_scalar_moments(checkpoint: dict[str, Any]) -> None:
    """Give the optimiser states of a checkpoint with 0-d ``logit_scale``/``logit_bias`` the parameters' ``(1,)``.

    Before the temperature was a ``(1,)`` parameter (FSDP refuses 0-d ones), AdamW kept
    0-d moments for it; resuming such a run would fail in the first step. The network
    itself reshapes the parameters (:meth:`ImageTextModel._load_from_state_dict`); its only
    0-d parameters were those two, so any 0-d moment (not AdamW's ``step`` counter) is one of theirs.
    """
    for opt in checkpoint.get("optimizer_states") or ():
        for state in (opt.get("state") or {}).values() if isinstance(opt, dict) else ():
            for key, value in list(state.items()):
                if key != "step" and isinstance(value, torch.Tensor) and value.ndim == 0:
                    state[key] = value.reshape(1)
