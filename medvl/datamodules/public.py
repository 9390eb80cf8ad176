"""Deprecated names of the public-dataset data modules, kept working for one release.

The public datasets are :class:`~medvl.datamodules.ImageTextDataModule` composed with a
source of :mod:`medvl.data.sources` (``source: {class_path: medvl.data.sources.MIMICCXR,
init_args: {root: ...}}``; see ``datamodules/*.yaml``). ``MIMICCXR(root=..., batch_size=...)``
and the other old names still build exactly that, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from medvl.data import sources
from medvl.datamodules.base import ImageTextDataModule

__all__ = ["PMCOA", "ROCO", "CheXpert", "IUXray", "MIMICCXR", "TableDataModule"]


def _deprecated(name: str, source_cls: type[sources.RecordSource]) -> type[ImageTextDataModule]:
    params = set(inspect.signature(source_cls).parameters)
    new = f"ImageTextDataModule(source=medvl.data.sources.{source_cls.__name__}(...), ...)"

    def __init__(self: ImageTextDataModule, *args: Any, **kwargs: Any) -> None:
        warnings.warn(f"medvl.datamodules.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        source = source_cls(*args, **{k: kwargs.pop(k) for k in list(kwargs) if k in params})
        ImageTextDataModule.__init__(self, source, **kwargs)

    doc = f"Deprecated: {new}. Takes the source's arguments and the loader options together."
    return type(name, (ImageTextDataModule,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


MIMICCXR = _deprecated("MIMICCXR", sources.MIMICCXR)
CheXpert = _deprecated("CheXpert", sources.CheXpert)
IUXray = _deprecated("IUXray", sources.IUXray)
ROCO = _deprecated("ROCO", sources.ROCO)
PMCOA = _deprecated("PMCOA", sources.PMCOA)
TableDataModule = _deprecated("TableDataModule", sources.Table)
