"""Write files so that a reader sees the old content or the new, never half of one."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rnnembed.errors import RnnembedError

# the file safetensors writes weights into before renaming it (left behind if killed meanwhile)
SAFETENSORS_TMP = re.compile(r"\.tmp[0-9A-Za-z]{6}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a place that takes no new files (/proc, a full disk, ...)
        raise RnnembedError(f"cannot write {path} ({exc.strerror}); choose another path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str]) -> None:
    """safetensors' ``save_file`` of ``tensors`` (from any device; copied to the CPU as
    contiguous arrays) to ``path``, atomically. Its write errors (a full disk) come as
    OSError, as every other write's do, not as safetensors' own error."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as exc:
            full = "os error 28" in str(exc)  # the Rust writer's text is all it gives
            error = errno.ENOSPC if full else errno.EIO
            raise OSError(error, f"cannot write {path}: {exc}") from None


def reserve_space(path: Path) -> None:
    """Allocate the disk blocks of the file ``path`` (sparse, as a fresh memory map is) now,
    so that a full disk is an OSError (ENOSPC) here rather than a SIGBUS at a later write
    into the map. Where the system or the file system cannot reserve space, nothing is done."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def check_path(path: object, what: str) -> None:
    """RnnembedError unless ``path`` (``what`` it names) is a str or path-like."""
    if not isinstance(path, str | os.PathLike):
        raise RnnembedError(f"{what} is a path (str or Path), not {type(path).__name__}")


def check_writable(
    path: str | Path,
    folder: bool = False,
    *,
    suffix: str | None = None,
    inputs: Sequence[str | Path] = (),
) -> None:
    """Refuse, before any work, an output ``path`` (a file, or a ``folder``) that cannot be
    written: a folder where a file goes or the reverse, a parent that is a file, or a place
    without write permission; and a file that is one of the ``inputs`` or does not end in
    ``suffix`` (so that a slip cannot write over a text or a model's weights)."""
    check_path(path, "an output")
    path = Path(path)
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if path.exists() and path.is_dir() != folder:
        raise RnnembedError(f"{path} is a {other}; give the path of a {kind} to write")
    if path.is_file() and any(Path(p).is_file() and path.samefile(p) for p in inputs):
        raise RnnembedError(f"{path} is one of the inputs; write the output elsewhere")
    if suffix is not None and path.suffix.lower() != suffix:
        raise RnnembedError(
            f"{path} does not end in {suffix}; give the path of a {suffix} file to write (a "
            "file already there is replaced)"
        )
    place = path if folder and path.is_dir() else path.parent  # where the new files will go
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise RnnembedError(f"cannot write {path}: {place} is a file; choose another path")
    if not os.access(place, os.W_OK | os.X_OK):
        raise RnnembedError(f"cannot write {path}: {place} is not writable; choose another path")
