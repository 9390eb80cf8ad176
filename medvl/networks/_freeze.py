"""How much of a task's image encoder trains: all of it, none of it, or its last blocks."""

from __future__ import annotations

from torch import nn

__all__ = ["FREEZE_MODES", "apply_freeze"]

FREEZE_MODES = ("none", "all", "partial")


def apply_freeze(visual: nn.Module, mode: str, unfreeze_last: int = 2) -> None:
    """Set ``requires_grad`` on a patch encoder for a freeze mode.

    ``none`` trains the encoder, ``all`` freezes it (and puts it in eval mode: a frozen
    encoder runs as at inference, without dropout or drop-path; the owner keeps it there
    in ``train()``), ``partial`` trains only its last ``unfreeze_last`` blocks and its
    final norm (``norm``, or ``fc_norm`` for mean-pooled encoders, whose ``norm`` is then
    the identity).

    Raises:
        ValueError: An unknown mode.
    """
    if mode not in FREEZE_MODES:
        raise ValueError(f"freeze must be one of {FREEZE_MODES}, got {mode!r}")
    visual.requires_grad_(mode == "none")
    if mode == "partial":
        n = len(visual.blocks)
        for blk in list(visual.blocks)[max(0, n - unfreeze_last):]:
            blk.requires_grad_(True)
        visual.norm.requires_grad_(True)
        visual.fc_norm.requires_grad_(True)
    if mode == "all":
        visual.eval()
