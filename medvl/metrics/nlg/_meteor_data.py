"""The data METEOR 1.5 scores English with, read at run time from the METEOR 1.5 release.

METEOR 1.5 (Denkowski & Lavie, "Meteor Universal: Language Specific Translation Evaluation
for Any Target Language", WMT 2014) keeps its English word lists inside ``meteor-1.5.jar``
and its paraphrase table beside it in ``data/paraphrase-en.gz``; pycocoevalcap ships both in
``pycocoevalcap/meteor/``. This module reads them from there (or from the folder named by
``MEDVL_METEOR_DIR``, laid out the same way) the first time they are needed and keeps the
parsed form for the life of the process. medvl ships none of them: the function-word and
nonbreaking-prefix lists and the paraphrase table are part of METEOR (GNU LGPL 2.1), the
synonym files are extracted from WordNet 3.0 (Princeton's WordNet licence, which allows
redistribution with its notice), and the paraphrase table alone is 62 MB. Without
pycocoevalcap, :class:`MeteorDataError` says what to install.

What is read, exactly as METEOR's Java code reads it:

* ``function/english.words``: one function word per line (METEOR's ``Aligner``).
* ``nonbreaking/english.prefixes``: Moses' nonbreaking prefixes (``Normalizer``).
* ``synonym/english.synsets`` and ``synonym/english.exceptions``: word -> WordNet synset
  numbers, and irregular form -> base forms (``SynonymDictionary``; the ``.relations``
  file is not loaded by METEOR either).
* ``data/paraphrase-en.gz``: 5,274,084 (probability, reference phrase, paraphrase)
  triples of 1-7 words, 430,639 distinct reference phrases (``ParaphraseTransducer``).

The paraphrase table is held as 64-bit phrase hashes rather than strings: as Python
strings it takes ~500 MB (and ~40 s to parse here), as sorted hash arrays 52 MB, built
once from the gzip file in small vectorised chunks (25-40 s on a shared 2-core machine)
and cached in ``$MEDVL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/medvl`` or
``~/.cache/medvl``) under a name taken from the gzip file's CRC, so that later processes
load it in ~0.2 s (``ParaphraseTable.load_seconds`` and ``nbytes`` record a load). Where
the cache cannot be written the table is rebuilt in each process. Phrases are compared by
hash, so two different phrases would be confused only if their 64-bit hashes collided
(for the table's 2.6 million phrases the chance that any two do is about 2e-7; the
430,639 reference phrases hash to 430,639 distinct values).
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["ENV_VAR", "MeteorDataError", "ParaphraseTable", "Resources", "meteor_dir", "paraphrase_table", "resources"]

ENV_VAR = "MEDVL_METEOR_DIR"
"""Environment variable naming a folder with ``meteor-1.5.jar`` and ``data/paraphrase-en.gz``."""
CACHE_ENV_VAR = "MEDVL_CACHE_DIR"
"""Environment variable naming medvl's cache folder (default ``$XDG_CACHE_HOME/medvl`` or ``~/.cache/medvl``)."""

JAR_NAME = "meteor-1.5.jar"
PARAPHRASE_NAME = "data/paraphrase-en.gz"

NBP_ANY, NBP_NUMERIC_ONLY = 1, 2  # METEOR's Constants.NBP_ANY / NBP_NUM_ONLY


class MeteorDataError(RuntimeError):
    """METEOR 1.5's data files cannot be found or read."""


def meteor_dir() -> Path:
    """The folder holding ``meteor-1.5.jar`` and ``data/paraphrase-en.gz``.

    ``$MEDVL_METEOR_DIR`` when set, else the ``meteor`` folder of the installed
    pycocoevalcap (found without importing it).

    Raises:
        MeteorDataError: Neither is there, naming what to install.
    """
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        folder = Path(configured).expanduser()
        source = f"${ENV_VAR}"
    else:
        spec = importlib.util.find_spec("pycocoevalcap")
        if spec is None or not spec.submodule_search_locations:
            raise MeteorDataError(
                "METEOR needs the data files of METEOR 1.5 (meteor-1.5.jar and data/paraphrase-en.gz), which "
                "pycocoevalcap ships: `pip install pycocoevalcap` (or medvl's dev extra, `pip install -e .[dev]`), "
                f"or set {ENV_VAR} to a folder holding them. No Java is needed.")
        folder = Path(next(iter(spec.submodule_search_locations))) / "meteor"
        source = "the installed pycocoevalcap"
    missing = [name for name in (JAR_NAME, PARAPHRASE_NAME) if not (folder / name).is_file()]
    if missing:
        raise MeteorDataError(f"{folder} (from {source}) has no {' or '.join(missing)}; METEOR needs both files of "
                              "the METEOR 1.5 release (reinstall pycocoevalcap, or point "
                              f"{ENV_VAR} at a folder holding them)")
    return folder


def _java_lines(data: bytes) -> list[str]:
    """Lines as Java's ``BufferedReader.readLine`` returns them (``\\n``, ``\\r`` or ``\\r\\n`` end a line)."""
    text = data.decode("utf-8", errors="replace")
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()  # a final line terminator does not start another line
    return lines


_TOKEN = re.compile(r"[^ \t\n\r\f]+")  # java.util.StringTokenizer's default delimiters


@dataclass(frozen=True)
class Resources:
    """METEOR 1.5's English word lists, as its Java classes hold them."""

    function_words: frozenset[str]  # Aligner.functionWords
    prefixes: dict[str, int]  # Normalizer.nbpList: prefix -> NBP_ANY / NBP_NUMERIC_ONLY
    synsets: dict[str, tuple[int, ...]]  # SynonymDictionary.wordToSynsets
    exceptions: dict[str, tuple[str, ...]]  # SynonymDictionary.wordToBases (irregular form -> bases)
    source: str  # the jar they were read from


@lru_cache(maxsize=None)
def resources() -> Resources:
    """Read (once) the function words, nonbreaking prefixes and WordNet data from the jar.

    Raises:
        MeteorDataError: The jar is missing or lacks a file.
    """
    jar = meteor_dir() / JAR_NAME
    try:
        with zipfile.ZipFile(jar) as z:
            words, prefixes, synsets, exceptions = (z.read(n) for n in (
                "function/english.words", "nonbreaking/english.prefixes",
                "synonym/english.synsets", "synonym/english.exceptions"))
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise MeteorDataError(f"{jar}: cannot read METEOR's English data ({err})") from None

    prefix_types: dict[str, int] = {}
    for line in _java_lines(prefixes):
        tokens = _TOKEN.findall(line)
        if not tokens or tokens[0].startswith("#"):
            continue
        numeric = len(tokens) > 1 and tokens[1] == "#NUMERIC_ONLY#"
        prefix_types[tokens[0]] = NBP_NUMERIC_ONLY if numeric else NBP_ANY

    syn_lines = _java_lines(synsets)
    word_synsets = {word: tuple(int(t) for t in _TOKEN.findall(sets))
                    for word, sets in zip(syn_lines[0::2], syn_lines[1::2])}
    bases: dict[str, list[str]] = {}
    exc_lines = _java_lines(exceptions)
    for base, forms in zip(exc_lines[0::2], exc_lines[1::2]):
        for form in _TOKEN.findall(forms):
            bases.setdefault(form, []).append(base)
    return Resources(function_words=frozenset(_java_lines(words)), prefixes=prefix_types, synsets=word_synsets,
                     exceptions={k: tuple(v) for k, v in bases.items()}, source=str(jar))


# ---------------------------------------------------------------------------------------------- paraphrases
_MASK = (1 << 64) - 1
_MAX_WORD_BYTES = 1024  # longer words are in no phrase of the table (checked when it loads)


def _splitmix64(seed: int, n: int) -> list[int]:
    """``n`` pseudo-random 64-bit integers (splitmix64): fixed weights that no library update can change."""
    out, state = [], seed
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & _MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        out.append(z ^ (z >> 31))
    return out


# The phrase hash's weights; the cached table depends on them (bump _HASH_VERSION when they change).
_BYTE_WEIGHTS_PY = [w | 1 for w in _splitmix64(1, _MAX_WORD_BYTES)]
_POS_WEIGHTS_PY = [w | 1 for w in _splitmix64(2, 64)]
_LEN_WEIGHTS_PY = _splitmix64(3, 65)
_BYTE_WEIGHTS = np.array(_BYTE_WEIGHTS_PY, dtype=np.uint64)
_POS_WEIGHTS = np.array(_POS_WEIGHTS_PY, dtype=np.uint64)
_LEN_WEIGHTS = np.array(_LEN_WEIGHTS_PY, dtype=np.uint64)
_HASH_VERSION = 1
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _C1
    z = (z ^ (z >> np.uint64(27))) * _C2
    return z ^ (z >> np.uint64(31))


def _mix_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _line_hashes(chunk: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Phrase hash and word count of every line of ``chunk`` (complete lines, each ending in ``\\n``).

    A word's hash is the splitmix64 mix of ``sum_k (byte_k + 1) * B[k]`` over its UTF-8
    bytes; a phrase's is ``sum_t word_t * P[t] + L[n]`` over its n words (mod 2**64), the
    same function :meth:`ParaphraseTable.word_hash` and :meth:`ParaphraseTable.ngrams`
    compute for the words being scored.
    """
    buf = np.frombuffer(chunk, dtype=np.uint8)
    if (buf == 13).any():
        raise MeteorDataError("the paraphrase table has carriage returns (expected Unix line ends)")
    newline = buf == 10
    sep = newline | (buf == 32) | (buf == 9) | (buf == 12)  # StringTokenizer's delimiters within a line
    solid = np.flatnonzero(~sep)
    # a word starts at a non-separator whose predecessor is a separator (or the chunk start)
    starts_mask = np.ones(solid.size, dtype=bool)
    starts_mask[1:] = solid[1:] != solid[:-1] + 1
    word_first = np.flatnonzero(starts_mask)  # into `solid`
    word_of_byte = np.cumsum(starts_mask) - 1
    pos = solid - solid[word_first][word_of_byte]
    if pos.size and int(pos.max()) >= _MAX_WORD_BYTES:
        raise MeteorDataError(f"a paraphrase word is longer than {_MAX_WORD_BYTES} bytes")
    contrib = (buf[solid].astype(np.uint64) + np.uint64(1)) * _BYTE_WEIGHTS[pos]
    words = _mix(np.add.reduceat(contrib, word_first)) if word_first.size else np.zeros(0, np.uint64)
    # words -> lines: a word belongs to the line of its first byte
    line_ends = np.flatnonzero(newline)
    word_line = np.searchsorted(line_ends, solid[word_first])
    n_lines = line_ends.size
    counts = np.bincount(word_line, minlength=n_lines)
    if (counts == 0).any():
        raise MeteorDataError("the paraphrase table has an empty line")
    line_first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    t = np.arange(words.size) - line_first[word_line]
    if int(counts.max()) >= _POS_WEIGHTS.size:
        raise MeteorDataError(f"a paraphrase line has more than {_POS_WEIGHTS.size - 1} words")
    hashes = np.add.reduceat(words * _POS_WEIGHTS[t], line_first) + _LEN_WEIGHTS[counts]
    return hashes, counts


class ParaphraseTable:
    """METEOR 1.5's English paraphrase table as sorted 64-bit phrase hashes.

    :meth:`lookup` finds reference phrases by hash; the paraphrases of the ``k``-th are
    ``para_hash[offsets[k]:offsets[k + 1]]`` (word counts in ``para_len``), in file order:
    the order in which METEOR's ``ParaphraseTransducer`` emits them.
    """

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, para_hash: np.ndarray, para_len: np.ndarray,
                 max_phrase_words: int, source: str, load_seconds: float = 0.0):
        self.keys, self.offsets, self.para_hash, self.para_len = keys, offsets, para_hash, para_len
        self.max_phrase_words = int(max_phrase_words)
        self.source = source
        self.load_seconds = load_seconds
        self._word_cache: dict[str, int | None] = {}

    @property
    def n_entries(self) -> int:
        return int(self.para_hash.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the table's arrays."""
        return sum(a.nbytes for a in (self.keys, self.offsets, self.para_hash, self.para_len))

    @classmethod
    def build(cls, path: Path) -> ParaphraseTable:
        """Hash the gzipped table in small decompressed chunks (they stay in the CPU cache)."""
        start = time.perf_counter()
        refs, paras, lens, max_ref = [], [], [], 0
        line_no = 0  # global index of the next line: 3k probability, 3k+1 reference, 3k+2 paraphrase
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip
        rest = b""
        try:
            with open(path, "rb") as f:
                while True:
                    block = f.read(1 << 16)
                    data = rest + (inflate.decompress(block) if block else inflate.flush())
                    cut = data.rfind(b"\n") + 1
                    if not block and cut < len(data):
                        data, cut = data + b"\n", len(data) + 1  # a last line without a terminator
                    chunk, rest = data[:cut], data[cut:]
                    if chunk:
                        h, n = _line_hashes(chunk)
                        role = (line_no + np.arange(h.size)) % 3
                        refs.append(h[role == 1])
                        paras.append(h[role == 2])
                        lens.append(n[role == 2].astype(np.uint8))
                        if (role == 1).any():
                            max_ref = max(max_ref, int(n[role == 1].max()))
                        line_no += h.size
                    if not block:
                        break
        except (OSError, zlib.error, EOFError) as err:
            raise MeteorDataError(f"{path}: cannot read the paraphrase table ({err})") from None
        if line_no % 3 or not line_no:
            raise MeteorDataError(f"{path}: {line_no} lines, not (probability, phrase, paraphrase) triples")
        ref_hash, para_hash, para_len = np.concatenate(refs), np.concatenate(paras), np.concatenate(lens)
        del refs, paras, lens
        order = np.argsort(ref_hash, kind="stable")  # group by reference phrase, file order within
        ref_sorted = ref_hash[order]
        first = np.flatnonzero(np.concatenate([[True], ref_sorted[1:] != ref_sorted[:-1]]))
        offsets = np.concatenate([first, [ref_sorted.size]]).astype(np.int64)
        return cls(ref_sorted[first], offsets, para_hash[order], para_len[order], max_ref, str(path),
                   time.perf_counter() - start)

    # -- the on-disk cache: the hashed table, named after the source file's content
    @classmethod
    def _cache_file(cls, path: Path) -> Path | None:
        root = os.environ.get(CACHE_ENV_VAR, "").strip() or os.path.join(
            os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache"), "medvl")
        try:  # a gzip file ends with the CRC-32 and size of its content: a free fingerprint
            with open(path, "rb") as f:
                f.seek(-8, os.SEEK_END)
                trailer = f.read(8).hex()
                size = f.tell()
        except OSError:
            return None
        return Path(root) / "meteor" / f"paraphrase-en.{size}.{trailer}.v{_HASH_VERSION}.npz"

    @classmethod
    def load(cls, path: Path) -> ParaphraseTable:
        """The hashed table from the cache when it is there, else built (and cached)."""
        start = time.perf_counter()
        cache = cls._cache_file(path)
        if cache is not None and cache.is_file():
            try:
                with np.load(cache) as z:
                    table = cls(z["keys"], z["offsets"], z["para_hash"], z["para_len"], int(z["max_phrase_words"]),
                                str(path))
                if table.offsets[-1] == table.para_hash.size == table.para_len.size and \
                        table.offsets.size == table.keys.size + 1:
                    table.load_seconds = time.perf_counter() - start
                    return table
            except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
                pass  # unreadable cache: build again
        table = cls.build(path)
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    np.savez(f, keys=table.keys, offsets=table.offsets, para_hash=table.para_hash,
                             para_len=table.para_len, max_phrase_words=table.max_phrase_words)
                os.replace(tmp, cache)
            except OSError:
                pass  # a read-only home: keep the table in memory only
        return table

    def word_hash(self, word: str) -> int | None:
        """The hash of one word (None when it is too long to be in the table)."""
        h = self._word_cache.get(word, -1)
        if h == -1:
            data = word.encode("utf-8", errors="surrogatepass")
            if not data or len(data) > _MAX_WORD_BYTES:
                h = None
            else:
                h = _mix_int(sum((b + 1) * w for b, w in zip(data, _BYTE_WEIGHTS_PY)) & _MASK)
            if len(self._word_cache) < 1_000_000:
                self._word_cache[word] = h
        return h

    def ngrams(self, words: list[str]) -> tuple[list[int], list[int], list[int]]:
        """Hashes of all phrases of ``words`` of 1..``max_phrase_words`` words.

        Returns:
            ``(hashes, starts, lengths)``, ordered by start then length.
        """
        hs = [self.word_hash(w) for w in words]
        out_h: list[int] = []
        out_s: list[int] = []
        out_n: list[int] = []
        for j in range(len(words)):
            acc = 0
            for n in range(1, min(self.max_phrase_words, len(words) - j) + 1):
                h = hs[j + n - 1]
                if h is None:
                    break
                acc = (acc + h * _POS_WEIGHTS_PY[n - 1]) & _MASK
                out_h.append((acc + _LEN_WEIGHTS_PY[n]) & _MASK)
                out_s.append(j)
                out_n.append(n)
        return out_h, out_s, out_n

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash, the index of its reference phrase in :attr:`keys`, or -1."""
        if not hashes.size:
            return np.zeros(0, dtype=np.int64)
        k = np.searchsorted(self.keys, hashes)
        k[k == self.keys.size] = 0
        return np.where(self.keys[k] == hashes, k, -1)


_table: ParaphraseTable | None = None
_table_lock = threading.Lock()


def paraphrase_table() -> ParaphraseTable:
    """Load (once per process, on first use) the paraphrase table.

    Raises:
        MeteorDataError: The file is missing or unreadable.
    """
    global _table
    if _table is None:
        with _table_lock:
            if _table is None:
                _table = ParaphraseTable.load(meteor_dir() / PARAPHRASE_NAME)
    return _table

