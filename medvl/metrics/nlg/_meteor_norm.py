"""METEOR 1.5's ``-norm`` text normalisation for English, and the Java string semantics it relies on.

A port of ``edu.cmu.meteor.util.Normalizer.normalizeLine`` (language English, punctuation
kept: what ``-l en -norm`` selects), which METEOR describes as the Moses tokenizer (rev.
3612) plus quote and dash normalisation and lossy stripping of dashes and dots inside
words: non-alphanumeric symbols are split off, commas are split except inside numbers,
typographic quotes and en dashes become ASCII, a hyphen between two alphanumerics becomes
a space ("left-sided" -> "left sided"), English clitics are split to the right ("is n't",
"patient 's"), a final dot is split off unless the word is a nonbreaking prefix of Moses'
English list or the next word starts in lower case, and dotted acronyms lose their dots
("e.g." -> "eg", "U.S." -> "US"). The character classes are METEOR's (Latin-1, Latin
Extended-A, Cyrillic ranges) and Java's (``\\s`` is ``[ \\t\\n\\x0B\\f\\r]``,
``\\p{Digit}`` is ``[0-9]``, ``\\p{Lower}`` is ``[a-z]``), not Python's Unicode classes.

Also here: Java's ``String.trim``, ``StringTokenizer`` splitting and ``String.hashCode``
(METEOR compares words by their 32-bit hash codes), as METEOR's alignment uses them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from medvl.metrics.nlg._meteor_data import NBP_ANY, NBP_NUMERIC_ONLY

__all__ = ["java_hash", "java_trim", "normalize_line", "tokenize"]

_ALPHA = ("A-Za-z\u0160\u017d\u0161\u017e\u0178\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017e"
          "\u0400-\u04ff\u0500-\u0527\ua640-\ua66e\ua67e-\ua697\u1d00-\u1d7f")
_ALNUM = "0-9" + _ALPHA
_JAVA_SPACE = " \t\n\x0b\f\r"  # Java's \s

_SEP_OTHER = re.compile(f"([^{_ALNUM}{_JAVA_SPACE}.'`,\\-\u2018\u2019])")
_MULTI_DOT = re.compile(r"\.([.]+)")
_MULTI_DOT2 = re.compile(r"DOTMULTI\.([^.])")
_COMMA = re.compile(r"([^0-9])[,]([^0-9])")
_COMMA2 = re.compile(r"([0-9])[,]([^0-9])")
_COMMA3 = re.compile(r"([^0-9])[,]([0-9])")
_QUOTE = re.compile("([`\u2018\u2019])")
_QUOTE2 = re.compile("([\u201c\u201d]|'')")
_RM_DASH = re.compile(f"([{_ALNUM}.])[\\-]([{_ALNUM}])")
_CONT_EN = re.compile(f"([^{_ALPHA}])[']([^{_ALPHA}])")
_CONT_EN2 = re.compile(f"([^{_ALPHA}0-9])[']([{_ALPHA}])")
_CONT_EN3 = re.compile(f"([{_ALPHA}])[']([^{_ALPHA}])")
_CONT_EN4 = re.compile(f"([{_ALPHA}])[']([{_ALPHA}])")
_CONT_EN5 = re.compile(r"([0-9])[']([s])")
_WHITE = re.compile("[  \u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\u00a0]+")
_HAS_ALPHA = re.compile(f"[{_ALPHA}]")
_LOWER_START = re.compile("[a-z]")
_DIGIT_START = re.compile("[0-9]+")
_TOKEN = re.compile(r"[^ \t\n\r\f]+")  # java.util.StringTokenizer's default delimiters


def java_trim(text: str) -> str:
    """``String.trim``: drop every character up to U+0020 from both ends."""
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def tokenize(text: str) -> list[str]:
    """Split like ``new StringTokenizer(text)`` (on space, tab, newline, carriage return, form feed)."""
    return _TOKEN.findall(text)


def java_hash(word: str) -> int:
    """``String.hashCode``: ``s[0]*31^(n-1) + ... + s[n-1]`` over UTF-16 code units, as a signed 32-bit int."""
    h = 0
    data = word.encode("utf-16-le", errors="surrogatepass")
    for k in range(0, len(data), 2):
        h = (31 * h + (data[k] | (data[k + 1] << 8))) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def normalize_line(line: str, prefixes: Mapping[str, int]) -> str:
    """``Normalizer.normalizeLine(line, LANG_EN, keepPunctuation=true)``.

    Args:
        line: One segment of text.
        prefixes: Nonbreaking prefix -> ``NBP_ANY`` / ``NBP_NUMERIC_ONLY`` (METEOR's English list).

    Returns:
        The normalised segment: tokens separated by single spaces (case is not changed).
    """
    s = f" {line} "
    s = _SEP_OTHER.sub(r" \1 ", s)
    s = _MULTI_DOT.sub(r" DOTMULTI\1", s)
    while "DOTMULTI." in s:
        s = _MULTI_DOT2.sub(r"DOTDOTMULTI \1", s)
        s = s.replace("DOTMULTI.", "DOTDOTMULTI")
    s = _COMMA.sub(r"\1 , \2", s)
    s = _COMMA2.sub(r"\1 , \2", s)
    s = _COMMA3.sub(r"\1 , \2", s)
    s = _QUOTE.sub("'", s)
    s = _QUOTE2.sub(' " ', s)
    s = s.replace("\u2013", "-").replace("--", "-")
    s = _RM_DASH.sub(r"\1 \2", s)
    s = _CONT_EN.sub(r"\1 ' \2", s)
    s = _CONT_EN2.sub(r"\1 ' \2", s)
    s = _CONT_EN3.sub(r"\1 ' \2", s)
    s = _CONT_EN4.sub(r"\1 '\2", s)
    s = _CONT_EN5.sub(r"\1 '\2", s)

    words = tokenize(s)
    out = []
    for i, word in enumerate(words):
        if len(word) > 1 and word.endswith("."):
            pre = word[:-1]
            kind = prefixes.get(pre)
            following = words[i + 1] if i < len(words) - 1 else None
            if "." in pre and _HAS_ALPHA.search(pre):
                out.append(word.replace(".", ""))  # U.S. -> US
            elif kind == NBP_ANY or (following is not None and _LOWER_START.match(following)):
                out.append(word)
            elif kind == NBP_NUMERIC_ONLY and following is not None and _DIGIT_START.match(following):
                out.append(word)
            else:
                out.append(pre + " .")
        else:
            out.append(word)
        out.append(" ")
    s = "".join(out)
    while "DOTDOTMULTI" in s:
        s = s.replace("DOTDOTMULTI", "DOTMULTI.")
    s = s.replace("DOTMULTI", ".")
    return java_trim(_WHITE.sub(" ", s))
