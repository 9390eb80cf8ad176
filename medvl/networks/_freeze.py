"""How much of a task's image encoder trains: all of it, none of it, or its last blocks."""

from __future__ import annotations

from torch import nn

__all__ = ["FREEZE_MODES", "apply_freeze", "frozen_to_eval", "trunk_depth"]

FREEZE_MODES = ("none", "all", "partial")


_AFTER_TRUNK = ("blocks", "norm", "fc_norm", "head", "head_drop", "attn_pool")
"""Children of a patch encoder that are not its embedding (the blocks are split by :func:`trunk_depth`)."""


def trunk_depth(visual: nn.Module, unfreeze_last: int) -> int:
    """Blocks of the frozen trunk under ``freeze="partial"``: all but the last ``unfreeze_last``."""
    return max(0, len(visual.blocks) - unfreeze_last)


def apply_freeze(visual: nn.Module, mode: str, unfreeze_last: int = 2) -> None:
    """Set ``requires_grad`` on a patch encoder for a freeze mode.

    ``none`` trains the encoder, ``all`` freezes it, ``partial`` trains only its last
    ``unfreeze_last`` blocks and its final norm (``norm``, or ``fc_norm`` for mean-pooled
    encoders, whose ``norm`` is then the identity). What is frozen is put in eval mode
    (:func:`frozen_to_eval`; the owner calls it again in ``train()``).

    Raises:
        ValueError: An unknown mode.
    """
    if mode not in FREEZE_MODES:
        raise ValueError(f"freeze must be one of {FREEZE_MODES}, got {mode!r}")
    visual.requires_grad_(mode == "none")
    if mode == "partial":
        for blk in list(visual.blocks)[trunk_depth(visual, unfreeze_last):]:
            blk.requires_grad_(True)
        visual.norm.requires_grad_(True)
        visual.fc_norm.requires_grad_(True)
    frozen_to_eval(visual, mode, unfreeze_last)


def frozen_to_eval(visual: nn.Module, mode: str, unfreeze_last: int = 2) -> None:
    """Put the frozen part of ``visual`` in eval mode: it runs as at inference, as LiT runs its locked tower.

    ``all``: the whole encoder. ``partial``: everything but the trained last
    ``unfreeze_last`` blocks and the final norms -- the embedding (a convolutional stem's
    BatchNorm uses its running statistics and stops updating them: a frozen layer whose
    statistics drift would not be frozen), patch dropout and the earlier blocks (no
    dropout or drop-path). The frozen trunk's output is then a function of the image
    alone, which the feature cache relies on (:mod:`medvl.networks._feature_cache`).
    ``none``: nothing.
    """
    if mode == "all":
        visual.eval()
    elif mode == "partial":
        embedding = [child for name, child in visual.named_children() if name not in _AFTER_TRUNK]
        for part in (*embedding, *list(visual.blocks)[:trunk_depth(visual, unfreeze_last)]):
            part.eval()
