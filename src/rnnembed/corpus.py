"""Read a corpus: text files and folders, JSON Lines and CSV/TSV, streamed record by record.

A plain text file gives one record per line (PTB's convention); a ``.jsonl`` file one per
object (its ``field``); a ``.csv``/``.tsv`` file one per row (its ``column``; a CSV field may be
quoted, a TSV field is taken as it stands, quotes and all, as MS MARCO and BEIR write them).
Nothing is loaded whole, so a corpus larger than memory can be tokenized as it streams by.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnembed.errors import RnnembedError

log = logging.getLogger(__name__)
_noted_models: set[Path] = set()  # model folders a note has already named

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".rst", ".tokens"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
MODEL_FILES = ("config.json", "tokenizer.json")  # what every model folder holds
CORPUS_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | frozenset(TABLE_DELIMITERS)


@dataclass(frozen=True)
class Record:
    """One unit of text and where it came from (``line`` is 1-based)."""

    text: str
    path: Path
    line: int

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}"


def source_file(source: str) -> str:
    """The file of a source: ``path`` of "path:line" (:attr:`Record.source`); a source with no
    line number is a file itself."""
    file, _, line = source.rpartition(":")
    return file if line.isdigit() else source


def check_paths(paths: object) -> list[Path]:
    """``paths`` as a list of Paths, or RnnembedError if it is one path (a string is iterable:
    taken for a list, "/data" would be read as the folders "/", "d", "a", ...) or holds
    anything but paths."""
    if isinstance(paths, str | bytes | os.PathLike) or not isinstance(paths, Iterable):
        raise RnnembedError(
            f"the corpus must be a list of files or folders, not {type(paths).__name__}; wrap "
            "a single path in a list"
        )
    paths = list(paths)
    for i, path in enumerate(paths):
        if not isinstance(path, str | os.PathLike):
            raise RnnembedError(f"path {i} of the corpus is {type(path).__name__}, not a path")
    return [Path(path) for path in paths]


def corpus_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files behind ``paths``: files as given, folders searched recursively for files
    ending in one of ``CORPUS_SUFFIXES``, in sorted order. Hidden files and folders are
    skipped, and so are rnnembed model folders (:func:`is_model_folder`): a model trained into
    its own corpus folder is not read as text, and the corpus stays the one it was."""
    files: list[Path] = []
    for p in check_paths(paths):
        if p.is_dir():
            found = sorted(p.rglob("*"))  # one walk of the tree finds the models and the texts
            models = {
                f.parent for f in found if f.name == MODEL_FILES[0] and is_model_folder(f.parent)
            }
            for model in sorted(models - _noted_models):  # once a process: corpora are reread
                log.info("skipping %s: an rnnembed model folder, not text", model)
                _noted_models.add(model)
            files.extend(
                f
                for f in found
                if f.is_file()
                and f.suffix.lower() in CORPUS_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and not models.intersection(f.parents)
            )
        elif p.is_file():
            files.append(p)
        elif p.exists() or p.is_symlink():  # a FIFO, a device, a link to itself
            raise RnnembedError(f"{p}: not a regular file or folder; give text files or folders")
        else:
            raise RnnembedError(f"{p}: no such file or folder; check the path")
    return files


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an rnnembed model: a ``tokenizer.json`` beside a
    ``config.json`` that names an rnnembed version (as every model's does)."""
    if not all((folder / name).is_file() for name in MODEL_FILES):
        return False
    try:
        config = json.loads((folder / MODEL_FILES[0]).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "rnnembed_version" in config


def read_corpus(
    paths: Iterable[str | Path],
    *,
    encoding: str = "utf-8",
    field: str = "text",
    column: str = "text",
) -> Iterator[Record]:
    """Stream the records of every file behind ``paths``.

    Raises :class:`RnnembedError` (file, byte offset, what to do) for text that is not valid
    in ``encoding``, for binary files, and, once the stream ends, for a corpus with no text.
    """
    paths = check_paths(paths)
    check_encoding(encoding)
    has_text = False
    for path in corpus_files(paths):
        for record in _read_file(path, encoding, field, column):
            has_text = has_text or bool(record.text.strip())
            yield record
    if not has_text:
        raise empty_corpus(paths)


def empty_corpus(paths: Sequence[str | Path], shown: int = 3) -> RnnembedError:
    """The error for ``paths`` that hold no text (the first ``shown`` of them named)."""
    names = ", ".join(str(p) for p in paths[:shown]) or "(no paths given)"
    if len(paths) > shown:
        names += f" and {len(paths) - shown} more"
    return RnnembedError(
        f"no text in {names}; give files or folders that contain text "
        f"(folders are searched for {', '.join(sorted(CORPUS_SUFFIXES))}; hidden and model "
        "folders are skipped)"
    )


def iter_texts(paths: Iterable[str | Path], **options: str) -> Iterator[str]:
    """The texts of :func:`read_corpus`, without their sources."""
    return (record.text for record in read_corpus(paths, **options))


def check_encoding(encoding: str) -> None:
    """RnnembedError unless ``encoding`` is a codec whose line breaks are single bytes."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):  # TypeError: not a string
        raise RnnembedError(
            f"unknown encoding {encoding!r}; try utf-8, cp1252 or latin-1"
        ) from None
    encoder = codecs.getincrementalencoder(encoding)(errors="replace")
    encoder.encode("x")  # a byte-order mark, if the codec writes one, comes before the text
    if encoder.encode("\n") != b"\n":
        raise RnnembedError(
            f"encoding {encoding!r} is not supported (its line breaks are not single bytes); "
            f"convert the file to UTF-8, e.g. iconv -f {encoding} -t utf-8"
        )


def _read_file(path: Path, encoding: str, field: str, column: str) -> Iterator[Record]:
    suffix = path.suffix.lower()
    lines = decoded_lines(path, encoding)
    if suffix in JSONL_SUFFIXES:
        yield from _read_jsonl(path, lines, field)
    elif suffix in TABLE_DELIMITERS:
        yield from _read_table(path, lines, column, TABLE_DELIMITERS[suffix])
    else:
        for number, line in lines:
            yield Record(strip_newline(line), path, number)


def strip_newline(line: str) -> str:
    """``line`` without its line break (a trailing \\n, \\r\\n or \\r)."""
    return line.removesuffix("\n").removesuffix("\r")


def decoded_lines(
    path: Path, encoding: str, option: str = "--encoding"
) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline), checking every byte on the way; an error
    names ``option`` as the way to give the file's encoding."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            nul = raw.find(b"\0")
            if nul >= 0:
                raise RnnembedError(
                    f"{path}: byte {offset + nul} is a NUL byte, so this looks like a binary file "
                    "(or UTF-16 text); pass text files only, or convert it to UTF-8"
                )
            try:
                text = raw.decode("utf-8-sig" if utf8 and number == 1 else encoding)
            except UnicodeDecodeError as exc:
                hint = (
                    f"if it is text, pass {option} cp1252 (or the file's real encoding); if "
                    "not, leave it out"
                    if utf8
                    else f"pass the file's real {option}"
                )
                raise RnnembedError(
                    f"{path}: byte {offset + exc.start} (line {number}) is not valid {encoding} "
                    f"(0x{raw[exc.start]:02X}); {hint}"
                ) from None
            offset += len(raw)
            yield number, text


def _read_jsonl(path: Path, lines: Iterator[tuple[int, str]], field: str) -> Iterator[Record]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RnnembedError(
                f"{path}:{number}: not valid JSON ({exc.msg}); fix the line"
            ) from None
        if isinstance(obj, dict) and field in obj and not isinstance(obj[field], str):
            raise RnnembedError(
                f"{path}:{number}: field {field!r} holds {json.dumps(obj[field])[:40]}, not a "
                "string; fix the record or pass --field NAME"
            )
        if not isinstance(obj, dict) or field not in obj:
            keys = ", ".join(obj) if isinstance(obj, dict) else "none: not an object"
            raise RnnembedError(
                f"{path}:{number}: no text field {field!r} in this record (fields: {keys}); "
                "pass --field NAME"
            )
        yield Record(obj[field], path, number)


def _read_table(
    path: Path, lines: Iterator[tuple[int, str]], column: str, delimiter: str
) -> Iterator[Record]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    raw: list[str] = []  # the lines of the row being read

    def keep(numbered: Iterator[tuple[int, str]]) -> Iterator[str]:
        for _, line in numbered:
            raw.append(line)
            yield line

    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(keep(lines), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader, None)
        if header is None:
            return
        if column not in header:
            raise RnnembedError(
                f"{path}: no column {column!r} (columns: {', '.join(header)}); pass --column NAME"
            )
        index = header.index(column)
        last: Record | None = None  # held back: only the file's last row can be open
        tail, tail_line = raw, 1  # the last row's lines (the header's until a row follows)
        raw = []  # keep() appends to the list bound here now
        row_start = reader.line_num + 1
        for row in reader:
            if last is not None:
                yield last
                last = None
            if len(row) > index:
                last = Record(row[index], path, row_start)
            elif row:  # a blank line is an empty row
                raise RnnembedError(
                    f"{path}:{row_start}: {len(row)} column(s), so no {column!r} (column "
                    f"{index + 1}); fix the row"
                )
            tail, tail_line, raw = raw, row_start, []
            row_start = reader.line_num + 1
    except csv.Error as exc:  # a bare carriage return outside quotes: old Mac line endings
        reason = str(exc).split(" - ")[0]  # not its advice to the programmer about newline mode
        raise RnnembedError(
            f"{path}:{reader.line_num}: not valid CSV ({reason}); fix the row, or save the file "
            "with \\n or \\r\\n line endings"
        ) from None
    if quoting != csv.QUOTE_NONE:
        _check_closed(path, tail_line, tail, delimiter)
    if last is not None:
        yield last


def _check_closed(path: Path, line: int, raw: list[str], delimiter: str) -> None:
    """RnnembedError if ``raw`` (the lines of the file's last row) ends inside a quoted field:
    Python's csv reads an unclosed quote to the end silently, the rest of the file one text. A
    line break after a closed row starts a row of its own; inside a quote it does not."""
    if len(list(csv.reader([*raw, "\n"], delimiter=delimiter))) < 2:
        raise RnnembedError(
            f"{path}:{line}: a quote opened in this row is never closed, so the rest of the "
            'file would be one text; close the quote, or double it ("") to write a quote '
            "character"
        )
