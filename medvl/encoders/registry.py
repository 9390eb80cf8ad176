"""Registry of encoder factories: one way to build an encoder, by name.

Modelled on timm's ``_registry.py`` (Wightman, "PyTorch Image Models",
github.com/huggingface/pytorch-image-models): a small factory function fixes a
variant's arguments and is registered under its own ``__name__``;
``create_encoder(name, **overrides)`` calls it with keyword overrides. Each entry
carries a ``kind`` tag (``"vision"`` or ``"text"``) so image and text towers share one
namespace and one lookup.

Example:
    >>> @register_encoder
    ... def my_vit(**overrides): ...
    >>> @register_encoder(kind="text")
    ... def my_bert(**overrides): ...
    >>> enc = create_encoder("vit_small_patch16", in_chans=1, img_size=224)
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar, overload

import torch.nn as nn

__all__ = ["create_encoder", "encoder_kind", "is_encoder", "list_encoders", "register_encoder"]

F = TypeVar("F", bound=Callable[..., nn.Module])

KINDS = ("vision", "text")

_factories: dict[str, Callable[..., nn.Module]] = {}
_kinds: dict[str, str] = {}


def _register(fn: F, kind: str) -> F:
    if kind not in KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {KINDS}")
    name = fn.__name__
    existing = _factories.get(name)
    # Re-registering from the same module (e.g. importlib.reload) replaces the entry;
    # a second module claiming the same name is a mistake worth stopping.
    if existing is not None and existing.__module__ != fn.__module__:
        raise ValueError(
            f"encoder {name!r} is already registered by {existing.__module__}; "
            f"{fn.__module__} cannot register it again"
        )
    _factories[name] = fn
    _kinds[name] = kind
    return fn


@overload
def register_encoder(fn: F) -> F: ...
@overload
def register_encoder(*, kind: str = "vision") -> Callable[[F], F]: ...
def register_encoder(fn: F | None = None, *, kind: str = "vision") -> Any:
    """Registers an encoder factory under ``fn.__name__``.

    Usable bare (``@register_encoder``, kind ``"vision"``) or with a kind tag
    (``@register_encoder(kind="text")``).

    Args:
        fn: The factory; it must accept keyword overrides and return an ``nn.Module``.
        kind: ``"vision"`` or ``"text"``.

    Returns:
        The factory unchanged, or a decorator when called with keywords only.
    """
    if fn is None:
        return lambda f: _register(f, kind)
    return _register(fn, kind)


def _unknown(name: str) -> KeyError:
    close = difflib.get_close_matches(name, _factories, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return KeyError(
        f"unknown encoder {name!r}.{hint} See medvl.encoders.list_encoders() "
        f"for the {len(_factories)} registered names."
    )


def create_encoder(name: str, **overrides: Any) -> nn.Module:
    """Builds a registered encoder.

    Args:
        name: Registered factory name, e.g. ``"vit_small_patch16"``.
        **overrides: Keyword arguments forwarded to the factory, overriding the
            variant's fixed arguments (e.g. ``in_chans=1, img_size=224``).

    Returns:
        The encoder module.

    Raises:
        KeyError: If ``name`` is not registered; the message lists close names.
    """
    if name not in _factories:
        raise _unknown(name)
    return _factories[name](**overrides)


def list_encoders(pattern: str | None = None, kind: str | None = None) -> list[str]:
    """Lists registered encoder names, sorted.

    Args:
        pattern: Optional ``fnmatch`` wildcard, e.g. ``"vit_*_patch16"``.
        kind: Optional kind filter, ``"vision"`` or ``"text"``.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {KINDS}")
    names = sorted(_factories)
    if pattern is not None:
        names = fnmatch.filter(names, pattern)
    if kind is not None:
        names = [n for n in names if _kinds[n] == kind]
    return names


def is_encoder(name: str) -> bool:
    """Whether ``name`` is a registered encoder."""
    return name in _factories


def encoder_kind(name: str) -> str:
    """The kind tag (``"vision"`` or ``"text"``) of a registered encoder."""
    if name not in _kinds:
        raise _unknown(name)
    return _kinds[name]
