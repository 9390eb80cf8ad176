"""Radiology report section parsing and text clean-up.

:func:`parse_report` splits a free-text report into its sections (findings,
impression, indication, comparison, history, technique, examination) the way the
MIMIC-CXR section parser does (Johnson et al., "MIMIC-CXR, a de-identified publicly
available database of chest radiographs with free-text reports", Sci. Data 2019,
``txt/section_parser.py`` of the MIT-LCP mimic-cxr repository): a heading is an
upper-case phrase at the start of a line followed by a colon ("FINDINGS:",
"IMPRESSION:"), its name is normalised through a synonym table ("CONCLUSION" is the
impression, "REASON FOR EXAM" the indication, "CLINICAL INFORMATION" the history),
and typos are matched to the nearest known name. It also reads the Indiana
University / Open-i XML form (``<AbstractText Label="FINDINGS">``, Demner-Fushman et
al., JAMIA 2016), title-case headings ("Findings:"), reports flattened onto one line
("FINDINGS: ... IMPRESSION: ..."), and known headings without a colon on a line of
their own ("CLINICAL INFORMATION").

:func:`clean_text` normalises the odd Unicode found in exported reports: NFKC
(non-breaking and full-width spaces, ligatures), curly quotes and dashes to ASCII,
zero-width characters and soft hyphens removed, control characters dropped, and
de-identification blanks (MIMIC's ``___``) kept as a single ``___`` token.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

__all__ = ["SECTIONS", "clean_text", "format_report", "parse_iu_abstract", "parse_report"]

SECTIONS: tuple[str, ...] = (
    "findings",
    "impression",
    "indication",
    "comparison",
    "history",
    "technique",
    "examination",
    "other",
)
"""Keys of :func:`parse_report`'s result; ``other`` holds unknown sections and headless text."""

# Heading name (lower case, single spaces) -> section key. Keys starting with "_" are
# resolved after parsing: "_findings_impression" fills both when they are missing,
# "_view" (old-style "CHEST, TWO VIEWS:" titles whose body is the findings) fills
# findings when there is no FINDINGS section, "_skip" is dropped (preamble-like).
_HEADINGS: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "reference findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "findings and impression": "_findings_impression",
    "impression and findings": "_findings_impression",
    "findings/impression": "_findings_impression",
    "findings / impression": "_findings_impression",
    "findings & impression": "_findings_impression",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "reason": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "comparison study": "comparison",
    "reference exam": "comparison",
    "prior studies": "comparison",
    "history": "history",
    "clinical history": "history",
    "patient history": "history",
    "medical history": "history",
    "clinical information": "history",
    "clinical information & questions to be answered": "history",
    "clinical details": "history",
    "pfi": "history",
    "technique": "technique",
    "procedure": "technique",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "study": "examination",
    "final report": "_skip",
    "wet read": "_skip",
    "wetread": "_skip",
    "addendum": "other",
    "notification": "other",
    "recommendation": "other",
    "recommendations": "other",
    "recommendation(s)": "other",
    "note": "other",
    "comment": "other",
    "comments": "other",
}

# Old MIMIC reports title the findings with the view ("CHEST, PA AND LATERAL:").
_VIEW_TITLE = re.compile(
    r"\b(chest|portable|pa and lat|lateral and pa|ap and lat|frontal|two views|one view|"
    r"pa view|ap view|lateral view|upright|supine)\b"
)
# Substrings that identify a section whatever else the heading says (MIT-LCP rule).
_MAIN_WORDS = (("impression", "impression"), ("conclusion", "impression"), ("finding", "findings"),
               ("indication", "indication"), ("history", "history"), ("comparison", "comparison"),
               ("technique", "technique"))

_KNOWN_UPPER = sorted((k.upper() for k in _HEADINGS), key=len, reverse=True)
_HEAD_CHARS = r"A-Za-z ()/,&'\-"
# A heading at the start of a line: up to 6 words of letters, then a colon.
_LINE_HEADING = re.compile(rf"(?m)^[ \t]*(?P<name>[A-Za-z][{_HEAD_CHARS}]{{0,60}}?)[ \t]*:(?=\s|$)")
# A known upper-case heading anywhere (reports flattened onto one line).
_INLINE_HEADING = re.compile(
    r"(?<![A-Za-z])(?P<name>" + "|".join(re.escape(k) for k in _KNOWN_UPPER) + r")[ \t]*:(?=\s|$)"
)
# A known heading alone on its line, without a colon ("CLINICAL INFORMATION").
_BARE_HEADING = re.compile(r"(?m)^[ \t]*(?P<name>[A-Z][A-Z ()/,&'\-]{2,60}?)[ \t]*$")

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2028": "\n", "\u2029": "\n", "\u0085": "\n", "\x0b": "\n", "\x0c": "\n",
})
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_BLANKS = re.compile(r"_{3,}")
# Unicode category Cc (C0 and C1 controls) except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str, *, keep_newlines: bool = False) -> str:
    """Normalise Unicode and whitespace in report text.

    Args:
        text: Raw text (``str``; bytes must be decoded by the caller).
        keep_newlines: Keep line breaks (collapsing other whitespace on each line) so
            that headings can still be found; otherwise all whitespace becomes single
            spaces.

    Returns:
        NFKC-normalised text with ASCII quotes and dashes, no zero-width or control
        characters, runs of underscores as ``___``, and stripped whitespace.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_QUOTES)
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).translate(_ZERO_WIDTH)
    text = _CONTROL.sub("", text)
    text = _BLANKS.sub("___", text)
    if keep_newlines:
        lines = (re.sub(r"[^\S\n]+", " ", line).strip() for line in text.split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return re.sub(r"\s+", " ", text).strip()


def _section_key(name: str, *, strict: bool) -> str | None:
    """Map a heading name to a section key; None when it is not a heading.

    With ``strict`` (headings found at a line start) a mixed-case name must be a
    known one; an unknown upper-case name of two words or a word of six letters or
    more is an ``other`` section (or a main section when it contains "IMPRESSION",
    "FINDING", ..., or the nearest known name for a typo).
    """
    norm = re.sub(r"\s+", " ", name.strip().lower())
    if norm in _HEADINGS:
        return _HEADINGS[norm]
    if strict and not name.isupper():
        return None
    letters, words = sum(c.isalpha() for c in norm), len(norm.split())
    if words > 6 or (words == 1 and letters < 6) or letters < 4:
        return None  # "PICC:", "ETT:" open a phrase of the findings, not a section
    for word, key in _MAIN_WORDS:
        if word in norm:
            return key
    close = difflib.get_close_matches(norm, list(_HEADINGS), n=1, cutoff=0.85)
    if close:
        return _HEADINGS[close[0]]
    if _VIEW_TITLE.search(norm):
        return "_view"
    return "other"


def _headings(text: str) -> list[tuple[int, int, str]]:
    """(start, end, key) of every heading in ``text``, in order, without overlaps."""
    found: list[tuple[int, int, str]] = []
    for m in _LINE_HEADING.finditer(text):
        key = _section_key(m.group("name"), strict=True)
        if key is not None:
            found.append((m.start("name"), m.end(), key))
    for m in _INLINE_HEADING.finditer(text):
        found.append((m.start("name"), m.end(), _HEADINGS[m.group("name").lower()]))
    for m in _BARE_HEADING.finditer(text):
        norm = re.sub(r"\s+", " ", m.group("name").strip().lower())
        if norm in _HEADINGS:
            found.append((m.start("name"), m.end(), _HEADINGS[norm]))
    found.sort(key=lambda t: (t[0], -t[1]))
    out: list[tuple[int, int, str]] = []
    for start, end, key in found:
        if out and start < out[-1][1]:
            continue  # inside a heading already taken (e.g. inline match of a line heading)
        out.append((start, end, key))
    return out


def _finish(parts: Mapping[str, list[str]]) -> dict[str, str]:
    """Join each section's pieces and resolve the deferred keys."""
    joined = {k: " ".join(p for p in parts.get(k, []) if p) for k in (*SECTIONS, "_findings_impression", "_view")}
    both, view = joined.pop("_findings_impression"), joined.pop("_view")
    if both:
        joined["findings"] = joined["findings"] or both
        joined["impression"] = joined["impression"] or both
    if view:
        if joined["findings"]:
            joined["other"] = " ".join(p for p in (joined["other"], view) if p)
        else:
            joined["findings"] = view
    return joined


def parse_report(text: str | None) -> dict[str, str]:
    """Split a radiology report into sections.

    Handles MIMIC-CXR free text ("FINAL REPORT", upper-case headings with a colon,
    wrapped lines with leading spaces, ``___`` blanks), its variants ("FINDINGS AND
    IMPRESSION:", "CONCLUSION:", "HISTORY:", "CLINICAL INFORMATION" on its own line,
    misspelt headings), reports flattened onto one line, and IU X-ray XML
    (``<AbstractText Label="...">``). Text before the first heading (the preamble:
    "FINAL REPORT", "WET READ: ...") is dropped; a report without any heading goes
    whole into ``other``. A combined "FINDINGS AND IMPRESSION" section fills both
    ``findings`` and ``impression`` where they are otherwise missing; repeated
    sections are concatenated.

    Args:
        text: The report; ``None`` or empty gives all sections empty.

    Returns:
        ``{key: text}`` for every key of :data:`SECTIONS`, whitespace-normalised
        (single spaces, stripped); a missing section is ``""``.
    """
    if not text:
        return dict.fromkeys(SECTIONS, "")
    if "<AbstractText" in text:
        return parse_iu_abstract(text)
    text = clean_text(text, keep_newlines=True)
    heads = _headings(text)
    parts: dict[str, list[str]] = {}
    if not heads:
        parts["other"] = [clean_text(text)]
    for i, (_, end, key) in enumerate(heads):
        stop = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        if key != "_skip":
            parts.setdefault(key, []).append(clean_text(text[end:stop]))
    return _finish(parts)


def parse_iu_abstract(xml: str | bytes | ET.Element) -> dict[str, str]:
    """Sections of an Indiana University / Open-i XML report.

    Args:
        xml: The whole ``eCitation`` document, a fragment holding
            ``<AbstractText Label="...">`` elements, or a parsed element.

    Returns:
        Like :func:`parse_report`: the ``Label`` attribute (FINDINGS, IMPRESSION,
        INDICATION, COMPARISON, ...) names the section.

    Raises:
        ValueError: The text is not well-formed XML.
    """
    if isinstance(xml, ET.Element):
        root = xml
    else:
        raw = xml.decode("utf-8") if isinstance(xml, bytes) else xml
        raw = re.sub(r"^\s*<\?xml[^>]*\?>", "", raw)
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            try:
                root = ET.fromstring(f"<root>{raw}</root>")  # a fragment of sibling elements
            except ET.ParseError as err:
                raise ValueError(f"malformed report XML ({err})") from None
    parts: dict[str, list[str]] = {}
    for node in root.iter("AbstractText"):
        label = node.get("Label") or ""
        key = _section_key(label, strict=False) if label else "other"
        body = clean_text("".join(node.itertext()))
        if key and key != "_skip" and body:
            parts.setdefault(key, []).append(body)
    return _finish(parts)


def format_report(sections: Mapping[str, str], include: Iterable[str] = ("findings", "impression")) -> str:
    """Write sections back as ``"FINDINGS: ...\\n\\nIMPRESSION: ..."`` (empty ones skipped).

    This is the ``report`` layout of the synthetic dataset, so every reader's
    ``report`` field looks the same.
    """
    return "\n\n".join(f"{k.upper()}: {sections[k]}" for k in include if sections.get(k))
