"""Finding and reading evaluation files: the data folder, split choice, lenient decoding."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rnnembed.corpus import decoded_lines, strip_newline
from rnnembed.errors import RnnembedError

log = logging.getLogger(__name__)


def data_root(data_dir: str | Path | None, task: str, wanted: str, takes_file: bool = True) -> Path:
    """``data_dir``, else ``$RNNEMBED_DATA_DIR``; ``wanted`` names the files the task reads
    (``takes_file``: the task also reads a ``--file`` instead)."""
    root = data_dir or os.environ.get("RNNEMBED_DATA_DIR")
    if not root:
        raise RnnembedError(
            f"{task}: no data folder; pass --data-dir DIR (holding {wanted})"
            f"{' or --file FILE' if takes_file else ''}, or set RNNEMBED_DATA_DIR"
        )
    root = Path(root)
    if not root.is_dir():
        raise RnnembedError(f"{task}: {root} is not a folder; pass --data-dir DIR holding {wanted}")
    return root


def require(path: Path, task: str, hint: str) -> Path:
    """``path`` if it is a file, else an error that says what to pass."""
    if path.is_dir():
        raise RnnembedError(f"{task}: {path} is a folder, not a file; {hint}")
    if not path.is_file():
        raise RnnembedError(f"{task}: {path} is absent; {hint}")
    return path


def choose_split(
    task: str,
    files: dict[str, Path],
    split: str | None,
    defaults: tuple[str, ...],
    takes_file: bool = True,
) -> tuple[str, Path]:
    """(split, file): the split asked for, else the first of ``defaults`` whose file exists
    (``takes_file``: the task also reads a ``--file`` instead)."""
    if split is not None:
        if split not in files:
            raise RnnembedError(
                f"{task}: unknown split {split!r}; choose one of {', '.join(files)}"
            )
        return split, require(files[split], task, f"pass --split with one of {', '.join(files)}")
    for name in defaults:
        if files[name].is_file():
            return name, files[name]
    wanted = " or ".join(str(files[name]) for name in defaults)
    raise RnnembedError(
        f"{task}: found none of {wanted}; pass --data-dir DIR"
        f"{' or --file FILE' if takes_file else ''}"
    )


FALLBACK_ENCODINGS = ("utf-8", "cp1252", "latin-1")  # cp1252: SentEval's MR and TREC


def read_lines(path: Path, encoding: str | None = None) -> list[str]:
    """The lines of ``path`` without their line breaks (nor a leading byte-order mark), each
    decoded in the first of ``FALLBACK_ENCODINGS`` that can (noted once if not UTF-8), or,
    given ``encoding``, in that encoding (a byte it cannot decode is an RnnembedError naming
    its offset)."""
    if encoding is not None:
        return [strip_newline(line) for _, line in decoded_lines(path, encoding, "--data-encoding")]
    lines, first_fallback = [], 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            for fallback in FALLBACK_ENCODINGS:
                try:
                    text = raw.decode(fallback)
                    break
                except UnicodeDecodeError:
                    continue
            if fallback != "utf-8" and not first_fallback:
                first_fallback = number
            lines.append(strip_newline(text))
    if first_fallback:
        log.info(
            "%s: line %d is not UTF-8; such lines are read as cp1252, else latin-1; pass "
            "--data-encoding if the file is in another encoding",
            path,
            first_fallback,
        )
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines
