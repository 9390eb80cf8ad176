"""A frozen encoder's outputs (or a partly frozen one's frozen trunk), kept per input image.

A frozen encoder (``freeze="all"``: no gradients, eval mode, no dropout) maps the same
input tensor to the same tokens in every epoch, yet a training loop calls it for every
sample of every epoch, and a VQA set asks ten questions of each image (one sample per
question), so the same image is encoded ten times an epoch. The cache keys each image by
a BLAKE2b digest of its bytes (with its shape, dtype, device and the autocast dtype in
force), so a hit returns tokens computed from exactly that tensor: augmented images miss
and are computed, never confused. It holds up to ``budget_mb`` of tokens, least recently
used first out, and is emptied whenever the encoder's weights are loaded. A partly frozen
encoder (``freeze="partial"``) keeps the output of its frozen trunk (the embedding and the
blocks before the trained ones) and runs only the trained blocks each step.

Results equal the uncached forward up to the rounding a GEMM of another batch size gives
(an image is encoded in the batch it first arrives in).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch

from medvl.networks._freeze import trunk_depth

__all__ = ["FeatureCache", "frozen_feature_cache", "image_tokens"]


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


class FeatureCache:
    """LRU map from an input image to its encoder tokens, bounded in megabytes.

    Args:
        budget_mb: Most megabytes of tokens held (0 disables the cache).
    """

    def __init__(self, budget_mb: float) -> None:
        if budget_mb < 0:
            raise ValueError(f"the feature cache budget must be >= 0 MB, got {budget_mb}")
        self.budget = int(budget_mb * 2**20)
        self._store: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.trunk_blocks: int | None = None  # set by frozen_feature_cache for a partly frozen encoder

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every entry (the encoder's weights changed)."""
        self._store.clear()
        self._bytes = 0

    @staticmethod
    def _key(row: torch.Tensor, context: bytes) -> bytes:
        h = hashlib.blake2b(context, digest_size=16)
        h.update(row.view(torch.uint8).numpy().tobytes())
        return h.digest()

    def __call__(self, encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """``encode(images)``, computing only the images not held; ``(B, ...)`` tokens."""
        if self.budget == 0:
            return encode(images)
        context = repr((tuple(images.shape[1:]), images.dtype, images.device,
                        _autocast_dtype(images.device))).encode()
        host = images.detach().contiguous().cpu()  # one copy for the batch (none on the CPU)
        keys = [self._key(row, context) for row in host]
        missing: dict[bytes, int] = {}  # each image not held, by its first row (a batch may repeat one)
        for i, k in enumerate(keys):
            if k not in self._store and k not in missing:
                missing[k] = i
        fresh: dict[bytes, torch.Tensor] = {}
        if missing:
            rows_in = list(missing.values())
            out = encode(images if len(rows_in) == len(keys) else images[rows_in])
            fresh = dict(zip(missing, out.detach()))
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        rows = []
        for k in keys:
            if k in fresh:
                rows.append(fresh[k])
            else:
                self._store.move_to_end(k)
                rows.append(self._store[k])
        for k, t in fresh.items():  # after the rows are taken: an eviction cannot drop one this batch needs
            self._put(k, t)
        return torch.stack(rows)

    def _put(self, key: bytes, tokens: torch.Tensor) -> None:
        size = tokens.numel() * tokens.element_size()
        if key in self._store or size > self.budget:
            return
        self._store[key] = tokens.clone()  # not a view into the batch's output
        self._bytes += size
        while self._bytes > self.budget:
            _, old = self._store.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()


def frozen_feature_cache(visual: torch.nn.Module, freeze: str, budget_mb: float,
                         unfreeze_last: int = 0) -> FeatureCache | None:
    """The cache for a network's encoder, or None: only the frozen part of an encoder is kept.

    ``freeze="all"`` keeps the encoder's output tokens; ``freeze="partial"`` keeps the
    frozen trunk's tokens (embedding and the blocks before the last ``unfreeze_last``;
    the encoder needs ``forward_trunk``/``forward_rest``, as :class:`~medvl.encoders.PatchEncoder`
    has), and the trained blocks run on them each step. Both rely on the owner keeping the
    frozen part in eval mode (:func:`medvl.networks._freeze.frozen_to_eval`: no dropout,
    drop-path or patch dropout, BatchNorm on its running statistics), so that its output
    is a function of the image alone. It is emptied whenever the encoder's weights are
    loaded (directly or through a parent).
    """
    if budget_mb < 0:
        raise ValueError(f"feature_cache_mb must be >= 0, got {budget_mb}")
    if budget_mb == 0 or freeze == "none":
        return None
    stop = None
    if freeze == "partial":
        stop = trunk_depth(visual, unfreeze_last)  # the blocks frozen_to_eval keeps in eval mode
        if stop == 0 or not hasattr(visual, "forward_trunk"):
            return None
    cache = FeatureCache(budget_mb)
    cache.trunk_blocks = stop
    visual.register_load_state_dict_post_hook(lambda module, keys: cache.clear())
    return cache


def image_tokens(visual: torch.nn.Module, image: torch.Tensor, freeze: str,
                 cache: FeatureCache | None) -> torch.Tensor:
    """``visual.forward_features(image)``: without gradients where frozen, its frozen part through ``cache`` if any."""
    if cache is not None and cache.trunk_blocks is not None:  # partly frozen: cached trunk, trained rest
        stop = cache.trunk_blocks
        with torch.no_grad():
            trunk = cache(lambda x: visual.forward_trunk(x, stop), image)
        return visual.forward_rest(trunk, stop, tuple(image.shape[2:]))
    with torch.set_grad_enabled(torch.is_grad_enabled() and freeze != "all"):
        if cache is None:
            return visual.forward_features(image)
        return cache(visual.forward_features, image)
