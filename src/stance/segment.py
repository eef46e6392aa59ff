"""Sentence splitting for whole articles, with character offsets into the original text.

The splitting itself is Wikimedia's `sentencex`: pure Python, offline, maintained, and
covering every Wikipedia language (Arabic `؟` and `،`, guillemets and other quotes,
per-language abbreviation lists, with fallback chains for languages it has no rules
for). Alternatives were rejected: pysbd lacks Ukrainian and Turkish, NLTK's punkt and
wtpsplit need downloaded models, spaCy's sentencizer knows no abbreviations.

Around it this module only does what a splitter cannot know about news pages:
paragraphs (each line is a block, so headlines and page furniture without a full stop
stay separate), and a wire dateline at the very start ("MOSCOW, February 1. /TASS/.",
"BERLIN (dpa) -"), which the annotation guideline excludes from the first sentence.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from sentencex import segment as _sentencex_segment

# A dateline: an upper-case place, an optional date, an optional agency in () or //,
# then a dash or full stop. Only tried at the start of an article.
_DATELINE = re.compile(
    r"""^[ \t]*
    (?P<dateline>
      [^\W\d_a-zа-яё][^\W\d_a-zа-яё' .\-]{1,30}       # PLACE in capitals (any script with case)
      (?:,(?:[ \t]*\w+\.?){1,4})?                      # , date: up to four words ("Dec. 3.")
      (?:[ \t]*\.?[ \t]*(?P<agency>\([^)\n]{2,20}\)|/[^/\n]{2,20}/))?  # (AGENCY) or /AGENCY/
      [ \t]*(?:\.-|[-–—.])                           # terminator
    )[ \t]+(?=\S)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Sentence:
    """One sentence: its text and its [start, end) character offsets in the article."""

    text: str
    start: int
    end: int


def guess_language(text: str) -> str:
    """A script-based guess for the splitter's rules when the caller gives no language."""
    counts = {"ar": 0, "ru": 0, "latin": 0}
    for ch in text[:2000]:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if name.startswith("ARABIC"):
            counts["ar"] += 1
        elif name.startswith("CYRILLIC"):
            counts["ru"] += 1
        else:
            counts["latin"] += 1
    best = max(counts, key=counts.get)
    return "en" if best == "latin" else best


def find_dateline(text: str) -> tuple[int, int] | None:
    """The [start, end) span of a wire dateline at the start of `text`, if there is one."""
    match = _DATELINE.match(text)
    if not match:
        return None
    dateline = match.group("dateline")
    # The place is in capitals ("BEIRUT -"); in scripts without case only an agency
    # ("دمشق (سانا) –") tells a dateline from a short first sentence.
    place = re.match(r"[^,(/.\-–—]+", dateline).group(0).strip()
    caseless = place.upper() == place.lower()
    if len(place) < 3 or (caseless and not match.group("agency")) or (not caseless and place != place.upper()):
        return None
    return match.start("dateline"), match.end("dateline")


def article_dateline(text: str) -> Sentence | None:
    """The dateline at the start of an article's first non-empty line, with its offsets."""
    first = re.search(r"[^\n]*\S[^\n]*", text)
    span = find_dateline(first.group(0)) if first else None
    if not first or not span:
        return None
    start, end = first.start() + span[0], first.start() + span[1]
    return Sentence(text[start:end], start, end)


def split_sentences(text: str, lang: str | None = None) -> list[Sentence]:
    """Split an article into sentences with offsets; `text[s.start:s.end] == s.text` for each.

    A dateline at the start is left out (see :func:`article_dateline`).
    """
    lang = (lang or guess_language(text)).lower()
    dateline = article_dateline(text)
    sentences: list[Sentence] = []
    for block in re.finditer(r"[^\n]+", text):
        start, body = block.start(), block.group(0)
        if dateline and start <= dateline.start < block.end():
            body = text[dateline.end : block.end()]
            start = dateline.end
        offset = start
        for piece in _sentencex_segment(lang, body):
            stripped = piece.strip()
            if stripped:
                lead = len(piece) - len(piece.lstrip())
                sentences.append(Sentence(stripped, offset + lead, offset + lead + len(stripped)))
            offset += len(piece)
    return sentences
