"""Parameter groups with weight-decay exemptions and a warm-up + cosine schedule, shared by the tasks.

Decoupled weight decay (AdamW, Loshchilov & Hutter, arXiv:1711.05101) is not applied to
biases, norm weights, scalars (``ndim < 2``) or to the embeddings a module names in its
``no_weight_decay()`` (timm's convention: position embeddings, class tokens). The
learning rate warms up linearly and then follows a half cosine (SGDR, Loshchilov &
Hutter, arXiv:1608.03983, without restarts). Torch only: nothing here imports Lightning.

A task combines the groups of its parts, each at its own learning rate::

    opt = torch.optim.AdamW(param_groups(head, weight_decay=0.05, lr=lr)
                            + param_groups(encoder, weight_decay=0.05, lr=lr * 0.1), lr=lr)
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["param_groups", "warmup_cosine"]


def _exempt_names(module: nn.Module) -> set[str]:
    """Parameter names (relative to ``module``) that it or any submodule declares via ``no_weight_decay()``."""
    names: set[str] = set()
    for prefix, child in module.named_modules():
        fn = getattr(child, "no_weight_decay", None)
        if callable(fn):
            names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return names


def param_groups(
    module: nn.Module, *, weight_decay: float, lr: float | None = None, skip_frozen: bool = True
) -> list[dict]:
    """The parameters of ``module`` as AdamW groups: decayed, and exempt from decay.

    Args:
        module: The parameters' owner.
        weight_decay: Decay of the first group; the exempt group gets 0.
        lr: Learning rate of both groups; None leaves the optimiser's default.
        skip_frozen: Leave out parameters with ``requires_grad=False``; False keeps them
            (a part unfrozen later in training, e.g. a staged language model).

    Returns:
        ``[{"params", "weight_decay"[, "lr"]}, ...]``: the decayed group, then the exempt
        one (parameters with ``ndim < 2`` or named by a ``no_weight_decay()``); an empty
        group is left out.
    """
    exempt = _exempt_names(module)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if skip_frozen and not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def warmup_cosine(
    opt: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to each group's base LR, then cosine decay to ``min_lr_ratio`` x base LR.

    Args:
        opt: The optimiser; every group is scaled by the same factor.
        total_steps: Optimiser steps of the whole run (warm-up included).
        warmup_steps: Steps of the linear warm-up.
        min_lr_ratio: Final LR as a fraction of the base LR.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
