"""METEOR 1.5's word alignment: exact, stem, synonym and paraphrase matches, then a beam search.

A port of ``edu.cmu.meteor.aligner`` (``Aligner``, ``Stage``, ``ExactMatcher``,
``StemMatcher``, ``SynonymMatcher``, ``ParaphraseMatcher``, ``PartialAlignment``) for the
English default of METEOR 1.5 (Denkowski & Lavie, WMT 2014; Lavie & Denkowski, "The
METEOR metric for automatic evaluation of machine translation", Machine Translation 23,
2009), with the quirks that decide its numbers kept:

* Matches are collected stage by stage for every (reference position, hypothesis position)
  pair: exact (equal ``String.hashCode``), stem (equal hash of the Snowball stems, different
  words), synonym (a shared WordNet synset of the word or of its WordNet base form,
  different words) and paraphrase (a phrase of one line found as a paraphrase of a phrase
  of the other, both directions, 1-7 words each side). When the two lines are identical,
  only the exact stage runs.
* A match is fixed up front when it is the only one starting at its reference position
  and no other match covers any of its words.
* The rest is resolved left to right over the reference by a beam search (beam 40) that
  ranks partial alignments by (more matched words, fewer chunks, smaller distance). The
  matched-word count uses METEOR's search weights (exact 1, the others 0.5) added into a
  Java ``int`` and therefore truncated at each step, and a new path's distance is added to
  its parent, as ``Aligner.resolve`` does. Ties keep insertion order (Java's stable sort).
* Chunks are then recounted on the chosen matches in reference order.

:func:`align` returns METEOR's per-segment statistics (``MeteorStats``) before the
parameters are applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvl.metrics.nlg._meteor_data import ParaphraseTable, Resources
from medvl.metrics.nlg._meteor_norm import java_hash
from medvl.metrics.nlg._stemmer import snowball_stem

__all__ = ["BEAM_SIZE", "N_MODULES", "SEARCH_WEIGHTS", "Lexicon", "Line", "align"]

EXACT, STEM, SYNONYM, PARAPHRASE = range(4)
N_MODULES = 4
SEARCH_WEIGHTS = (1.0, 0.5, 0.5, 0.5)  # MeteorScorer.loadConfiguration: "best weights for evaluation"
BEAM_SIZE = 40  # Constants.DEFAULT_BEAM_SIZE

# A match is a tuple: (ref start, ref length, hyp start, hyp length, module, hyp bit mask, ref bit mask).
_START, _LEN, _MSTART, _MLEN, _MODULE, _MASK1, _MASK2 = range(7)


def _match(start: int, length: int, mstart: int, mlen: int, module: int) -> tuple:
    return (start, length, mstart, mlen, module, ((1 << mlen) - 1) << mstart, ((1 << length) - 1) << start)


class Line:
    """One normalised, lower-cased segment with everything the matchers look up per word."""

    __slots__ = ("words", "hashes", "stem_hashes", "synsets", "function", "positions", "stem_positions",
                 "synset_positions", "ngram_positions", "phrases")

    def __init__(self, words: list[str], lexicon: Lexicon):
        self.words = words
        info = [lexicon.word(w) for w in words]
        self.hashes = [x[0] for x in info]
        self.stem_hashes = [x[1] for x in info]
        self.synsets = [x[2] for x in info]
        self.function = [x[3] for x in info]
        self.positions = _index(self.hashes)
        self.stem_positions = _index(self.stem_hashes)
        self.synset_positions: dict[int, list[int]] = {}
        for i, sets in enumerate(self.synsets):
            for s in sets:
                self.synset_positions.setdefault(s, []).append(i)
        # phrase hash -> starts, and the phrases that have paraphrases: (start, n words, paraphrases)
        self.ngram_positions: dict[int, list[int]] = {}
        self.phrases: list[tuple[int, int, list[tuple[int, int]]]] = []
        table = lexicon.table
        if table is not None and words:
            hashes, starts, lengths = table.ngrams(words)
            for h, j in zip(hashes, starts):
                self.ngram_positions.setdefault(h, []).append(j)
            if hashes:
                keys = table.lookup(np.array(hashes, dtype=np.uint64))
                for k, j, n in zip(keys.tolist(), starts, lengths):
                    if k >= 0:
                        self.phrases.append((j, n, lexicon.paraphrases(k)))

    def __len__(self) -> int:
        return len(self.words)


class Lexicon:
    """What METEOR knows about each word and phrase, computed once per word and kept for the process."""

    def __init__(self, res: Resources, table: ParaphraseTable | None):
        self.res, self.table = res, table
        self._words: dict[str, tuple[int, int, frozenset[int], bool]] = {}
        self._groups: dict[int, list[tuple[int, int]]] = {}

    def word(self, w: str) -> tuple[int, int, frozenset[int], bool]:
        """(``String.hashCode``, hash code of the Snowball stem, WordNet synsets, is a function word)."""
        info = self._words.get(w)
        if info is None:
            info = (java_hash(w), java_hash(snowball_stem(w)), _synsets(w, self.res),
                    w.lower() in self.res.function_words)
            if len(self._words) < 200_000:
                self._words[w] = info
        return info

    def paraphrases(self, k: int) -> list[tuple[int, int]]:
        """The paraphrases (hash, word count) of the table's ``k``-th reference phrase, in file order."""
        group = self._groups.get(k)
        if group is None:
            lo, hi = int(self.table.offsets[k]), int(self.table.offsets[k + 1])
            group = list(zip(self.table.para_hash[lo:hi].tolist(), self.table.para_len[lo:hi].tolist()))
            if len(self._groups) < 50_000:
                self._groups[k] = group
        return group


def _index(keys: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


# WordNet's morphology for words without an exception entry (SynonymDictionary.morph, from WordNet 3).
_SUFFIXES = ("s", "ses", "xes", "zes", "ches", "shes", "men", "ies",  # nouns
             "s", "ies", "es", "es", "ed", "ed", "ing", "ing",  # verbs
             "er", "est", "er", "est")  # adjectives
_ENDINGS = ("", "s", "x", "z", "ch", "sh", "man", "y",
            "", "y", "e", "", "e", "", "e", "",
            "", "", "e", "e")


def _morph(word: str, synsets: dict) -> str:
    """``SynonymDictionary.morph``: the first suffix rewrite that gives a WordNet word, else ""."""
    end = "ful" if word.endswith("ful") else ""
    if word.endswith("ss") or len(word) <= 2:
        return word
    for suffix, ending in zip(_SUFFIXES, _ENDINGS):
        if word.endswith(suffix):
            base = word[: len(word) - len(suffix)] + ending
            if base in synsets:
                return base + end
    return ""


def _synsets(word: str, res: Resources) -> frozenset[int]:
    """``getSynSets(word)`` united with ``getStemSynSets(word)`` (SynonymMatcher)."""
    sets = set(res.synsets.get(word, ()))
    bases = res.exceptions.get(word)
    if bases is not None:
        for base in bases:
            sets.update(res.synsets.get(base, ()))
    else:
        sets.update(res.synsets.get(_morph(word, res.synsets), ()))
    return frozenset(sets)


def _collect(test: Line, ref: Line, identical: bool) -> list[list[tuple]]:
    """All candidate matches, per reference start position, in METEOR's stage and loop order."""
    n2 = len(ref)
    at: list[list[tuple]] = [[] for _ in range(n2)]
    for j in range(n2):  # ExactMatcher
        for i in test.positions.get(ref.hashes[j], ()):
            at[j].append(_match(j, 1, i, 1, EXACT))
    if identical:
        return at
    for j in range(n2):  # StemMatcher: same stem, different word
        hj = ref.hashes[j]
        for i in test.stem_positions.get(ref.stem_hashes[j], ()):
            if test.hashes[i] != hj:
                at[j].append(_match(j, 1, i, 1, STEM))
    for j in range(n2):  # SynonymMatcher: a shared synset, different word
        sets = ref.synsets[j]
        if not sets:
            continue
        hj = ref.hashes[j]
        found: set[int] = set()
        for s in sets:
            found.update(test.synset_positions.get(s, ()))
        for i in sorted(found):
            if test.hashes[i] != hj:
                at[j].append(_match(j, 1, i, 1, SYNONYM))
    # ParaphraseMatcher, first the reference's phrases paraphrased in the hypothesis ...
    found = test.ngram_positions
    for j, n, paras in ref.phrases:
        for h, m in paras:
            for i in found.get(h, ()):
                at[j].append(_match(j, n, i, m, PARAPHRASE))
    # ... then the hypothesis' phrases paraphrased in the reference
    found = ref.ngram_positions
    for i, n, paras in test.phrases:
        for h, m in paras:
            for j in found.get(h, ()):
                at[j].append(_match(j, m, i, n, PARAPHRASE))
    return at


_CHUNK = 1 << 64  # a chunk in the sort key
_MATCHED = 1 << 128  # a (weighted, truncated) matched word in the sort key


def _key(m1: int, m2: int, chunks: int, distance: int) -> int:
    """PARTIAL_COMPARE_TOTAL as one integer: more matched words, then fewer chunks, then less distance."""
    return -(m1 + m2) * _MATCHED + chunks * _CHUNK + distance


def _increments(m: tuple) -> tuple[int, int]:
    """What ``matches1 += matchLength * weight`` (a Java int) and ``matches2 += length * weight`` add."""
    w = SEARCH_WEIGHTS[m[_MODULE]]
    return int(m[_MLEN] * w), int(m[_LEN] * w)  # exact: the counts are integers, the weights 1 or 0.5


def _resolve(n2: int, at: list[list[tuple]], fixed: dict[int, tuple], used1: int, used2: int) -> tuple:
    """``Aligner.resolve``: the best complete path.

    A path is an immutable ``(m1, m2, chunks, distance, idx, last, used1, used2, chain)``
    (``chain``: the matches it chose, as nested pairs; ``used*``: bit masks of used words).
    The queue holds ``(key, seq, path)`` entries, and ``(key, seq, parent, match, distance)``
    for a path that extends ``parent`` by ``match``: only the ones that make the beam are
    built. ``seq`` (insertion order) breaks ties, as Java's stable sort does.
    """
    # per reference position: (hyp mask, ref mask, key change, hyp start, distance, match) of each candidate
    options = []
    for ms in at:
        row = []
        for m in ms:
            inc1, inc2 = _increments(m)
            row.append((m[_MASK1], m[_MASK2], -(inc1 + inc2) * _MATCHED, m[_MSTART], abs(m[_START] - m[_MSTART]), m))
        options.append(row)
    entries: list[tuple] = [(0, 0, (0, 0, 0, 0, 0, -1, used1, used2, None))]
    for current in range(n2 + 1):
        entries.sort()
        queue: list[tuple] = []
        append = queue.append
        seq = 0
        bit = 1 << current
        final = current == n2
        row = options[current] if not final else ()
        for entry in entries[:BEAM_SIZE]:
            path = entry[2] if len(entry) == 3 else _extend(*entry[2:])
            key = entry[0]
            m1, m2, chunks, distance, idx, last, u1, u2, chain = path
            if final:  # complete: close the last chunk
                if last != -1:
                    path = (m1, m2, chunks + 1, distance, idx, last, u1, u2, chain)
                    key += _CHUNK
                append((key, seq, path))
                seq += 1
                continue
            if u2 & bit:  # the reference word is in use
                if current < idx:  # inside a match already taken
                    append((key, seq, path))
                    seq += 1
                else:
                    m = fixed.get(idx)
                    if m is not None:
                        inc1, inc2 = _increments(m)
                        if last != -1 and m[_MSTART] != last:
                            chunks += 1
                        distance += abs(m[_START] - m[_MSTART])
                        path = (m1 + inc1, m2 + inc2, chunks, distance, m[_START] + m[_LEN], m[_MSTART] + m[_MLEN],
                                u1, u2, chain)
                        append((_key(m1 + inc1, m2 + inc2, chunks, distance), seq, path))
                        seq += 1
                continue
            for mask1, mask2, dkey, mstart, dist, m in row:
                if u2 & mask2 or u1 & mask1:
                    continue
                append((key + dkey + _CHUNK if last != -1 and mstart != last else key + dkey, seq, path, m, distance))
                seq += 1
                distance += dist  # sic: METEOR adds the new path's distance to the parent path
                key += dist
            if last != -1:  # skip this reference word
                chunks += 1
                key += _CHUNK
            append((key, seq, (m1, m2, chunks, distance, idx + 1, -1, u1, u2, chain)))
            seq += 1
        entries = queue or [entries[0]]
    entries.sort()
    best = entries[0]
    return best[2] if len(best) == 3 else _extend(*best[2:])


def _extend(path: tuple, m: tuple, distance: int) -> tuple:
    """``path`` extended by match ``m`` (the new path keeps the parent's distance of that moment)."""
    m1, m2, chunks, _, _, last, u1, u2, chain = path
    inc1, inc2 = _increments(m)
    if last != -1 and m[_MSTART] != last:
        chunks += 1
    return (m1 + inc1, m2 + inc2, chunks, distance, m[_START] + m[_LEN], m[_MSTART] + m[_MLEN],
            u1 | m[_MASK1], u2 | m[_MASK2], (m, chain))


def align(test: Line, ref: Line) -> list[float]:
    """METEOR 1.5's statistics of one hypothesis (``test``) against one reference.

    Returns:
        The 23 numbers of ``MeteorStats.toString``: test length, reference length, test and
        reference function words, then per module (exact, stem, synonym, paraphrase) test
        content, reference content, test function and reference function matches, then
        chunks, test matches and reference matches.
    """
    n1, n2 = len(test), len(ref)
    identical = n1 == n2 and test.hashes == ref.hashes
    at = _collect(test, ref, identical)

    cov1, cov2 = [0] * n1, [0] * n2
    for ms in at:
        for m in ms:
            for k in range(m[_LEN]):
                cov2[m[_START] + k] += 1
            for k in range(m[_MLEN]):
                cov1[m[_MSTART] + k] += 1
    fixed: dict[int, tuple] = {}
    used1 = used2 = 0
    for j, ms in enumerate(at):  # one-to-one, non-overlapping matches are definite
        if len(ms) == 1:
            m = ms[0]
            alone2 = all(cov2[j + k] == 1 for k in range(m[_LEN]))
            if alone2 and all(cov1[m[_MSTART] + k] == 1 for k in range(m[_MLEN])):
                fixed[j] = m
                used1 |= m[_MASK1]
                used2 |= m[_MASK2]

    best = _resolve(n2, at, fixed, used1, used2)
    chosen = dict(fixed)
    node = best[8]
    while node is not None:
        chosen[node[0][_START]] = node[0]
        node = node[1]

    stats = [0] * 16
    for m in chosen.values():
        base = 4 * m[_MODULE]
        for k in range(m[_MLEN]):
            stats[base + (2 if test.function[m[_MSTART] + k] else 0)] += 1
        for k in range(m[_LEN]):
            stats[base + (3 if ref.function[m[_START] + k] else 1)] += 1
    # Aligner.getCountAndChunks on the final matches, in reference order
    chunks, idx, last = 0, 0, -1
    while idx < n2:
        m = chosen.get(idx)
        if m is None:
            if last != -1:
                chunks += 1
                last = -1
            idx += 1
        else:
            if last != -1 and m[_MSTART] != last:
                chunks += 1
            idx = m[_START] + m[_LEN]
            last = m[_MSTART] + m[_MLEN]
    if last != -1:
        chunks += 1
    matched1 = sum(stats[4 * k] + stats[4 * k + 2] for k in range(N_MODULES))
    matched2 = sum(stats[4 * k + 1] + stats[4 * k + 3] for k in range(N_MODULES))
    return [n1, n2, sum(test.function), sum(ref.function), *stats, chunks, matched1, matched2]
