"""Task heads: plain modules that return tensors or dicts, never losses."""

from medvl.heads.projection import ProjectionHead

__all__ = ["ProjectionHead"]
