"""medvl: medical vision-language models from DICOM.

The public API needs torch only; the Lightning tasks live in :mod:`medvl.models` and
:mod:`medvl.datamodules`.
"""

from medvl.encoders import create_encoder, is_encoder, list_encoders, register_encoder
from medvl.export import export_encoder, load_encoder
from medvl.kernels import set_fused

__version__ = "0.1.0"

__all__ = [
    "create_encoder",
    "list_encoders",
    "is_encoder",
    "register_encoder",
    "export_encoder",
    "load_encoder",
    "set_fused",
    "__version__",
]
