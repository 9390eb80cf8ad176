"""Export a trained image encoder as safetensors + JSON config, and load it back with torch alone.

An export folder holds ``model.safetensors`` (the encoder's state dict),
``projection.safetensors`` (the contrastive image projection, when the task has one)
and ``config.json`` (registry name, constructor overrides and preprocessing). Loading
needs torch, safetensors and :mod:`medvl.encoders`; never Lightning. Checkpoints are
read with ``torch.load(weights_only=True)``: nothing in them is unpickled as code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.encoders import create_encoder

__all__ = ["export_encoder", "load_encoder", "EXPORT_FORMAT"]

EXPORT_FORMAT = "medvl-encoder/1"

# Task hyper-parameters that describe the image encoder, as saved by every medvl task.
_ENCODER_KEYS = ("vision_encoder", "img_size", "in_chans", "vision_kwargs")


def _submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}


def export_encoder(checkpoint: str | Path, out: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write the image encoder of a medvl task checkpoint to ``out``.

    Args:
        checkpoint: A Lightning checkpoint written by a medvl task.
        out: Folder to create or overwrite.
        extra: Extra JSON-serialisable entries for ``config.json`` (e.g. test metrics).

    Returns:
        The export folder.
    """
    from safetensors.torch import save_file

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hp = ckpt.get("hyper_parameters", {})
    missing = [k for k in _ENCODER_KEYS[:3] if k not in hp]
    if missing:
        raise ValueError(f"{checkpoint}: not a medvl task checkpoint (hyper-parameters lack {missing})")
    state = ckpt["state_dict"]
    encoder = _submodule_state(state, "visual.")
    if not encoder:
        raise ValueError(f"{checkpoint}: no 'visual.' weights in the state dict")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(encoder, str(out / "model.safetensors"), metadata={"format": EXPORT_FORMAT})
    proj = _submodule_state(state, "image_proj.")
    if proj:
        save_file(proj, str(out / "projection.safetensors"), metadata={"format": EXPORT_FORMAT})
    config = {
        "format": EXPORT_FORMAT,
        "architecture": hp["vision_encoder"],
        "encoder_kwargs": {"img_size": hp["img_size"], "in_chans": hp["in_chans"], **(hp.get("vision_kwargs") or {})},
        "embed_dim": hp.get("embed_dim"),
        "projection": hp.get("projection") if proj else None,
        "preprocessing": {
            "in_chans": hp["in_chans"],
            "img_size": hp["img_size"],
            "resize": "longest side to img_size, zero-pad to square",
            "intensity": "DICOM modality LUT, VOI LUT/window, MONOCHROME1 inverted; scaled to [0, 1]",
            "mean": hp.get("image_mean", 0.0),
            "std": hp.get("image_std", 1.0),
        },
        **(extra or {}),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def load_encoder(path: str | Path, *, with_projection: bool = False) -> nn.Module | tuple[nn.Module, nn.Module]:
    """Load an exported encoder (and optionally its image projection) in eval mode.

    Args:
        path: An export folder written by :func:`export_encoder`.
        with_projection: Also return the contrastive projection head.
    """
    from safetensors.torch import load_file

    from medvl.heads import ProjectionHead

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json; not a medvl export folder")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{cfg_path}: unsupported export format {cfg.get('format')!r}")
    encoder = create_encoder(cfg["architecture"], **cfg["encoder_kwargs"])
    encoder.load_state_dict(load_file(str(path / "model.safetensors")))
    encoder.pretrained_cfg = cfg["preprocessing"]
    encoder.eval()
    if not with_projection:
        return encoder
    proj_state = load_file(str(path / "projection.safetensors"))
    head = ProjectionHead(encoder.num_features, cfg["embed_dim"], cfg["projection"])
    head.load_state_dict(proj_state)
    return encoder, head.eval()
