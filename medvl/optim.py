"""Parameter groups with weight-decay exemptions and a warm-up + cosine schedule, shared by the tasks.

Decoupled weight decay (AdamW, Loshchilov & Hutter, arXiv:1711.05101) is not applied to
biases, norm weights, scalars (``ndim < 2``) or to the embeddings a module names in its
``no_weight_decay()`` (timm's convention: position embeddings, class tokens). The
learning rate warms up linearly and then follows a half cosine (SGDR, Loshchilov &
Hutter, arXiv:1608.03983, without restarts). Torch only: nothing here imports Lightning.

A task combines the groups of its parts, each at its own learning rate::

    opt = adamw(param_groups(head, weight_decay=0.05, lr=lr)
                + param_groups(encoder, weight_decay=0.05, lr=lr * 0.1), lr=lr)

Under FSDP the rule is applied to the parameters as built, not as sharded. Torch's FSDP
(``FullyShardedDataParallel``, which Lightning's ``FSDPStrategy`` uses) with
``use_orig_params=True`` keeps the original parameter objects and their names (behind
``_fsdp_wrapped_module.`` prefixes) but turns their data into flat 1-D shards, so every
weight would look like a bias; Lightning calls ``configure_optimizers`` after wrapping.
So :func:`record_shapes` notes each parameter's shape on the parameter object before the
wrap (the tasks call it in ``configure_model``, which Lightning runs before any strategy
wraps the model), and :func:`param_groups` reads that note for a parameter FSDP has
flattened, and strips the wrappers' prefixes from the names it matches against
``no_weight_decay()``. FSDP2 (``fully_shard``) keeps the names and gives each parameter
a ``DTensor`` of the global shape, so the rule holds there without a note. A flattened
parameter without a note, or FSDP's ``FlatParameter`` (``use_orig_params=False``, where
one tensor holds a whole unit's parameters and no per-parameter group is possible),
raises instead of silently losing weight decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["adamw", "param_groups", "record_shapes", "warmup_cosine"]

_SHAPE = "_medvl_shape"  # the attribute record_shapes sets on a parameter
_WRAPPERS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
"""Name components that FSDP, activation checkpointing and ``torch.compile`` wrappers insert."""


def _clean(name: str) -> str:
    """``name`` without the wrappers' components (``blocks.0._fsdp_wrapped_module.mlp.fc1.weight`` -> ``blocks.0.mlp.fc1.weight``)."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPERS)


def _flattened(p: torch.Tensor) -> bool:
    """Whether torch's FSDP (v1) manages ``p``: its data is then a flat shard, not the parameter's shape."""
    return bool(getattr(p, "_fsdp_flattened", False))


def record_shapes(module: nn.Module) -> nn.Module:
    """Note each parameter's shape on the parameter itself, for :func:`param_groups` after an FSDP wrap.

    Call it on the model as built, before any wrapper shards it (the tasks do in
    ``configure_model``); parameters already under FSDP keep the note they have. The note
    is a plain attribute of the parameter object: it survives ``.to()``, DDP and FSDP with
    ``use_orig_params=True`` (which keep the objects), not a state dict or a deep copy.

    Returns:
        ``module``.
    """
    for p in module.parameters():
        if not _flattened(p):
            setattr(p, _SHAPE, tuple(p.shape))
    return module


def _ndim(name: str, p: torch.Tensor) -> int:
    """The number of dimensions ``p`` was built with (its noted shape under FSDP)."""
    if getattr(p, "_is_flat_param", False) or name.split(".")[-1] == "_flat_param":  # isinstance(p, FlatParameter)
        raise ValueError(f"param_groups: {name} is FSDP's FlatParameter (a whole unit's parameters in one tensor), "
                         "which cannot be split into weight-decay groups: wrap with use_orig_params=True "
                         "(trainer/fsdp.yaml does)")
    if _flattened(p):
        shape = getattr(p, _SHAPE, None)
        if shape is None:
            raise ValueError(f"param_groups: {_clean(name)} is sharded by FSDP and its shape was not recorded before "
                             "the wrap, so weight-decay exemptions cannot be decided: call "
                             "medvl.optim.record_shapes(model) before wrapping (a task does it in configure_model)")
        return len(shape)
    return p.ndim  # a DTensor (FSDP2) reports its global shape


def _exempt_names(module: nn.Module) -> set[str]:
    """Parameter names (relative to ``module``, wrappers stripped) declared via ``no_weight_decay()`` in it or below."""
    names: set[str] = set()
    for prefix, child in module.named_modules():
        fn = getattr(child, "no_weight_decay", None)
        if callable(fn):
            prefix = _clean(prefix)
            names |= {_clean(f"{prefix}.{n}" if prefix else n) for n in fn()}
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

    Under FSDP the decision is the unwrapped module's (see the module docstring):
    names are matched without the wrappers' prefixes, and a parameter sharded by torch's
    FSDP is judged by the shape :func:`record_shapes` noted before the wrap. The groups
    then hold the same parameter objects, split the same way, as for the unwrapped model.

    Returns:
        ``[{"params", "weight_decay"[, "lr"]}, ...]``: the decayed group, then the exempt
        one (parameters built with ``ndim < 2`` or named by a ``no_weight_decay()``); an
        empty group is left out.

    Raises:
        ValueError: A parameter is FSDP's ``FlatParameter`` (``use_orig_params=False``), or
            FSDP sharded it without a :func:`record_shapes` note.
    """
    exempt = _exempt_names(module)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if skip_frozen and not p.requires_grad:
            continue
        (no_decay if _ndim(name, p) < 2 or _clean(name) in exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel takes every tensor of ``params``.

    It needs floating-point tensors on one device type it has a kernel for (CPU and CUDA
    here) and plain tensors: DTensors (FSDP2) go to the multi-tensor (foreach) path, which
    dispatches through them on every version of torch medvl supports.
    """
    if not params:
        return False
    try:
        from torch.distributed.tensor import DTensor  # noqa: PLC0415  (imported only when asked)
    except ImportError:  # a torch built without distributed support has no DTensors either
        DTensor = ()  # noqa: N806
    kinds = {p.device.type for p in params}
    return (len(kinds) == 1 and kinds <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
            and not any(isinstance(p, DTensor) for p in params))


def adamw(groups: list[dict], **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``groups`` with its fastest implementation for their tensors.

    The default for-each-parameter loop spends ~40% of a small model's CPU training step in
    per-tensor element-wise ops; the fused kernel (one pass per tensor, CPU and CUDA) does
    the same update, and the multi-tensor ``foreach`` path is the fallback (DTensors, other
    devices). The update is AdamW's either way (equal to the loop to float rounding).

    Args:
        groups: Parameter groups (:func:`param_groups`), or a plain list of parameters.
        **kwargs: AdamW's arguments (``lr``, ``betas``, ...); an explicit ``fused`` or
            ``foreach`` wins.
    """
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if "fused" not in kwargs and "foreach" not in kwargs:
        if _fused_ok(params):
            kwargs["fused"] = True
        else:
            kwargs["foreach"] = True
    return torch.optim.AdamW(groups, **kwargs)


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
