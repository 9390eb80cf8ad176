"""Where a task's image encoder comes from: random, an export folder or a medvl checkpoint.

The generative tasks (report generation, VQA) start their encoder the same way: from
``hparams.pretrained`` (read by :func:`medvl.encoders.source.read_encoder_source`, the
one contract for an encoder's weights and preprocessing), or at random from
``hparams.vision_encoder``. The data settings (size, channels, normalisation, window)
that the caller left unset are taken from the source, the ones it set must agree with
it, and what remains unset gets the defaults; the resolved values are written back into
the hyper-parameters so that they travel in the checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, MutableMapping

from torch import nn

from medvl.encoders import create_encoder
from medvl.encoders.source import read_encoder_source, read_text_source

__all__ = ["DATA_DEFAULTS", "PretrainedSourceHooks", "read_pretrained_encoder", "read_pretrained_text"]

log = logging.getLogger(__name__)

DATA_DEFAULTS = {"img_size": 224, "in_chans": 1, "image_mean": 0.5, "image_std": 0.25}
"""What an image is when neither the data module nor a pretrained source says."""


def read_pretrained_encoder(hp: MutableMapping[str, Any], task: str) -> nn.Module | None:
    """The ``hp["pretrained"]`` encoder (None: build ``vision_encoder`` at random), settings resolved into ``hp``.

    ``hp`` needs ``pretrained``, ``vision_encoder``, ``vision_kwargs``, ``img_size``,
    ``in_chans``, ``image_mean``, ``image_std`` and ``window``. A ``pretrained`` path that no
    longer exists is a reload of the task's own checkpoint elsewhere: its resolved settings
    are in ``hp`` and its weights in the checkpoint, so None is returned with a warning.

    Raises:
        ValueError: A data setting given in ``hp`` disagrees with the source (the message
            names ``task``, the setting and both values).
    """
    encoder = None
    if hp["pretrained"] is not None:
        encoder = _read(hp, task)
    for key, default in DATA_DEFAULTS.items():
        if hp[key] is None:
            hp[key] = default
    return encoder


def _read(hp: MutableMapping[str, Any], task: str) -> nn.Module | None:
    if not Path(hp["pretrained"]).exists():
        log.warning("%s not found; building %s from the hyper-parameters", hp["pretrained"], hp["vision_encoder"])
        return None
    src = read_encoder_source(hp["pretrained"])
    src.check_preprocessing(img_size=hp["img_size"], in_chans=hp["in_chans"], mean=hp["image_mean"],
                            std=hp["image_std"], window=hp["window"], where=f"{task}(pretrained={hp['pretrained']!r})")
    pre = src.preprocessing
    kwargs = {k: v for k, v in src.encoder_kwargs.items() if k not in ("img_size", "in_chans")}
    given = dict(hp["vision_kwargs"] or {})
    recorded = {"img_size": pre.get("img_size"), "in_chans": pre.get("in_chans"), "image_mean": pre.get("mean"),
                "image_std": pre.get("std"), "window": pre.get("window")}
    hp.update({k: v for k, v in recorded.items() if hp[k] is None})
    hp.update(vision_encoder=src.architecture, vision_kwargs={**kwargs, **given})
    encoder = src.encoder
    if any(kwargs.get(k, object()) != v for k, v in given.items()):  # overrides such as drop_path_rate
        encoder = create_encoder(src.architecture, **{**src.encoder_kwargs, **given})
        encoder.load_state_dict(src.encoder.state_dict())
    log.info("encoder %s from %s (%s)", src.architecture, hp["pretrained"], src.origin)
    return encoder


DEFAULT_TEXT_ENCODER = "text_transformer_tiny"


def read_pretrained_text(hp: MutableMapping[str, Any]) -> nn.Module | None:
    """The ``hp["text_pretrained"]`` text tower (None: build ``text_encoder`` at random), its name resolved into ``hp``.

    ``text_pretrained`` is an export folder with ``text.safetensors`` or a task checkpoint
    (:func:`medvl.encoders.source.read_text_source`). Its ``text_encoder``/``text_kwargs`` are written into ``hp`` so that the
    task's own checkpoint rebuilds the same tower. A path that no longer exists is a
    reload of that checkpoint elsewhere (its weights are in it): None with a warning.

    Raises:
        ValueError: ``hp["text_encoder"]`` or ``hp["text_kwargs"]`` was set and disagrees
            with the checkpoint's (both are named).
    """
    path = hp.get("text_pretrained")
    if path is None or not Path(path).exists():
        if path is not None:
            log.warning("%s not found; building the question encoder %s from the hyper-parameters",
                        path, hp["text_encoder"])
        if hp["text_encoder"] is None:
            hp["text_encoder"] = DEFAULT_TEXT_ENCODER
        return None
    src = read_text_source(path)
    for key, value in (("text_encoder", src.architecture), ("text_kwargs", src.encoder_kwargs)):
        given = hp[key]
        if given and given != value:
            raise ValueError(f"VQA(text_pretrained={path!r}): {key}={given!r} but the checkpoint's tower is {value!r}; "
                             f"leave {key} unset to take the checkpoint's")
    hp.update(text_encoder=src.architecture, text_kwargs=src.encoder_kwargs or None)
    log.info("question encoder %s from %s", src.architecture, path)
    return src.encoder


class PretrainedSourceHooks:
    """Lightning hooks that refuse to train from random weights a task whose configured source is missing.

    A ``pretrained`` (or ``text_pretrained``) path that no longer exists is fine when the
    weights come from the task's own checkpoint (a test, a predict, a resumed fit: the
    network is rebuilt from the recorded hyper-parameters and the checkpoint fills it), but
    a fit that starts from no checkpoint would quietly train the configured network from
    random weights and report numbers for the wrong experiment: it stops with the path.
    """

    SOURCE_KEYS = ("pretrained", "text_pretrained")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self._weights_restored = True

    def on_fit_start(self) -> None:
        super().on_fit_start()  # type: ignore[misc]
        if getattr(self, "_weights_restored", False):
            return
        hp = self.hparams  # type: ignore[attr-defined]
        for key in self.SOURCE_KEYS:
            path = hp.get(key)
            if path is not None and not Path(path).exists():
                hint = " (`make demo` writes exports/quickstart)" if "quickstart" in str(path) else ""
                raise FileNotFoundError(
                    f"{type(self).__name__}: {key}={path!r} does not exist{hint}, and this fit resumes no checkpoint: "
                    f"it would train from random weights; write it first, or set {key}: null to start at random")
