"""The Snowball English stemmer of METEOR 1.5's stem-matching stage.

METEOR 1.5 bundles the Java Snowball English ("Porter2") stemmer of about 2010
(``org.tartarus.snowball.ext.englishStemmer``). The ``snowballstemmer`` package 2.2.0
(2021) generates the same algorithm in Python: on 163,261 words (WordNet's, METEOR's
paraphrase vocabulary and report words) it stems every one as the jar does (measured
with the jar's own class), where NLTK's ``SnowballStemmer("english")`` differs on 16
("realization" -> "realize" for the jar's "realiz") and snowballstemmer 3.x, which
follows the 2025 revision of the algorithm, on 197 ("added" -> "add" for "ad").
setup.cfg therefore asks for ``snowballstemmer>=2.2,<3``.
"""

from __future__ import annotations

import threading
import warnings
from functools import lru_cache

__all__ = ["snowball_stem"]


@lru_cache(maxsize=1)
def _stemmer():
    try:
        import snowballstemmer
    except ImportError:
        raise ImportError("METEOR's stem stage needs the snowballstemmer package: "
                          "`pip install 'snowballstemmer>=2.2,<3'`") from None
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("snowballstemmer").split(".")[0])
    except (PackageNotFoundError, ValueError):
        major = 2
    if major >= 3:
        warnings.warn("snowballstemmer >= 3 follows a newer Snowball English algorithm than METEOR 1.5's; some "
                      "stems (and so some METEOR scores) will differ from Java METEOR 1.5. Install "
                      "'snowballstemmer>=2.2,<3' for parity.", UserWarning, stacklevel=3)
    return snowballstemmer.stemmer("english")


_lock = threading.Lock()  # a snowballstemmer object is not thread-safe (METEOR synchronises its stemmer too)


@lru_cache(maxsize=200_000)
def snowball_stem(word: str) -> str:
    """The Snowball English stem of one (lower-case) word, as METEOR 1.5 computes it."""
    stemmer = _stemmer()
    with _lock:
        return stemmer.stemWord(word)
