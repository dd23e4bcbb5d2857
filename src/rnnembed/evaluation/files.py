"""Finding and reading evaluation files: the data folder, split choice, lenient decoding."""

from __future__ import annotations

import os
from pathlib import Path

from rnnembed.errors import RnnembedError


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


def decode(raw: bytes) -> str:
    """A line of bytes as text: UTF-8, else cp1252 (SentEval's MR and TREC), else latin-1."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


def read_lines(path: Path) -> list[str]:
    """The lines of ``path`` without their line breaks (nor a leading byte-order mark), each
    decoded by :func:`decode`."""
    with open(path, "rb") as f:
        lines = [decode(raw).removesuffix("\n").removesuffix("\r") for raw in f]
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines
