"""Cut a corpus into the chunks an index holds: lines, paragraphs or sentences.

Each chunk is a :class:`~rnnembed.corpus.Record` whose ``source`` ("path:line") points at the
line where it starts (for a sentence: where its paragraph starts). Empty chunks are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from rnnembed.corpus import JSONL_SUFFIXES, TABLE_DELIMITERS, Record, read_corpus
from rnnembed.errors import RnnembedError

CHUNKS = ("lines", "paragraphs", "sentences")

# A sentence ends at . ! ? (then closing quotes or brackets, then space, or ! ? then a CJK
# character), at 。！？． (then closing quotes or brackets), or at a line break before a list
# item ("1. ", "2) ", "- ", "* ", "• "); whether a Latin candidate really ends one is decided
# below.
# kana and CJK ideographs: scripts written without spaces (Hangul is spaced)
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_ENDS = "。！？．"
_END = re.compile(
    rf"[.!?]+[\"'”’)\]]*\s+|[!?]+[\"'”’)\]]*(?=[{CJK}])|[{_CJK_ENDS}]+[”’」』）)\]]*\s*"
    r"|\s*\n(?=[ \t]*(?:\d+[.)]|[-*•])[ \t])"
)
_CJK_LINE_BREAK = re.compile(rf"(?<=[{CJK}。，、；：！？．”’」』）])\s*\n\s*(?=[{CJK}“‘「『（])")
_LAST_WORD = re.compile(r"(\S+)$")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_ABBREVIATIONS = (  # words that a period follows without ending the sentence
    "mr mrs ms dr prof sr jr st vs cf fig figs no nos vol eq eqs approx dept est inc ltd co corp "
    "jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e a.m p.m u.s u.k"
)
ABBREVIATIONS = frozenset(_ABBREVIATIONS.split())


def read_chunks(
    paths: Iterable[str | Path],
    chunk: str = "lines",
    *,
    encoding: str = "utf-8",
    field: str = "text",
    column: str = "text",
) -> Iterator[Record]:
    """Stream the chunks of every file behind ``paths`` (read with
    :func:`~rnnembed.corpus.read_corpus`), stripped of surrounding whitespace.

    - ``lines``: each non-blank line of a text file, each record of a .jsonl/.csv/.tsv file;
    - ``paragraphs``: runs of non-blank lines joined with "\\n" (a record of a .jsonl/.csv/.tsv
      file is split at its blank lines), each with the source of its first line;
    - ``sentences``: paragraphs split after . ! ? (not after common abbreviations, initials, a
      list item's number, or before a lowercase word), after 。！？． and before a line that
      opens a list item, line breaks inside a sentence made spaces (between CJK characters,
      removed).
    """
    if chunk not in CHUNKS:
        raise RnnembedError(f"unknown chunk {chunk!r}; choose one of {', '.join(CHUNKS)}")
    records = read_corpus(paths, encoding=encoding, field=field, column=column)
    if chunk == "lines":
        chunks = (Record(r.text.strip(), r.path, r.line) for r in records)
    elif chunk == "paragraphs":
        chunks = _paragraphs(records)
    else:
        chunks = (
            Record(sentence, p.path, p.line)
            for p in _paragraphs(records)
            for sentence in split_sentences(p.text)
        )
    return (c for c in chunks if c.text)


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, with line breaks inside each made single spaces."""
    sentences, start = [], 0
    for match in _END.finditer(text):
        if _ends_sentence(text, start, match):
            sentences.append(text[start : match.end()])
            start = match.end()
    sentences.append(text[start:])
    joined = (_LINE_BREAK.sub(" ", _CJK_LINE_BREAK.sub("", s.strip())) for s in sentences)
    return [s for s in joined if s]  # a line break between CJK characters joins without space


def _ends_sentence(text: str, start: int, match: re.Match) -> bool:
    if match.group() == "．" and text[match.start() - 1 : match.start()].isdigit():
        return not text[match.end() : match.end() + 1].isdigit()  # ３．５ is a number
    if match.group()[0] in _CJK_ENDS or match.end() == len(text):
        return True
    if text[match.end()].islower():
        return False
    if match.group()[0] != ".":
        return True
    found = _LAST_WORD.search(text, start, match.start())
    if found is None:
        return True
    word = found.group().lstrip("\"'“‘([").lower()
    before = text[start : found.start()]
    if word.isdigit() and (not before.strip() or before.rstrip(" \t").endswith("\n")):
        return False  # a number opening its sentence or line: a list item's "1."
    if word in ("no", "nos"):  # "No. 5", but "he said no. She ..."
        return not text[match.end()].isdigit()
    is_initial = len(word) == 1 and word.isalpha()
    return not (is_initial or word in ABBREVIATIONS)


def _paragraphs(records: Iterable[Record]) -> Iterator[Record]:
    lines: list[Record] = []
    for record in records:
        structured, blank = _is_structured(record.path), not record.text.strip()
        if lines and (structured or blank or lines[-1].path != record.path):
            yield _join(lines)
            lines = []
        if structured:
            for part in _BLANK_LINES.split(record.text):
                yield Record(part.strip(), record.path, record.line)
        elif not blank:
            lines.append(record)
    if lines:
        yield _join(lines)


def _join(lines: list[Record]) -> Record:
    return Record("\n".join(r.text.strip() for r in lines), lines[0].path, lines[0].line)


def _is_structured(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in JSONL_SUFFIXES or suffix in TABLE_DELIMITERS
