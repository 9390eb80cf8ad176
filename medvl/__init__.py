"""medvl: medical vision-language models from DICOM.

The public API needs torch only; the Lightning tasks live in :mod:`medvl.models` and
:mod:`medvl.datamodules`.
"""

from medvl._lazy import lazy_attributes
from medvl.encoders import create_encoder, is_encoder, list_encoders, read_encoder_source, register_encoder
from medvl.export import export_encoder, load_encoder
from medvl.kernels import set_fused

# The networks (plain torch modules), imported on first use.
_LAZY = {
    "FusionVQA": "medvl.networks",
    "GenerativeVQA": "medvl.networks",
    "ImageClassifier": "medvl.networks",
    "ImageTextModel": "medvl.networks",
    "ReportGenerator": "medvl.networks",
}

__version__ = "0.1.0"

__all__ = [
    "create_encoder",
    "list_encoders",
    "is_encoder",
    "register_encoder",
    "export_encoder",
    "load_encoder",
    "read_encoder_source",
    "set_fused",
    "__version__",
    *_LAZY,
]

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
