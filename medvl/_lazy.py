"""Lazy attributes for package ``__init__`` modules (PEP 562).

Some public names live in modules that are slow to import (MONAI) or rarely needed
(report metrics); a package lists them in a ``{name: module}`` table and gets a
``__getattr__``/``__dir__`` pair that imports each module on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose lazy names are ``table``.

    Args:
        package: The package's ``__name__`` (for the error message).
        namespace: The package's ``globals()``; a loaded name is cached there, so later
            lookups skip ``__getattr__``.
        table: Public name -> module that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
