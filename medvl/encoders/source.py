"""Where an image encoder's weights and preprocessing come from: the one reader of encoder sources.

:func:`read_encoder_source` turns any of these into an :class:`EncoderSource` (the built
encoder with its weights, the registry name that rebuilds it, the preprocessing it was
trained with and, when there is one, its projection into a joint image-text space):

* an **export folder** written by :func:`medvl.export_encoder` (``config.json`` +
  ``model.safetensors`` [+ ``projection.safetensors``]);
* a **medvl task checkpoint** (a Lightning ``.ckpt``, read with
  ``torch.load(weights_only=True)``) whose ``hyper_parameters`` hold ``vision_encoder``,
  ``img_size``, ``in_chans``, ``image_mean``, ``image_std`` and optionally
  ``vision_kwargs``, ``window``, ``embed_dim``, ``projection``, ``label_names``,
  ``_class_path``, and whose ``state_dict`` holds the network under ``model.``: the
  encoder under ``model.visual.``, the image projection (if any) under
  ``model.image_proj.``;
* an **encoder state-dict file** (``.safetensors``/``.pth``/``.pt``/``.bin``) with
  ``arch``: a registry name (medvl weights, found under whatever prefix they carry), or
  ``"timm[:<name>]"`` / ``"open_clip[:<name>]"`` to convert foreign weights with
  :mod:`medvl.encoders.interop`;
* a :class:`~medvl.encoders.PatchEncoder` instance (copied).

The export (:mod:`medvl.export`), the report task and the classifier read their
pretrained encoders here and nowhere else. Torch and safetensors only: nothing here
imports Lightning, so :func:`medvl.load_encoder` stays torch-only. Errors name the file
and the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medvl.encoders.registry import create_encoder, list_encoders
from medvl.encoders.vision import PatchEncoder, VisionConfig

__all__ = ["EXPORT_FORMAT", "EncoderSource", "TextSource", "TextWeights", "read_encoder_source", "read_text_source"]

EXPORT_FORMAT = "medvl-encoder/1"

# Task hyper-parameters every medvl task saves about its image encoder (the rest optional).
_REQUIRED_HP = ("vision_encoder", "img_size", "in_chans", "image_mean", "image_std")
# Where a task keeps its network (contract: ``self.model``), and the network its parts.
_ENCODER_PREFIX = "model.visual."
_PROJECTION_PREFIX = "model.image_proj."


@dataclass
class EncoderSource:
    """A pretrained image encoder and everything known about how it was trained.

    ``preprocessing`` holds ``img_size``, ``in_chans``, ``window`` (DICOM ``(center,
    width)`` as a list, a preset name, or None for each file's own VOI LUT), ``mean``,
    ``std`` (of the [0, 1] grey levels; None where the source does not record them: a
    foreign state dict, a module), ``pad_value``, and the ``resize``/``intensity`` steps.
    """

    encoder: PatchEncoder  # built, weights loaded
    architecture: str | None  # registry name; create_encoder(architecture, **encoder_kwargs) rebuilds it
    encoder_kwargs: dict[str, Any]  # img_size, in_chans and every override of the variant's defaults
    preprocessing: dict[str, Any]  # what the encoder expects its input to have gone through
    projection: dict[str, Tensor] | None = None  # ProjectionHead state dict into the joint space
    projection_kind: str | None = None  # kind of ProjectionHead ("linear", "mlp")
    embed_dim: int | None = None  # width of the joint space
    task: str | None = None  # class path of the task that trained it
    origin: str = ""  # "export folder" | "task checkpoint" | "timm state dict" | "open_clip state dict" | ...
    location: str = ""  # the file or folder read, for messages
    label_names: list[str] | None = None  # label columns of the training data, when recorded
    text: TextWeights | None = None  # the source's text tower, when it has one (written by medvl export)

    def check_preprocessing(
        self,
        *,
        img_size: Any = None,
        in_chans: int | None = None,
        mean: float | list[float] | None = None,
        std: float | list[float] | None = None,
        window: tuple[float, float] | list[float] | str | None = None,
        where: str,
    ) -> None:
        """Raises when given data settings disagree with the ones this source records.

        A value of None (given, or not recorded by the source) is not compared. Means
        and stds compare per channel (a number stands for every channel), windows by
        their numbers (a preset name is looked up).

        Args:
            img_size: The data's image size.
            in_chans: The data's channels.
            mean: The data's normalisation mean.
            std: The data's normalisation std.
            window: The data's DICOM window.
            where: Who asks (e.g. ``"Classifier"``), for the message.

        Raises:
            ValueError: Naming each disagreeing setting with both values and this source.
        """
        pre = self.preprocessing
        chans = in_chans or pre.get("in_chans") or 1
        checks = (
            ("img_size", img_size, pre.get("img_size"), _same_size),
            ("in_chans", in_chans, pre.get("in_chans"), lambda a, b: int(a) == int(b)),
            ("mean", mean, pre.get("mean"), lambda a, b: _same_numbers(a, b, chans)),
            ("std", std, pre.get("std"), lambda a, b: _same_numbers(a, b, chans)),
            ("window", window, pre.get("window"), _same_window),
        )
        bad = [f"{key} {given!r} given, {recorded!r} recorded" for key, given, recorded, same in checks
               if given is not None and recorded is not None and not same(given, recorded)]
        if bad:
            raise ValueError(
                f"{where}: the data's preprocessing disagrees with the pretrained encoder's "
                f"({self.location or self.origin}, {self.origin}): {'; '.join(bad)}. Prepare the data as the "
                "encoder was trained (or leave these arguments unset to take the encoder's values)"
            )


# ------------------------------------------------------------------ comparisons
def _same_size(a: Any, b: Any) -> bool:
    def tup(v: Any) -> tuple[int, ...]:
        return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),)

    ta, tb = tup(a), tup(b)
    return ta == tb or (len(set(ta)) == 1 and len(set(tb)) == 1 and ta[0] == tb[0])


def _same_numbers(a: Any, b: Any, n: int) -> bool:
    def vec(v: Any) -> list[float]:
        vals = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]
        return vals * n if len(vals) == 1 else vals

    va, vb = vec(a), vec(b)
    return len(va) == len(vb) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-8) for x, y in zip(va, vb))


def _window_numbers(w: Any) -> tuple[float, float] | None:
    if isinstance(w, str):
        from medvl.data.dicom import WINDOW_PRESETS  # only for a preset name

        return tuple(WINDOW_PRESETS[w]) if w in WINDOW_PRESETS else None
    return (float(w[0]), float(w[1]))


def _same_window(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str) and a == b:
        return True
    na, nb = _window_numbers(a), _window_numbers(b)
    return na is not None and nb is not None and all(math.isclose(x, y) for x, y in zip(na, nb))


# ------------------------------------------------------------------ helpers
def _preprocessing(
    img_size: Any, in_chans: int, mean: Any = None, std: Any = None, window: Any = None
) -> dict[str, Any]:
    """The ``preprocessing`` entry for these settings; mean/std None where the source does not record them."""
    from medvl._preprocess import preprocessing_config  # torch + numpy only

    size = list(img_size) if isinstance(img_size, tuple) else img_size
    pre = preprocessing_config(size, in_chans, 0.0 if mean is None else mean, 1.0 if std is None else std, window)
    if mean is None or std is None:  # not recorded: say so rather than an identity nobody chose
        pre.update({k: None for k, v in (("mean", mean), ("std", std)) if v is None})
    return pre


def _sub_state(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}


def _load(encoder: PatchEncoder, state: dict[str, Tensor], where: str, what: str) -> None:
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{where}: weights do not fit {what}: {err}") from err


@functools.lru_cache(maxsize=1)
def _registry_configs(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each registered vision variant's config, built on the meta device (no memory, no init)."""
    out = {}
    with torch.device("meta"):
        for name in names:
            enc = create_encoder(name)
            if isinstance(enc, PatchEncoder):
                out[name] = dataclasses.asdict(enc.config)
    return out


def _closest_architecture(config: VisionConfig) -> tuple[str, dict[str, Any]]:
    """The registered variant needing the fewest overrides to give ``config``, and those overrides.

    Returns:
        ``(name, kwargs)`` with ``create_encoder(name, **kwargs).config == config``;
        ``kwargs`` always holds ``img_size`` and ``in_chans``.
    """
    want = dataclasses.asdict(config)
    best: tuple[int, str, dict[str, Any]] | None = None
    for name, have in _registry_configs(tuple(list_encoders(kind="vision"))).items():
        diff = {k: v for k, v in want.items() if have.get(k) != v}
        if best is None or len(diff) < best[0]:
            best = (len(diff), name, diff)
    assert best is not None, "no vision encoder registered"
    _, name, diff = best
    kwargs = {"img_size": config.img_size, "in_chans": config.in_chans, **diff}
    return name, {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


# ------------------------------------------------------------------ export folders
def _read_export_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of an export folder, checked to be one.

    Raises:
        FileNotFoundError: No ``config.json`` in ``folder``.
        ValueError: It is not JSON, not an export's, or lacks an entry the loaders need.
    """
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; not a medvl export folder")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_path}: not valid JSON ({err})") from err
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT:
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ValueError(f"{cfg_path}: unsupported export format {got!r}; expected {EXPORT_FORMAT!r}")
    missing = [k for k in ("architecture", "encoder_kwargs", "vision_config", "preprocessing") if k not in cfg]
    if missing:
        raise ValueError(f"{cfg_path}: lacks {missing}; not written by medvl.export_encoder")
    return cfg


def _from_export(folder: Path) -> EncoderSource:
    from safetensors.torch import load_file

    cfg = _read_export_config(folder)
    try:
        config = VisionConfig(**cfg["vision_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{folder / 'config.json'}: bad vision_config ({err})") from err
    encoder = PatchEncoder(config)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; the export folder has no encoder weights")
    try:
        state = load_file(str(weights))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{weights}: cannot read as safetensors ({type(err).__name__}: {err})") from err
    _load(encoder, state, str(weights), "the vision_config of config.json")
    proj_file = folder / "projection.safetensors"
    proj = load_file(str(proj_file)) if proj_file.is_file() else None
    return EncoderSource(
        encoder=encoder, architecture=cfg["architecture"], encoder_kwargs=dict(cfg["encoder_kwargs"]),
        preprocessing=dict(cfg["preprocessing"]), projection=proj, projection_kind=cfg.get("projection") if proj else None,
        embed_dim=cfg.get("embed_dim") if proj else None, task=cfg.get("task"), origin="export folder",
        location=str(folder), label_names=cfg.get("label_names"), text=_export_text_weights(folder, cfg),
    )


# ------------------------------------------------------------------ task checkpoints
def _from_task_checkpoint(ckpt: dict[str, Any], where: str) -> EncoderSource:
    hp = ckpt["hyper_parameters"]
    missing = [k for k in _REQUIRED_HP if hp.get(k) is None]
    if missing:
        raise ValueError(f"{where}: not a medvl task checkpoint (hyper-parameters lack {missing})")
    state = ckpt["state_dict"]
    weights = _sub_state(state, _ENCODER_PREFIX)
    if not weights:
        tops = sorted({k.split(".")[0] + "." for k in state})[:6]
        raise ValueError(f"{where}: no '{_ENCODER_PREFIX}*' weights in the state dict (its keys start with {tops})")
    kwargs = {"img_size": hp["img_size"], "in_chans": hp["in_chans"], **(hp.get("vision_kwargs") or {})}
    try:
        encoder = create_encoder(hp["vision_encoder"], **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot build vision_encoder {hp['vision_encoder']!r} {kwargs}: {err}") from err
    if not isinstance(encoder, PatchEncoder):
        raise ValueError(f"{where}: vision_encoder {hp['vision_encoder']!r} is not an image encoder")
    _load(encoder, weights, where, f"{hp['vision_encoder']} {kwargs}")
    proj = _sub_state(state, _PROJECTION_PREFIX) or None
    label_names = hp.get("label_names")
    return EncoderSource(
        encoder=encoder, architecture=hp["vision_encoder"], encoder_kwargs=kwargs,
        preprocessing=_preprocessing(hp["img_size"], hp["in_chans"], hp["image_mean"], hp["image_std"],
                                     hp.get("window")),
        projection=proj, projection_kind=hp.get("projection") if proj else None,
        embed_dim=hp.get("embed_dim") if proj else None, task=hp.get("_class_path"), origin="task checkpoint",
        location=where, label_names=list(label_names) if label_names is not None else None,
        text=_checkpoint_text_weights(ckpt),
    )


# ------------------------------------------------------------------ state-dict files
def _encoder_state(state: dict[str, Tensor], where: str) -> dict[str, Tensor]:
    """The encoder's part of a medvl state dict: bare, or under one prefix (``visual.``, ``model.visual.``)."""
    prefixes = sorted({k[: -len("pos_embed")] for k in state if k == "pos_embed" or k.endswith(".pos_embed")})
    if not prefixes:
        raise ValueError(f"{where}: no 'pos_embed' weights; not a medvl PatchEncoder state dict")
    if len(prefixes) > 1:
        raise ValueError(f"{where}: several encoders in one state dict (prefixes {prefixes}); save one")
    return _sub_state(state, prefixes[0])


def _infer_size(arch: str, state: dict[str, Tensor], where: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``in_chans`` and ``img_size`` of a registry encoder from its weights' shapes."""
    conv = state.get("patch_embed.proj.weight", state.get("patch_embed.proj.0.weight"))
    if conv is None:
        raise ValueError(f"{where}: no 'patch_embed' weights; not a medvl PatchEncoder state dict")
    with torch.device("meta"):
        ref = create_encoder(arch, **{**kwargs, "in_chans": conv.shape[1]})
    n = state["pos_embed"].shape[1] - ref.num_pos_prefix_tokens
    dims = ref.config.spatial_dims
    g = round(n ** (1 / dims))
    if g**dims != n:
        raise ValueError(f"{where}: {n} position embeddings do not form a square/cubic grid")
    ps = ref.patch_embed.patch_size
    sizes = [g * p for p in (ps if isinstance(ps, tuple) else (ps,) * dims)]
    return {"img_size": sizes[0] if len(set(sizes)) == 1 else sizes, "in_chans": conv.shape[1]}


def _from_state_dict(path: Path, arch: str | None, kwargs: dict[str, Any]) -> EncoderSource:
    from medvl.encoders import interop

    if not arch:
        raise ValueError(f"{path}: a plain state dict, not a medvl task checkpoint; pass arch= (a registry name, "
                         "'timm[:name]' or 'open_clip[:name]')")
    kind, _, name = arch.partition(":")
    if kind in ("timm", "open_clip"):
        proj = None
        if kind == "timm":
            encoder = interop.load_timm_vit(path, name=name or None, **kwargs)
        else:
            encoder, head = interop.load_open_clip_visual(path, name=name or None, **kwargs)
            if head is not None and not hasattr(head, "proj"):
                raise ValueError(f"{path}: the open_clip projection has a bias; medvl's ProjectionHead has none")
            proj = None if head is None else head.state_dict()
        cfg = encoder.config
        architecture, encoder_kwargs = _closest_architecture(cfg)
        return EncoderSource(
            encoder=encoder, architecture=architecture, encoder_kwargs=encoder_kwargs,
            preprocessing=_preprocessing(cfg.img_size, cfg.in_chans), projection=proj,
            projection_kind="linear" if proj else None,
            embed_dim=None if proj is None else proj["proj.weight"].shape[0],
            origin=f"{kind} state dict", location=str(path),
        )
    state = _encoder_state(interop.read_state_dict(path), str(path))
    kwargs = {**_infer_size(arch, state, str(path), kwargs), **kwargs}
    try:
        encoder = create_encoder(arch, **kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: cannot build arch {arch!r} {kwargs}: {err}") from err
    _load(encoder, state, str(path), f"{arch} {kwargs}")
    return EncoderSource(encoder=encoder, architecture=arch, encoder_kwargs=kwargs,
                         preprocessing=_preprocessing(kwargs["img_size"], kwargs["in_chans"]), origin="state dict",
                         location=str(path))


# ------------------------------------------------------------------ entry point
def read_encoder_source(
    source: str | Path | PatchEncoder, *, arch: str | None = None, encoder_kwargs: dict[str, Any] | None = None
) -> EncoderSource:
    """Reads an encoder and its preprocessing from any source medvl accepts.

    Args:
        source: An export folder, a medvl task checkpoint, an encoder state-dict file
            (with ``arch``), or a :class:`PatchEncoder` (copied: the caller's stays put).
        arch: For a state-dict file: a registry name, or ``"timm[:<timm name>]"`` /
            ``"open_clip[:<model name>]"`` to convert foreign weights. Ignored otherwise.
        encoder_kwargs: For a state-dict file: keyword arguments of ``create_encoder`` /
            :func:`~medvl.encoders.interop.load_timm_vit` /
            :func:`~medvl.encoders.interop.load_open_clip_visual` (e.g. ``num_heads``,
            which the weights do not tell).

    Returns:
        The source, its encoder on the CPU with the weights loaded, ``architecture``
        always resolved (for a module or foreign weights: the closest registered
        variant, with the overrides in ``encoder_kwargs``).

    Raises:
        FileNotFoundError: ``source`` does not exist, or an export folder lacks a file.
        ValueError: The file cannot be read or breaks the contract; the message names it and why.
    """
    if isinstance(source, PatchEncoder):
        cfg = source.config
        arch, kwargs = _closest_architecture(cfg)
        return EncoderSource(encoder=copy.deepcopy(source).cpu(), architecture=arch, encoder_kwargs=kwargs,
                             preprocessing=_preprocessing(cfg.img_size, cfg.in_chans), origin="module",
                             location=type(source).__name__)
    path = Path(source)
    if path.is_dir():
        return _from_export(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such export folder or checkpoint file")
    if path.suffix != ".safetensors":
        ckpt = _torch_load(path)
        if _is_task_checkpoint(ckpt):
            return _from_task_checkpoint(ckpt, str(path))
    return _from_state_dict(path, arch, dict(encoder_kwargs or {}))


# ------------------------------------------------------------------ text towers

_TEXT_PREFIX = "model.text."

TEXT_WEIGHTS = "text.safetensors"
"""The text tower's weights in an export folder (``config.json`` names it under ``text_encoder``)."""


@dataclass
class TextWeights:
    """A text tower as stored: registry name, overrides and state dict (nothing built)."""

    architecture: str
    kwargs: dict[str, Any]
    state: dict[str, Tensor]


@dataclass
class TextSource:
    """A text encoder read from an export folder or a medvl task checkpoint: its registry name, overrides and module."""

    encoder: nn.Module
    architecture: str
    encoder_kwargs: dict[str, Any]
    location: str


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle and zip errors share no base class
        raise ValueError(f"{path}: cannot read as a checkpoint ({type(err).__name__}: {err})") from err


def _is_task_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and "hyper_parameters" in ckpt and "state_dict" in ckpt


def _checkpoint_text_weights(ckpt: dict[str, Any]) -> TextWeights | None:
    hp = ckpt["hyper_parameters"]
    name, weights = hp.get("text_encoder"), _sub_state(ckpt["state_dict"], _TEXT_PREFIX)
    if not name or not weights:
        return None
    return TextWeights(name, dict(hp.get("text_kwargs") or {}), weights)


def _export_text_weights(folder: Path, cfg: dict[str, Any]) -> TextWeights | None:
    from safetensors.torch import load_file

    text, weights = cfg.get("text_encoder"), folder / TEXT_WEIGHTS
    if not text or not weights.is_file():
        return None
    try:
        state = load_file(str(weights))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{weights}: cannot read as safetensors ({type(err).__name__}: {err})") from err
    return TextWeights(text["architecture"], dict(text.get("kwargs") or {}), state)


def read_text_source(path: str | Path) -> TextSource:
    """The text tower of an export folder or a medvl task checkpoint that has one (contrastive pretraining, a fusion VQA).

    An export folder holds it as ``text.safetensors`` (``medvl export`` writes it when the
    checkpoint has a text tower). A checkpoint is read with ``weights_only=True``. The
    tower is rebuilt from the recorded ``text_encoder`` and ``text_kwargs`` and its weights
    load strictly, so a tower whose tokenizer or width differs cannot be loaded by accident.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not an export folder or a medvl task checkpoint, or one without a text
            tower; the message names the file and why.
    """
    path = Path(path)
    if path.is_dir():
        text = _export_text_weights(path, _read_export_config(path))
        if text is None:
            raise ValueError(f"{path}: the export has no text tower (no text_encoder in config.json or no "
                             f"{TEXT_WEIGHTS}; it is written when the exported checkpoint has one)")
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: no such export folder or checkpoint file")
    else:
        ckpt = _torch_load(path)
        if not _is_task_checkpoint(ckpt):
            raise ValueError(f"{path}: not a medvl task checkpoint (no hyper_parameters/state_dict)")
        text = _checkpoint_text_weights(ckpt)
        if text is None:
            raise ValueError(f"{path}: has no text tower (task {ckpt['hyper_parameters'].get('_class_path', '?')}: "
                             f"no text_encoder hyper-parameter or no '{_TEXT_PREFIX}*' weights)")
    try:
        encoder = create_encoder(text.architecture, **text.kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: cannot build text_encoder {text.architecture!r} {text.kwargs}: {err}") from err
    try:
        encoder.load_state_dict(text.state)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit text_encoder {text.architecture!r} {text.kwargs}: {err}") from err
    return TextSource(encoder=encoder, architecture=text.architecture, encoder_kwargs=text.kwargs, location=str(path))
