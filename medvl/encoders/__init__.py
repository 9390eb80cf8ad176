"""Encoders: the shared image encoder (``PatchEncoder``), text encoders and their registry.

Build any registered encoder by name with :func:`create_encoder`; list them with
:func:`list_encoders`; read a pretrained one (export folder, task checkpoint,
foreign state dict) with :func:`read_encoder_source`. Importing this package registers
every variant. Torch only: nothing here imports Lightning.
"""

from medvl.encoders.registry import (
    create_encoder,
    encoder_kind,
    is_encoder,
    list_encoders,
    register_encoder,
)
from medvl.encoders.interop import load_open_clip_visual, load_timm_vit
from medvl.encoders.source import EncoderSource, read_encoder_source
from medvl.encoders.vision import PatchEncoder, VisionConfig

try:  # text encoders register themselves on import
    from medvl.encoders import text  # noqa: F401
except ModuleNotFoundError as err:  # pragma: no cover - only while text.py is absent
    if err.name != "medvl.encoders.text":
        raise

__all__ = [
    "EncoderSource",
    "PatchEncoder",
    "VisionConfig",
    "create_encoder",
    "encoder_kind",
    "is_encoder",
    "list_encoders",
    "load_open_clip_visual",
    "load_timm_vit",
    "read_encoder_source",
    "register_encoder",
]
