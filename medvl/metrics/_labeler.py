"""Machinery of the rule-based CheXpert-style labeler (public face: :mod:`medvl.metrics.clinical`).

A report is read in five steps, each a small function below:

1. :func:`prepare`: Unicode clean-up, sentence boundaries that only the letter case
   shows (a line that starts with a capitalised word starts a sentence; MIMIC-CXR wraps
   its lines mid-sentence otherwise), lower case, and the sections that state the reason
   for the study (INDICATION, HISTORY, REASON FOR EXAM, COMPARISON, TECHNIQUE, ...)
   dropped.
2. Two regular-expression passes (:func:`analyse`): one over the whole text finds the
   mentions (``lexicon.MENTIONS``); the other, over each sentence that mentions
   something, the cues and structure words (``lexicon.CUES``, ``STRUCTURE_WORDS``,
   ``STRUCTURE_PUNCT``). Together they are the sentence's stream of events in text order.
3. Per sentence, each cue marks the mentions in its scope (:func:`_forward`,
   :func:`_backward`); "X or Y" marks both uncertain (:func:`_or_pairs`).
4. Each mention is classified from its marks in CheXpert's order (:func:`_classify`).
5. :func:`aggregate` folds the mentions of a report into 14 labels.

Speed: each pass is one regular expression whose alternatives are grouped by their first
letter (:func:`_dispatch`; the plain alternation is kept as its slow twin for a test), and
words start after a space, so the engine tries few alternatives per word; 10,000 reports
take a few seconds of one CPU core.

The scope rules, which replace the dependency-graph patterns of the CheXpert labeler and
NegBio (no parser runs here), are:

* A scope never leaves its sentence or its clause: ";", ":", "but", "however",
  "although", "except", "other than", "which", ", and the", ", there" end it.
* A **forward** scope ("no", "without", "possible", "may represent") covers the mentions
  after the cue up to the first finite verb ("no pneumothorax is seen and the heart is
  enlarged") or the next cue of its kind, which covers the rest; an uncertainty scope
  also ends at a negation ("possible effusion, no pneumothorax").
* **Lists.** A forward scope runs through a comma-separated list. In a list closed by
  "or"/"nor" every item is covered, whatever its modifiers ("no effusion, pneumothorax,
  large consolidation, or mass"). Elsewhere an item that opens with a word of a new
  assertion (size, severity, change, side, a hedge, a determiner, a number:
  ``lexicon.NEW_ASSERTION``) after a comma, "and" or "with" ends the scope ("no
  pneumothorax, small left effusion"; "no acute process with stable cardiomegaly").
  Noun-phrase cues ("not", "normal") stop at a comma unless a conjunction closes the list
  ("normal heart size, mediastinal and hilar contours").
* A **backward** scope ("is absent", "has resolved", "cannot be excluded", "is likely")
  covers the mentions before the cue back to the clause start, over commas only inside a
  list that a conjunction joins to the cue ("the heart, mediastinum and hila are
  normal"), and not past a finite verb or another cue. A cue without a verb ("heart size
  normal") reaches only the phrase just before it.
* A predicate hedge ("is likely", "is suspected") covers its complement when it has one
  ("the opacity is likely atelectasis") and its subject otherwise ("atelectasis is
  likely"); "to suggest" continues an earlier negation of its clause and is a hedge
  otherwise.
* Inside a negated scope an uncertainty word is part of the negated phrase: "no
  suspicious nodule", "no definite consolidation or findings concerning for pneumonia"
  are negative. Only the CheXpert pre-negation cues ("cannot exclude", "not ruled out",
  "no new") make a negated mention uncertain.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterator
from operator import itemgetter

from medvl.data.labels import CHEXPERT_LABELS
from medvl.metrics import _chexpert_lexicon as lex

OUTPUT = CHEXPERT_LABELS
_COLUMN = {name: k for k, name in enumerate(OUTPUT)}

# Event types of the stream.
MEN, END, COMMA, AND, OR, WITH, VERB, CUE, PSEUDO = range(9)
_STRUCT_KIND = {"end": END, "comma": COMMA, "and": AND, "or": OR, "with": WITH, "verb": VERB}
# Marks a mention can collect.
PRE, NEG, UNC, ORUNC = 1, 2, 4, 8
_POLARITY = {"pre": PRE, "neg": NEG, "unc": UNC}
_BREAKS = frozenset((END, VERB))


# ----------------------------------------------------------------------------- the regexes of step 2
def _parse_kind(kind: str) -> tuple[str, str | None, str | None]:
    """``"neg>1<1"`` -> ("neg", "np", "adj"); ``"unc<>"`` -> ("unc", "clause", "clause")."""
    if kind.endswith("<|>"):  # forward when it has a complement, else backward
        return kind[:-3], "either", "clause"
    m = re.fullmatch(r"([a-z]+)(>1|>if|>)?(<1|<)?(>)?", kind)
    if m is None:
        raise ValueError(f"bad cue kind {kind!r}")
    polarity, fwd, bwd, fwd2 = m.groups()
    fwd = fwd or fwd2
    return (polarity, {">": "clause", ">1": "np", ">if": "if", None: None}[fwd],
            {"<": "clause", "<1": "adj", None: None}[bwd])


def _first_chars(pattern: str) -> frozenset[str] | None:
    """Characters a match of ``pattern`` can start with; None when any can (or unknown).

    Read off the parse tree of Python's own regular-expression parser. It lets the
    alternatives be grouped by their first letter, so that at each word the regex engine
    tries only the few that can match there: one pass over a report instead of one per
    phrase, ~10x faster than a flat alternation of all phrases.
    """
    try:
        from re import _constants as C
        from re import _parser as P
    except ImportError:  # pragma: no cover - Python < 3.11
        import sre_constants as C
        import sre_parse as P

    def seq(items) -> tuple[set[str] | None, bool]:
        out: set[str] = set()
        for op, av in items:
            chars, nullable = item(op, av)
            if chars is None:
                return None, False
            out |= chars
            if not nullable:
                return out, False
        return out, True

    def item(op, av) -> tuple[set[str] | None, bool]:
        if op is C.LITERAL:
            return {chr(av)}, False
        if op is C.IN:
            out: set[str] = set()
            for o, a in av:
                if o is C.LITERAL:
                    out.add(chr(a))
                elif o is C.RANGE:
                    out.update(map(chr, range(a[0], a[1] + 1)))
                else:
                    return None, False
            return out, False
        if op is C.BRANCH:
            out, nullable = set(), False
            for alternative in av[1]:
                chars, null = seq(alternative)
                if chars is None:
                    return None, False
                out |= chars
                nullable |= null
            return out, nullable
        if op is C.SUBPATTERN:
            return seq(av[-1])
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            chars, nullable = seq(av[2])
            return chars, nullable or av[0] == 0
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            return set(), True
        return None, False

    try:
        chars, nullable = seq(P.parse(pattern))
    except Exception:  # noqa: BLE001 - an unreadable tree only costs speed
        return None
    return None if chars is None or nullable else frozenset(chars)


# Word-initial letters of chest X-ray reports, most frequent first (the dispatch tries the
# groups in this order).
_LETTER_ORDER = "tapsiolcnremwhbfdugvkyjqxz0123456789"


def _dispatch(alternatives: list[tuple[str, str]], nested: bool = True) -> str:
    """One alternation of named ``(name, pattern)`` alternatives, nested by first character.

    The order of the alternatives is kept within each first character, so where two can
    match at the same place the one listed first still wins. Group names get a suffix
    (``m12_99``); :func:`_name` takes it off. ``nested=False`` gives the plain alternation
    in list order, the slow twin that a test holds equal to the nested one.
    """
    if not nested:
        return "|".join(f"(?:{p})(?P<{n}_flat>)" for n, p in alternatives)
    by_char: dict[str, list[tuple[str, str]]] = {}
    anywhere: list[tuple[str, str]] = []
    firsts = [(name, pattern, _first_chars(pattern)) for name, pattern in alternatives]
    present = {c for _, _, f in firsts if f for c in f}
    chars = sorted(present, key=lambda c: (_LETTER_ORDER.find(c) % 100, c))
    for c in chars:
        by_char[c] = [(n, p) for n, p, f in firsts if f is None or c in f]
    anywhere = [(n, p) for n, p, f in firsts if f is None]
    # The group that names an alternative is an empty one after it: the regex engine saves
    # and restores the groups opened so far at every branch it tries, so groups that open
    # only once their alternative has matched keep that cheap.
    parts = [f"(?={re.escape(c)})(?:" + "|".join(f"(?:{p})(?P<{n}_{ord(c)}>)" for n, p in alts) + ")"
             for c, alts in by_char.items()]
    if anywhere:
        parts.append("|".join(f"(?:{p})(?P<{n}_any>)" for n, p in anywhere))
        return "|".join(parts)
    gate = "[" + "".join(re.escape(c) for c in chars) + "]"  # one test for words no alternative starts
    return f"(?={gate})(?:" + "|".join(parts) + ")"


def _name(group: str) -> str:
    return group.rsplit("_", 1)[0]


def _mention_regex(nested: bool = True) -> tuple[re.Pattern, dict[str, tuple[tuple[str, str], ...]]]:
    groups: list[tuple[str, list[tuple[str, str]]]] = [(p, []) for p in lex.BLOCK]
    seen: dict[str, int] = {}
    for obs, patterns in lex.MENTIONS.items():
        for pattern, kind in patterns:
            if pattern in seen:  # one phrase, two observations ("hydropneumothorax")
                groups[seen[pattern]][1].append((obs, kind))
            else:
                seen[pattern] = len(groups)
                groups.append((pattern, [(obs, kind)]))
    alternatives = _dispatch([(f"m{i}", p) for i, (p, _) in enumerate(groups)], nested)
    regex = re.compile(r" (?:" + alternatives + r")(?![a-z])")
    targets = {group: tuple(groups[int(_name(group)[1:])][1]) for group in regex.groupindex}
    return regex, targets


def _cue_regex(nested: bool = True) -> tuple[re.Pattern, dict[str, tuple[int, object]]]:
    """The cue/structure regex and, per group name, (event type, cue info).

    Patterns marked ``{be}``/``{be!}`` also go into one alternative that starts with the
    copula ("is", "has been", "remains", + an adverb): tried first, so "is absent" is one
    cue, and the copula words are matched once for all of them.
    """
    words, copular, punct, info = [], [], [], {}
    for i, (pattern, kind, _rule) in enumerate(lex.CUES):
        polarity, fwd, bwd = _parse_kind(kind)
        name = f"c{i}"
        if pattern.startswith("{be!}"):
            copular.append(f"(?:{pattern[5:]})(?P<{name}_be>)")
        elif pattern.startswith("{be}"):
            copular.append(f"(?:{pattern[4:]})(?P<{name}_be>)")
            words.append((name, pattern[4:]))
        else:
            words.append((name, pattern))
        if polarity == "pseudo":
            info[name] = (PSEUDO, None)
        elif polarity == "stop":
            info[name] = (END, None)
        else:
            info[name] = (CUE, (_POLARITY[polarity], fwd, bwd))
    for i, (pattern, kind) in enumerate(lex.STRUCTURE_WORDS):
        words.append((f"w{i}", pattern))
        info[f"w{i}"] = (_STRUCT_KIND[kind], None)
    for i, (pattern, kind) in enumerate(lex.STRUCTURE_PUNCT):
        punct.append(f"(?:{pattern})(?P<p{i}_>)")
        info[f"p{i}"] = (_STRUCT_KIND[kind], None)
    copula = f"{lex.COPULA} (?:{lex.COPULA_ADVERB} )?(?:" + "|".join(copular) + ")"
    regex = re.compile(r" (?:" + copula + "|" + _dispatch(words, nested) + r")(?![\w/-])|" + "|".join(punct))
    return regex, {group: info[_name(group)] for group in regex.groupindex}


_MENTION_RE, _TARGETS = _mention_regex()
_CUE_RE, _CUE_INFO = _cue_regex()
_SENTENCE_END = re.compile(r"\.(?!\d)|[?!]+")
_QUALIFIER_RE = re.compile(lex.ABNORMAL_QUALIFIERS)
_QUALIFIER_END = re.compile(lex.QUALIFIER_END)
_LATERALITY = re.compile("|".join(rf"(?P<{side}>{p})" for p, side in lex.LATERALITY))
_NEXT_WORD = re.compile(r"[\s,]*(?:(?:and|or|with)\s+)?([a-z0-9]+)")
_NEW_ASSERTION = lex.NEW_ASSERTION
_ADJACENT_WORDS = 2  # "cardiac silhouette size normal": words between a phrase and a verbless cue
_PARTICIPLE = re.compile(r"\b[a-z]+(?:ed|ly|ing)\b")
_START = itemgetter(0)

# ----------------------------------------------------------------------------- step 1: text
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)  # zero-width, soft hyphen
_INVISIBLE.update({ord("\u2019"): "'", ord("\u2018"): "'", ord("\u2013"): "-", ord("\u2014"): "-",
                   ord("\u00a0"): " "})
_CASED_BREAK = re.compile(r"\n[ \t]*(?=[A-Z][a-z])")  # a wrapped line never starts with a capitalised word
_MARK = "\x00"  # where _CASED_BREAK found a sentence start: kept apart from blank lines until sections are cut
_ABBREVIATIONS = (("vs.", "vs"), ("e.g.", "eg"), ("i.e.", "ie"), ("dr.", "dr"), ("a.m.", "am"), ("p.m.", "pm"),
                  ("approx.", "approx"), ("resp.", "resp"), ("incl.", "incl"))
_PUNCTUATION = ",;:()[]/"  # set off by spaces, so that every word starts after a space
_SKIP_HEADING = re.compile(r"[ \t\x00]*(?:final report\s*)?(?:(?P<narr>" + lex.SKIP_SECTIONS_NARRATIVE
                           + r")|(?P<line>" + lex.SKIP_SECTIONS_LINE + r"))[ \t]*")
_ANY_HEADING = re.compile(r"[ \t\x00]*(?:final report\s*)?(?:" + lex.SKIP_SECTIONS_NARRATIVE + "|"
                          + lex.SKIP_SECTIONS_LINE + "|" + lex.KEEP_SECTIONS + r")[ \t]*")
_LINE_HEADING = re.compile(r"[ \t\x00]*[a-z][a-z /&(),\t-]{1,50}")  # "pa and lateral chest radiograph:"
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")


def _heading_start(text: str, lo: int, colon: int) -> int:
    """Where the would-be heading before ``text[colon]`` starts: its line's start or a ". "."""
    start = max(lo, text.rfind("\n", lo, colon) + 1)
    stop = text.rfind(". ", start, colon)
    return stop + 2 if stop >= 0 else start


def _section_end(text: str, pos: int, narrative: bool) -> int:
    """End of the section whose body starts at ``pos``.

    A narrative section (indication, history) runs to a blank line or the next heading;
    a line section (comparison, technique) to the end of its line or the next heading.
    A heading is a known name before a colon, or any short phrase before a colon at the
    start of a line.
    """
    if narrative:
        blank = _BLANK_LINE.search(text, pos)
        limit = blank.start() if blank else len(text)
    else:
        limit = text.find("\n", pos)
        limit = len(text) if limit < 0 else limit
    colon = text.find(":", pos, limit)
    while colon >= 0:
        start = _heading_start(text, pos, colon)
        if _ANY_HEADING.fullmatch(text, start, colon) or (
                start > pos and text[start - 1] == "\n" and _LINE_HEADING.fullmatch(text, start, colon)):
            return start
        colon = text.find(":", colon + 1, limit)
    return limit


def _drop_reason_sections(text: str) -> str:
    """The (lower-case) text without its INDICATION/HISTORY/COMPARISON/TECHNIQUE/... sections.

    A heading is a known name between a line start (or ". ") and a colon.
    """
    out, pos = [], 0
    colon = text.find(":")
    while colon >= 0:
        start = _heading_start(text, pos, colon)
        m = _SKIP_HEADING.fullmatch(text, start, colon)
        if m is None:
            colon = text.find(":", colon + 1)
            continue
        out.append(text[pos:start])
        pos = _section_end(text, colon + 1, m.group("narr") is not None)
        out.append(" . ")
        colon = text.find(":", pos)
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def prepare(text: str) -> str:
    """Lower-case report text, reason-for-study sections removed, on one line.

    Paragraphs and lines that start with a capitalised word become sentence ends,
    punctuation is set off by spaces, and the text starts with a space, so that every
    word starts after one.
    """
    if not text:
        return ""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
        if _MARK in text:
            text = text.replace(_MARK, " ")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in text:
        text = _CASED_BREAK.sub("\n" + _MARK, text)
    text = text.lower()
    if ":" in text:
        text = _drop_reason_sections(text)
    for short, word in _ABBREVIATIONS:
        if short in text:
            text = text.replace(short, word)
    if "\n" in text:
        text = _PARAGRAPH.sub(" . ", text)
        if _MARK in text:
            text = text.replace(_MARK, " . ")
    for c in _PUNCTUATION:
        if c in text:
            text = text.replace(c, f" {c} ")
    return " " + " ".join(text.split()) + " "


# ----------------------------------------------------------------------------- step 3: scopes
def _new_assertion(text: str, pos: int) -> bool:
    """Whether the list item starting at ``pos`` opens a new assertion ("small left effusion")."""
    m = _NEXT_WORD.match(text, pos)
    if m is None:
        return False
    word = m.group(1)
    return word in _NEW_ASSERTION or word[0].isdigit()


def _list_ends(ev: list[tuple]) -> list[tuple[int, int]]:
    """Per event, the last "or" and the last "and" after it before the next verb or clause end.

    A conjunction there closes the list that a forward cue at that event heads. One pass
    from the end keeps the scope walks linear in the sentence's length.
    """
    out = [(-1, -1)] * len(ev)
    last_or = last_and = -1
    for j in range(len(ev) - 1, -1, -1):
        out[j] = (last_or, last_and)
        t = ev[j][2]
        if t in _BREAKS:
            last_or = last_and = -1
        elif t == OR and last_or < 0:
            last_or = j
        elif t == AND and last_and < 0:
            last_and = j
    return out


def _forward(text: str, ev: list[tuple], i: int, np_only: bool, polarity: int,
             list_ends: list[tuple[int, int]]) -> Iterator[int]:
    """Indices of the mentions in the forward scope of the cue at ``ev[i]``."""
    last_or, last_and = list_ends[i]
    prev = ev[i][1]
    for j in range(i + 1, len(ev)):
        start, end, t, info = ev[j]
        if t == MEN:
            if np_only and _PARTICIPLE.search(text, prev, start):
                return  # a noun phrase ends at a participle or adverb ("not changed appreciably")
            yield j
        elif t in _BREAKS:
            return
        elif t == COMMA or t == AND or t == WITH:
            if t != WITH and j < last_or:
                continue  # inside a list closed by "or": every item is covered
            if np_only and (t == WITH or (t == COMMA and j > last_and)):
                return
            if _new_assertion(text, end):
                return
        elif t == CUE and (info[0] == polarity or (polarity != NEG and info[0] == NEG)):
            return  # the next cue of the kind covers the rest; a negation opens its own scope
        prev = end


def _backward(text: str, ev: list[tuple], i: int, adjacent: bool) -> Iterator[int]:
    """Indices of the mentions in the backward scope of the cue at ``ev[i]``.

    With ``adjacent`` (a cue without a verb: "heart size normal") only the phrase right
    before the cue is in scope: no event and at most a few words between them.
    """
    if adjacent:
        j = i - 1
        if j >= 0 and ev[j][2] == MEN and len(text[ev[j][1] : ev[i][0]].split()) <= _ADJACENT_WORDS:
            yield j
        return
    joined = False  # a conjunction between the cue and the comma makes the comma a list's
    for j in range(i - 1, -1, -1):
        t = ev[j][2]
        if t == MEN:
            yield j
        elif t in _BREAKS or t == CUE:
            return  # a verb or another cue belongs to another predicate
        elif t == AND or t == OR:
            joined = True
        elif t == COMMA and not joined:
            return


def _or_pairs(ev: list[tuple], i: int) -> tuple[int, int] | None:
    """The mentions on both sides of the "or" at ``ev[i]`` (CheXpert: conj:or is uncertain)."""
    sides = []
    for step, stop in ((-1, -1), (1, len(ev))):
        for j in range(i + step, stop, step):
            t = ev[j][2]
            if t == MEN:
                sides.append(j)
                break
            if t != CUE and t != PSEUDO:
                return None
        else:
            return None
    return sides[0], sides[1]


def _marks(text: str, ev: list[tuple]) -> dict[int, int]:
    """Mention index -> PRE/NEG/UNC/ORUNC bits, for one sentence's events."""
    marks = {j: 0 for j, e in enumerate(ev) if e[2] == MEN}
    if not marks:
        return marks
    negated_clause = False
    list_ends = _list_ends(ev)
    for i, (_, _, t, info) in enumerate(ev):
        if t == END:
            negated_clause = False
        elif t == OR:
            pair = _or_pairs(ev, i)
            if pair:
                marks[pair[0]] |= ORUNC
                marks[pair[1]] |= ORUNC
        elif t == CUE:
            bit, fwd, bwd = info
            if fwd == "if":  # continues a negation of the clause, else a hedge
                bit, fwd = (NEG if negated_clause else UNC), "clause"
            if bit == NEG:
                negated_clause = True
            if fwd == "either":
                covered = list(_forward(text, ev, i, False, bit, list_ends))
                for j in covered:
                    marks[j] |= bit
                if covered:
                    continue
            elif fwd:
                for j in _forward(text, ev, i, fwd == "np", bit, list_ends):
                    marks[j] |= bit
            if bwd:
                for j in _backward(text, ev, i, bwd == "adj"):
                    marks[j] |= bit
    return marks


# ----------------------------------------------------------------------------- step 4: labels
def _segment(ev: list[tuple], j: int, lo: int, hi: int) -> tuple[int, int]:
    """Text bounds of the phrase of the mention ``ev[j]``: its comma/clause segment, cut at
    the neighbouring mentions, so that a qualifier belongs to the mention it stands next to
    ("stable cardiac enlargement and stable mediastinal contours": "enlargement" does not
    qualify the contours)."""
    stops = (COMMA, END, MEN)
    a, b = lo, hi
    for k in range(j - 1, -1, -1):
        if ev[k][2] in stops:
            a = ev[k][1]
            break
    for k in range(j + 1, len(ev)):
        if ev[k][2] in stops:
            b = ev[k][0]
            break
    return a, b


def _classify(kind: str, bits: int, text: str, ev: list[tuple], j: int, lo: int, hi: int) -> int | None:
    """1 / 0 / -1 of one mention, or None when an anatomical mention asserts nothing.

    CheXpert's order: pre-negation uncertainty, then negation, then uncertainty. An
    anatomical ("attr") mention is negative when negated, a finding only with an abnormal
    qualifier in its segment ("heart size is enlarged"), and nothing otherwise ("heart
    size is stable" says no more than that it did not change).
    """
    if kind == "attr":
        if bits & NEG and not bits & PRE:
            return 0
        a, b = _segment(ev, j, lo, hi)
        cut = _QUALIFIER_END.search(text, ev[j][1], b)  # "difficult to assess due to increasing opacity"
        if _QUALIFIER_RE.search(text, a, cut.start() if cut else b) is None:
            return None
        return -1 if bits & (PRE | UNC | ORUNC) else 1
    if bits & PRE:
        return -1
    if bits & NEG:
        return 0
    if bits & (UNC | ORUNC) or kind == "unc":
        return -1
    return 1


def _sides(text: str, ev: list[tuple], lo: int, hi: int) -> list[str | None]:
    """Per event, the side ("left", "right", "bilateral") named in its comma/clause segment.

    Linear in the sentence: the segment bounds come from one pass each way, the sides in a
    segment from prefix counts of the side words.
    """
    n = len(ev)
    starts, ends = [lo] * n, [hi] * n
    a = lo
    for j in range(n):
        starts[j] = a
        if ev[j][2] in (COMMA, END):
            a = ev[j][1]
    b = hi
    for j in range(n - 1, -1, -1):
        ends[j] = b
        if ev[j][2] in (COMMA, END):
            b = ev[j][0]
    hits = [(m.start(), m.lastgroup) for m in _LATERALITY.finditer(text, lo, hi)]
    positions = [h[0] for h in hits]
    counts = {side: [0] for side in ("bilateral", "left", "right")}
    for _, side in hits:
        for name, c in counts.items():
            c.append(c[-1] + (name == side))
    out: list[str | None] = []
    for j in range(n):
        x, y = bisect_left(positions, starts[j]), bisect_left(positions, ends[j])
        found = {name for name, c in counts.items() if c[y] > c[x]}
        out.append("bilateral" if "bilateral" in found or {"left", "right"} <= found else next(iter(found), None))
    return out


def analyse(text: str, *, sides: bool = False) -> list[tuple]:
    """Classified mentions of a report, in reading order.

    Only sentences that mention something are searched for cues.

    Returns:
        ``(observation, matched text, label, sentence index, side)`` tuples; the side is
        the laterality named in the mention's comma/clause segment when ``sides`` is set,
        else None.
    """
    text = prepare(text)
    targets, info = _TARGETS, _CUE_INFO
    men = [(m.start() + 1, m.end(), MEN, targets[m.lastgroup]) for m in _MENTION_RE.finditer(text)]
    men = [e for e in men if e[3]]
    if not men:
        return []
    out: list[tuple] = []
    ends = [m.start() for m in _SENTENCE_END.finditer(text)]
    ends.append(len(text))
    k, lo, s_idx, n_men = 0, 0, 0, len(men)
    for hi in ends:
        if k < n_men and men[k][0] < hi:
            first = k
            while k < n_men and men[k][0] < hi:
                k += 1
            ev = men[first:k] + [(m.start(), m.end()) + info[m.lastgroup] for m in _CUE_RE.finditer(text, lo, hi)]
            ev.sort(key=_START)
            side = _sides(text, ev, lo, hi) if sides else None
            for j, bits in _marks(text, ev).items():
                s, e, _, mention_targets = ev[j]
                for obs, kind in mention_targets:
                    label = _classify(kind, bits, text, ev, j, lo, hi)
                    if label is not None:
                        out.append((obs, text[s:e], label, s_idx, side[j] if side else None))
            if k == n_men:
                break
        if hi > lo + 1 and not text[lo:hi].isspace():
            s_idx += 1
        lo = hi + 1
    return out


# ----------------------------------------------------------------------------- step 5: report
def aggregate(mentions: list[tuple]) -> list[float]:
    """14 labels from (observation, text, label, ...) tuples, as CheXpert's ``aggregate.py``.

    Positive beats uncertain beats negative; "CHF"/"heart failure" mentioned positively or
    uncertainly also makes Cardiomegaly uncertain; No Finding is 1 when no mention other
    than Support Devices (other findings included) is positive or uncertain.
    """
    row = [_NAN] * len(OUTPUT)
    no_finding = True
    for obs, text, label, *_ in mentions:
        if label and obs != "support_device":
            no_finding = False
        if label and obs == "edema" and text in ("chf", "heart failure"):
            _fold(row, _CARDIOMEGALY, -1)
        k = _COLUMN.get(obs)
        if k is not None:
            _fold(row, k, label)
    if no_finding:
        row[0] = 1.0
    return row


_NAN = float("nan")
_CARDIOMEGALY = _COLUMN["cardiomegaly"]


def _fold(row: list[float], k: int, label: int) -> None:
    old = row[k]
    if old != old or label == 1 or (label == -1 and old == 0):  # NaN, or a label of higher priority
        row[k] = float(label)
