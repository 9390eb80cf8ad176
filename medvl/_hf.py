"""Machinery shared by the wrappers of Hugging Face tokenizers (private).

:class:`medvl.encoders.text.HFTokenizer` and :class:`medvl.heads.report_decoder.PrefixLMTokenizer`
travel to data-loader workers by pickle. A Hugging Face tokenizer is heavy to pickle
(and a fast one may not pickle at all), so the wrappers keep only their settings in the
pickle and load the tokenizer files in each process on first use.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["LazyHFTokenizer"]


class LazyHFTokenizer:
    """Base of a picklable wrapper whose Hugging Face tokenizer loads lazily.

    A subclass calls ``super().__init__()``, says where the tokenizer files are
    (:meth:`_tokenizer_path`) and reaches the tokenizer through :meth:`_load`.
    """

    _offline = False  # True: load with local_files_only=True and HF_HUB_OFFLINE=1, never from a hub

    def __init__(self) -> None:
        self._tok: Any = None

    def _tokenizer_path(self) -> str:
        """Folder (or name) given to ``AutoTokenizer.from_pretrained``."""
        raise NotImplementedError

    def _load(self) -> Any:
        """The Hugging Face tokenizer, loaded in this process on the first call."""
        if self._tok is None:
            from transformers import AutoTokenizer

            kwargs: dict[str, Any] = {}
            if self._offline:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                kwargs["local_files_only"] = True
            self._tok = AutoTokenizer.from_pretrained(self._tokenizer_path(), **kwargs)
        return self._tok

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tok": None}  # reloaded by _load in the receiving process
