"""AdamW with decay exemptions and a warm-up + cosine schedule, shared by the tasks."""

from __future__ import annotations

import math

import torch
from torch import nn


def _exempt_names(module: nn.Module) -> set[str]:
    """Parameter names the child modules declare as exempt via ``no_weight_decay()``."""
    names: set[str] = set()
    for prefix, child in module.named_modules():
        fn = getattr(child, "no_weight_decay", None)
        if child is not module and callable(fn):
            names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return names


def build_adamw(module: nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW where 1-d parameters (biases, norms, scalars) and declared embeddings skip decay."""
    exempt = _exempt_names(module)
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


def warmup_cosine(opt: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0):
    """Linear warm-up from 0 to the base LR, then cosine decay to ``min_lr_ratio`` × base LR."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
