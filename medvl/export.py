"""Export a trained image encoder in the formats downstream users load, and load it back with torch alone.

``export_encoder(source, out)`` writes one folder:

* ``model.safetensors`` - the encoder's state dict (medvl / timm parameter names);
* ``projection.safetensors`` - the image projection into the joint space, when the
  task has one;
* ``text.safetensors`` - the text tower, when the task has one (a contrastive or fusion
  VQA checkpoint): ``config.json["text_encoder"]`` names its architecture, and a fusion VQA
  starts its question encoder from it (``text_pretrained``);
* ``config.json`` - architecture, preprocessing (channels, size, window, mean/std) and
  what each other file is and how it was checked;
* ``README.md`` - a model card (architecture, parameter count, preprocessing, intended
  use, how to load with medvl / timm / torch, training data, metrics);
* ``timm/model.safetensors`` - loads into ``timm.create_model(arch, pretrained=True,
  pretrained_cfg_overlay=dict(file=...), **kwargs)`` with the ``arch``/``kwargs`` in
  ``config.json["timm"]`` (patchify-stem 2-D encoders only; timm has no conv stem);
* ``model.torchscript.pt`` - ``torch.jit.trace`` of normalised image -> (pooled
  features, tokens), for ``torch.jit.load``;
* ``model.onnx`` - the same graph with a dynamic batch axis (``torch.onnx.export``),
  checked against onnxruntime at export time (max abs difference in ``config.json``).

Sources
-------
Whatever :func:`~medvl.encoders.read_encoder_source` reads (the one contract for where an
encoder's weights and preprocessing come from): a **task checkpoint** of any medvl task
(network under ``model.``, encoder ``model.visual.``, projection ``model.image_proj.``;
architecture and preprocessing in the hyper-parameters ``vision_encoder``, ``img_size``,
``in_chans``, ``vision_kwargs``, ``image_mean``, ``image_std``, ``window``), an **export
folder** (re-exported, e.g. to add formats), an **encoder state dict file** with ``arch``
(a registry name; or ``"timm"``/``"timm:<name>"``/``"open_clip"``/``"open_clip:<name>"``
to convert with :mod:`medvl.encoders.interop`), or a **PatchEncoder** instance.

Loading (:func:`load_encoder`) needs torch, safetensors and :mod:`medvl.encoders`,
never Lightning; the encoder comes back with ``pretrained_cfg`` (the preprocessing),
``preprocess`` (a :class:`~medvl._preprocess.Preprocessor`) and ``encode(images)``
(path / array / tensor -> pooled features). Checkpoints are read with
``torch.load(weights_only=True)``: nothing in them is unpickled as code. Nothing from
DICOM headers is written.
"""

from __future__ import annotations

import json
import math
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl._preprocess import ImageInput, Preprocessor
from medvl.encoders import PatchEncoder
from medvl.encoders.source import EXPORT_FORMAT, TEXT_WEIGHTS, read_encoder_source

__all__ = ["export_encoder", "load_encoder", "EXPORT_FORMAT", "ONNX_TOLERANCE"]

# Largest |onnxruntime - torch| accepted at export in fp32 (kernels differ in summation order).
ONNX_TOLERANCE = 1e-3
FORMATS = ("timm", "torchscript", "onnx")
# Files an export may write besides config.json and README.md.
_ARTEFACTS = ("model.safetensors", "projection.safetensors", "text.safetensors", "timm/model.safetensors",
              "model.torchscript.pt", "model.onnx", "model.onnx.data")

# Normalisation recorded for a source that does not say (a foreign state dict, a module): identity.
_DEFAULT_NORMALISATION = {"mean": 0.0, "std": 1.0}


# ------------------------------------------------------------------ bookkeeping
def _json_ready(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


# ------------------------------------------------------------------ graph exports
class _Features(nn.Module):
    """Normalised image ``(B, C, S, S)`` -> (pooled features ``(B, D)``, tokens ``(B, P + N, D)``)."""

    def __init__(self, encoder: PatchEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder.forward_features(image)  # (B, P + N, D)
        return self.encoder.forward_head(tokens, pre_logits=True), tokens


def _example(encoder: PatchEncoder, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = tuple(encoder.img_size)
    return torch.randn(batch, encoder.in_chans, *size, generator=g)


def _export_torchscript(module: _Features, example: torch.Tensor, path: Path) -> dict[str, Any]:
    check = _example(module.encoder, batch=example.shape[0] + 1, seed=1)  # another batch size
    with warnings.catch_warnings():
        # Shape checks become constants (the input size is fixed, the batch is not), and
        # torch.jit is deprecated in favour of torch.export but still the format asked for.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(module, example).save(str(path))
        with torch.no_grad():
            ref, got = module(check)[0], torch.jit.load(str(path))(check)[0]
    return {"file": path.name, "inputs": ["image"], "outputs": ["features", "tokens"],
            "max_abs_diff": float((ref - got).abs().max())}


def _export_onnx(module: _Features, example: torch.Tensor, path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    names = dict(input_names=["image"], output_names=["features", "tokens"])
    # one self-contained file unless the weights pass protobuf's 2 GiB limit
    external = sum(p.numel() * p.element_size() for p in module.parameters()) > 1_800_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated, and says so
        try:
            # The TorchScript-based exporter first: seconds where torch.export takes minutes on a ViT-L.
            exporter = "torchscript"
            axes = {n: {0: "batch"} for n in ("image", "features", "tokens")}
            torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes=axes, opset_version=17, **names)
        except Exception:  # noqa: BLE001 - removed or failing: the torch.export-based exporter
            exporter = "dynamo"
            torch.onnx.export(module, (example,), str(path), dynamo=True, verbose=False, external_data=external,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), **names)
    import onnx

    imports = onnx.load(str(path), load_external_data=False).opset_import
    opset = next((o.version for o in imports if o.domain in ("", "ai.onnx")), None)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = _example(module.encoder, batch=example.shape[0] + 1, seed=1)  # another batch size: the axis is dynamic
    with torch.no_grad():
        ref = module(check)
    got = session.run(None, {"image": check.numpy()})
    diff = max(float((r - torch.from_numpy(g)).abs().max()) for r, g in zip(ref, got))
    if not math.isfinite(diff) or diff > ONNX_TOLERANCE:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {diff:.2e} (> {ONNX_TOLERANCE:g})")
    return {"file": path.name, "inputs": ["image"], "outputs": ["features", "tokens"], "dynamic_axes": {"image": [0]},
            "opset": opset, "exporter": exporter, "onnxruntime": ort.__version__, "max_abs_diff": diff}


def _export_timm(encoder: PatchEncoder, out: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    from medvl.encoders.interop import timm_export

    state, spec = timm_export(encoder)
    (out / "timm").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "timm" / "model.safetensors"),
              metadata={"format": "timm"})
    return {"file": "timm/model.safetensors", **spec}


# ------------------------------------------------------------------ export
def export_encoder(
    checkpoint: str | Path | PatchEncoder,
    out: str | Path,
    *,
    arch: str | None = None,
    encoder_kwargs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    formats: tuple[str, ...] | list[str] = FORMATS,
    image_mean: float | list[float] | None = None,
    image_std: float | list[float] | None = None,
    window: tuple[float, float] | str | None = None,
) -> Path:
    """Writes the image encoder of ``checkpoint`` to ``out`` in every format.

    Args:
        checkpoint: A medvl task checkpoint (see the module docstring for the contract),
            an export folder, an encoder state-dict file (with ``arch``), or a
            :class:`PatchEncoder`.
        out: Folder to create or overwrite.
        arch: For a plain state-dict file: registry name, or ``"timm[:<timm name>]"`` /
            ``"open_clip[:<model name>]"`` to convert foreign weights.
        encoder_kwargs: For a plain state-dict file: keyword arguments of
            ``create_encoder`` / :func:`~medvl.encoders.interop.load_timm_vit` /
            :func:`~medvl.encoders.interop.load_open_clip_visual`, e.g. ``{"num_heads": 12}``
            (head counts are not in the weights).
        extra: JSON-serialisable entries for ``config.json``; ``test_metrics`` (or
            ``metrics``) and ``training_data`` also go into the model card.
        formats: Any of ``"timm"``, ``"torchscript"``, ``"onnx"`` (the safetensors
            weights, config and card are always written).
        image_mean: Normalisation mean, overriding the source's (default 0).
        image_std: Normalisation std, overriding the source's (default 1).
        window: DICOM window to record, overriding the source's (default: each file's).

    Returns:
        The export folder.

    Raises:
        ValueError: The source is unreadable or breaks the contract; the message names it.
        RuntimeError: ONNX and onnxruntime disagree beyond ``ONNX_TOLERANCE``.
    """
    from safetensors.torch import save_file

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)}; expected some of {FORMATS}")
    src = read_encoder_source(checkpoint, arch=arch, encoder_kwargs=encoder_kwargs)
    text = src.text  # read with the source, before the folder is cleared: the source may be the export itself
    pre = dict(src.preprocessing)
    for key, value in (("mean", image_mean), ("std", image_std), ("window", window)):
        if value is not None:
            pre[key] = list(value) if isinstance(value, tuple) else value
    for key, value in _DEFAULT_NORMALISATION.items():
        if pre.get(key) is None:
            pre[key] = value
    Preprocessor.from_config(pre)  # validates mean/std against the channels
    encoder = src.encoder.cpu().eval()
    from medvl.encoders.interop import vision_config_dict

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in _ARTEFACTS:  # an earlier export into the same folder (the source is in memory by now)
        (out / stale).unlink(missing_ok=True)
    weights = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    save_file(weights, str(out / "model.safetensors"), metadata={"format": EXPORT_FORMAT})
    if src.projection:
        save_file({k: v.contiguous() for k, v in src.projection.items()}, str(out / "projection.safetensors"),
                  metadata={"format": EXPORT_FORMAT})
    if text is not None:
        save_file({k: v.contiguous() for k, v in text.state.items()}, str(out / TEXT_WEIGHTS),
                  metadata={"format": EXPORT_FORMAT})

    config: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "architecture": src.architecture,
        "encoder_kwargs": _json_ready(src.encoder_kwargs),
        "vision_config": vision_config_dict(encoder.config),
        "num_features": encoder.num_features,
        "num_params": sum(p.numel() for p in encoder.parameters()),
        "embed_dim": src.embed_dim,
        "projection": src.projection_kind,
        "task": src.task,
        "source": src.origin,
        "preprocessing": _json_ready(pre),
        "label_names": src.label_names,
        "text_encoder": None if text is None else {"architecture": text.architecture, "kwargs": _json_ready(text.kwargs)},
        "inputs": "image (B, in_chans, img_size, img_size), normalised: (x - mean) / std of [0, 1] grey levels",
    }
    from medvl.kernels import use_fused

    module = _Features(encoder).eval()
    example = _example(encoder)
    with use_fused(False), torch.no_grad():  # plain PyTorch ops only: no Triton kernel in a traced graph
        if "timm" in formats:
            try:
                config["timm"] = _export_timm(encoder, out)
            except ValueError as err:
                config["timm"], config["timm_unavailable"] = None, str(err)
        if "torchscript" in formats:
            config["torchscript"] = _export_torchscript(module, example, out / "model.torchscript.pt")
        if "onnx" in formats:
            try:
                config["onnx"] = _export_onnx(module, example, out / "model.onnx")
            except ImportError as err:
                config["onnx"], config["onnx_unavailable"] = None, f"{err.name} is not installed"
    config.update(_json_ready(extra or {}))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "README.md").write_text(_model_card(config, extra or {}))
    return out


# ------------------------------------------------------------------ model card
def _model_card(cfg: dict[str, Any], extra: dict[str, Any]) -> str:
    vc, pre = cfg["vision_config"], cfg["preprocessing"]
    norms = [n for n in ("pre_norm", "fc_norm") if vc[n]]
    arch = (f"Vision Transformer (`medvl.encoders.PatchEncoder`, closest registered variant `{cfg['architecture']}`): "
            f"{vc['stem']} stem, patch {vc['patch_size']}, width {vc['embed_dim']}, depth {vc['depth']}, "
            f"{vc['num_heads']} heads, MLP ratio {vc['mlp_ratio']}, "
            f"{'class token' if vc['class_token'] else 'no class token'}, pooling `{vc['global_pool']}`"
            f"{', extra norms: ' + ', '.join(norms) if norms else ''}.")
    params = f"{cfg['num_params']:,}"
    proj = (f"A `{cfg['projection']}` projection to the {cfg['embed_dim']}-d joint image-text space is in "
            "`projection.safetensors`." if cfg.get("projection") else "No projection head is included.")
    if cfg.get("text_encoder"):
        proj += (f" The text tower (`{cfg['text_encoder']['architecture']}`) is in `text.safetensors`; a fusion VQA "
                 "starts its question encoder from it with `text_pretrained: <this folder>`.")
    window = pre.get("window") or "each file's own VOI LUT / window"
    lines = [
        f"# medvl image encoder: {cfg['architecture']}",
        "",
        "## Architecture",
        "",
        arch,
        "",
        f"Parameters: {params}. Pooled feature width: {cfg['num_features']}. {proj}",
        f"Trained by: `{cfg.get('task') or 'unknown task'}` (source: {cfg['source']}).",
        "",
        "## Preprocessing",
        "",
        f"- channels: {pre['in_chans']}; input size: {pre['img_size']} x {pre['img_size']}",
        f"- intensity: {pre['intensity']}; window: {window}",
        f"- resize: {pre['resize']}",
        f"- normalisation: (x - {pre['mean']}) / {pre['std']}",
        "",
        "`medvl.load_encoder(folder).encode(x)` applies all of this to a DICOM/PNG path, a numpy array "
        "or a tensor in [0, 1]. The TorchScript, ONNX and timm files expect the normalised tensor.",
        "",
        "## Intended use",
        "",
        "Research on medical vision-language models: feature extraction, linear probing and fine-tuning "
        "on radiographs prepared as above. Not a medical device; not validated for clinical decisions. "
        "Features reflect the training data below and inherit its biases.",
        "",
        "## How to load",
        "",
        "```python",
        "import medvl",
        "encoder = medvl.load_encoder(\"<this folder>\")          # torch only",
        "features = encoder.encode(\"image.dcm\")                 # (1, D)",
        "```",
        "",
    ]
    if cfg.get("timm"):
        t = cfg["timm"]
        kw = ", ".join(f"{k}={v!r}" for k, v in t["kwargs"].items())
        lines += ["```python", "import timm",
                  f"model = timm.create_model({t['arch']!r}, pretrained=True,",
                  f"    pretrained_cfg_overlay=dict(file=\"<this folder>/{t['file']}\"), {kw})", "```", ""]
    else:
        lines += [f"No timm file: {cfg.get('timm_unavailable', 'not requested')}.", ""]
    lines += ["```python", "import torch"]
    if cfg.get("torchscript"):
        lines += ["features, tokens = torch.jit.load(\"<this folder>/model.torchscript.pt\")(x)  # x normalised"]
    lines += ["from safetensors.torch import load_file",
              "state = load_file(\"<this folder>/model.safetensors\")", "```", ""]
    if cfg.get("onnx"):
        o = cfg["onnx"]
        lines += [f"ONNX: `model.onnx` (opset {o['opset']}, dynamic batch), outputs `features`, `tokens`; "
                  f"max |onnxruntime - torch| at export: {o['max_abs_diff']:.2e}.", ""]
    lines += ["## Training data", ""]
    data = extra.get("training_data")
    lines += [str(data) if data else "Not recorded in the checkpoint; see the training recipe"
              + (f" `{extra['source_config']}`." if extra.get("source_config") else "."), ""]
    metrics = extra.get("test_metrics") or extra.get("metrics")
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines += ["None given at export."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ loading
def _encode(self: PatchEncoder, images: ImageInput) -> torch.Tensor:
    """Preprocesses ``images`` (path, array, tensor or list) and returns pooled features ``(B, D)``."""
    param = next(self.parameters())
    x = self.preprocess(images).to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        return self.forward_head(self.forward_features(x), pre_logits=True)


def load_encoder(path: str | Path, *, with_projection: bool = False) -> nn.Module | tuple[nn.Module, nn.Module]:
    """Loads an exported encoder (and optionally its image projection) in eval mode.

    The encoder carries its preprocessing: ``encoder.pretrained_cfg`` (the
    ``preprocessing`` entry of ``config.json``), ``encoder.preprocess(images)`` (->
    normalised batch) and ``encoder.encode(images)`` (-> pooled features ``(B, D)``),
    where ``images`` is a DICOM/PNG/JPEG path, a numpy array ``(H, W)``/``(C, H, W)``
    in [0, 1], a tensor ``(B, C, H, W)`` in [0, 1], or a list of those.

    Args:
        path: An export folder written by :func:`export_encoder`.
        with_projection: Also return the projection head into the joint space.

    Returns:
        The encoder, or ``(encoder, projection)``.
    """
    from medvl.heads import ProjectionHead

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not an export folder (write one with medvl.export_encoder / medvl export)")
    src = read_encoder_source(path)
    encoder = src.encoder
    encoder.pretrained_cfg = src.preprocessing
    if encoder.config.spatial_dims == 2:
        encoder.preprocess = Preprocessor.from_config(src.preprocessing)
        encoder.encode = types.MethodType(_encode, encoder)
    encoder.eval()
    if not with_projection:
        return encoder
    if src.projection is None:
        raise FileNotFoundError(f"{path}: no projection.safetensors; this export has no projection head")
    head = ProjectionHead(encoder.num_features, src.embed_dim, src.projection_kind or "linear")
    try:
        head.load_state_dict(src.projection)
    except RuntimeError as err:
        raise ValueError(f"{path / 'projection.safetensors'}: does not fit config.json: {err}") from err
    return encoder, head.eval()
