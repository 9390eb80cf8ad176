"""The Porter stemmer (Porter, "An algorithm for suffix stripping", Program 14(3), 1980).

The version Martin Porter distributes (tartarus.org/martin/PorterStemmer, with his
"bli" -> "ble" and "logi" -> "log" rules, words of one or two letters left alone), which
is NLTK's ``PorterStemmer`` in ``MARTIN_EXTENSIONS`` mode; :mod:`medvl.metrics.nlg.meteor`
uses it for its stem-matching stage.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["porter_stem"]


def _is_consonant(word: str, i: int) -> bool:
    ch = word[i]
    if ch in "aeiou":
        return False
    if ch == "y":
        return i == 0 or not _is_consonant(word, i - 1)
    return True


def _measure(stem: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in ``[C](VC){m}[V]``."""
    m, prev_vowel = 0, False
    for i in range(len(stem)):
        vowel = not _is_consonant(stem, i)
        if prev_vowel and not vowel:
            m += 1
        prev_vowel = vowel
    return m


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _is_consonant(word, len(word) - 1)


def _cvc(word: str) -> bool:
    return (len(word) >= 3 and _is_consonant(word, len(word) - 3) and not _is_consonant(word, len(word) - 2)
            and _is_consonant(word, len(word) - 1) and word[-1] not in "wxy")


def _rules(word: str, rules: Sequence[tuple[str, str, int]]) -> str:
    """Apply the first rule whose suffix matches, if the remaining stem has m > threshold."""
    for suffix, repl, min_m in rules:
        if word.endswith(suffix):
            stem = word[: len(word) - len(suffix)]
            return stem + repl if _measure(stem) > min_m else word
    return word


_STEP2 = [("ational", "ate", 0), ("tional", "tion", 0), ("enci", "ence", 0), ("anci", "ance", 0),
          ("izer", "ize", 0), ("bli", "ble", 0), ("alli", "al", 0), ("entli", "ent", 0), ("eli", "e", 0),
          ("ousli", "ous", 0), ("ization", "ize", 0), ("ation", "ate", 0), ("ator", "ate", 0),
          ("alism", "al", 0), ("iveness", "ive", 0), ("fulness", "ful", 0), ("ousness", "ous", 0),
          ("aliti", "al", 0), ("iviti", "ive", 0), ("biliti", "ble", 0), ("logi", "log", 0)]
_STEP3 = [("icate", "ic", 0), ("ative", "", 0), ("alize", "al", 0), ("iciti", "ic", 0), ("ical", "ic", 0),
          ("ful", "", 0), ("ness", "", 0)]
_STEP4 = [(s, "", 1) for s in ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent")]
_STEP4_TAIL = [(s, "", 1) for s in ("ou", "ism", "ate", "iti", "ous", "ive", "ize")]


def porter_stem(word: str) -> str:
    """Porter stemmer (Porter, "An algorithm for suffix stripping", 1980).

    The version Martin Porter distributes (with his "bli" -> "ble" and "logi" -> "log"
    rules, words of one or two letters left alone), which is NLTK's ``PorterStemmer`` in
    ``MARTIN_EXTENSIONS`` mode.
    """
    w = word.lower()
    if len(w) <= 2:
        return w
    # Step 1a
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies"):
        w = w[:-2]
    elif not w.endswith("ss") and w.endswith("s"):
        w = w[:-1]
    # Step 1b
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    else:
        for suffix in ("ed", "ing"):
            if w.endswith(suffix) and _has_vowel(w[: -len(suffix)]):
                w = w[: -len(suffix)]
                if w.endswith(("at", "bl", "iz")):
                    w += "e"
                elif _double_consonant(w) and w[-1] not in "lsz":
                    w = w[:-1]
                elif _measure(w) == 1 and _cvc(w):
                    w += "e"
                break
    # Step 1c
    if w.endswith("y") and _has_vowel(w[:-1]):
        w = w[:-1] + "i"
    w = _rules(w, _STEP2)
    w = _rules(w, _STEP3)
    # Step 4 ("ion" needs s or t before it)
    for suffix, _, _ in _STEP4 + [("ion", "", 1)] + _STEP4_TAIL:
        if w.endswith(suffix):
            stem = w[: -len(suffix)]
            if _measure(stem) > 1 and (suffix != "ion" or stem[-1:] in ("s", "t")):
                w = stem
            break
    # Step 5
    if w.endswith("e"):
        m = _measure(w[:-1])
        if m > 1 or (m == 1 and not _cvc(w[:-1])):
            w = w[:-1]
    if w.endswith("ll") and _measure(w) > 1:
        w = w[:-1]
    return w
