"""The quickstart: from Python's own documentation to a language model and a semantic search,
offline, in a few minutes on a laptop CPU.

The corpus is what every CPython carries: the ``pydoc_data.topics`` reference text and the
docstrings of the standard library (read with ``ast``, nothing imported or executed).
"""

from __future__ import annotations

import ast
import logging
import shutil
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rnnembed.atomic import SAFETENSORS_TMP, check_writable
from rnnembed.errors import RnnembedError

log = logging.getLogger(__name__)

MARKER = ".rnnembed-quickstart"
CORPUS, MODEL, INDEX = "corpus", "model", "index.db"  # what a run writes in its folder
MADE = frozenset({MARKER, CORPUS, MODEL, INDEX})
SKIPPED_PACKAGES = frozenset(
    {
        "idlelib",
        "tkinter",
        "turtledemo",
        "lib2to3",
        "ensurepip",
        "pydoc_data",
        "venv",
        "site-packages",
        "dist-packages",
        "__pycache__",
    }
)
EXAMPLE_QUERIES = (
    ("how do I read a file line by line", "dense"),
    ("catch an exception and clean up afterwards", "hybrid"),
    ("sort a list in place", "bm25"),
)
HELD_OUT_EVERY = 20  # every 20th section is held out to measure perplexity


@dataclass
class QuickstartResult:
    """What the quickstart built and found."""

    folder: Path
    sections: int
    perplexity: float
    sample: str
    searches: list[tuple[str, str, list]] = field(default_factory=list)  # query, mode, hits

    @property
    def model(self) -> Path:
        return self.folder / MODEL

    @property
    def index(self) -> Path:
        return self.folder / INDEX


def documentation_sections() -> Iterator[tuple[str, str]]:
    """(name, text) for each pydoc topic and each standard-library docstring of some length."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"topic:{name}", topics[name]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in SKIPPED_PACKAGES or p.startswith("test") for p in parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 80:
                    name = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                    yield name, doc


def write_corpus(folder: Path) -> tuple[Path, Path, int]:
    """Write train.txt and valid.txt (every 20th section): each section starts with its name,
    keeps its own paragraphs, and ends with a blank line; returns the paths and the count."""
    folder.mkdir(parents=True, exist_ok=True)
    train, valid = folder / "train.txt", folder / "valid.txt"
    count = 0
    with open(train, "w", encoding="utf-8") as t, open(valid, "w", encoding="utf-8") as v:
        for count, (name, text) in enumerate(documentation_sections(), 1):
            paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]
            body = "\n\n".join(paragraphs)
            (v if count % HELD_OUT_EVERY == 0 else t).write(f"{name}: {body}\n\n")
    return train, valid, count


def _not_made(folder: Path) -> list[str]:
    """What a marked quickstart ``folder`` holds that no run makes: names beside ``MADE``, and
    beside the corpus's and the model's own files (and the temporary files of a write that was
    cut short: ``.NAME.*.tmp``, and safetensors' own ``.tmpXXXXXX``). The Milvus Lite
    database's insides are its own."""
    from rnnembed.language_model import CONFIG, CURVE, TOKENIZER, WEIGHTS
    from rnnembed.training import CHECKPOINT, METRICS

    checkpoint = Path(CHECKPOINT)
    made = {
        folder: MADE,
        folder / CORPUS: {"train.txt", "valid.txt"},
        folder / MODEL: {CONFIG, TOKENIZER, WEIGHTS, METRICS, CURVE, checkpoint.parts[0]},
        folder / MODEL / checkpoint.parent: {checkpoint.name},
    }
    weights = (folder / MODEL, folder / MODEL / checkpoint.parent)
    others = []
    for place, names in made.items():
        if not place.is_dir() or place.is_symlink():
            continue
        for path in place.iterdir():
            cut_short = path.is_file() and (
                (path.suffix == ".tmp" and any(path.name.startswith(f".{n}.") for n in names))
                or (place in weights and SAFETENSORS_TMP.fullmatch(path.name) is not None)
            )
            if path.name not in names and not (place != folder and cut_short):
                others.append(str(path.relative_to(folder)))
    return sorted(others)


def prepare_folder(folder: Path) -> None:
    """Start from an empty folder. Only what an earlier quickstart made there is cleared, and
    only from a folder it made (marked), whose marker goes last: anything else in it is
    refused (:func:`_not_made`), and a clear that fails can be run again."""
    check_writable(folder, folder=True)
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).is_file():
            raise RnnembedError(
                f"{folder} exists and was not made by the quickstart; move it away or pass "
                "another --folder"
            )
        others = _not_made(folder)
        if others:
            raise RnnembedError(
                f"{folder} holds files the quickstart did not make ({', '.join(others)}), and "
                "a new run clears the folder; move them out or pass another --folder"
            )
        for path in sorted(folder.iterdir(), key=lambda p: p.name == MARKER):
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                raise RnnembedError(
                    f"cannot clear {path} for a new run ({exc.strerror}: {exc.filename}); fix "
                    "its permissions, or pass another --folder"
                ) from None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `rnnembed quickstart`; safe to delete\n")


def run_quickstart(
    folder: str | Path = "rnnembed-quickstart",
    minutes: float = 1.5,
    progress: bool = True,
    device: str = "auto",
) -> QuickstartResult:
    """Build the corpus, train for ``minutes`` on ``device``, index it in Milvus Lite, and
    search."""
    from rnnembed.chunking import read_chunks
    from rnnembed.language_model import LanguageModel
    from rnnembed.store import VectorStore
    from rnnembed.training import TrainConfig

    folder = Path(folder)
    TrainConfig(minutes=minutes, device=device).check()  # before an earlier run's folder goes
    prepare_folder(folder)
    train, valid, sections = write_corpus(folder / CORPUS)
    log.info("corpus: %d sections of Python's documentation in %s", sections, train.parent)
    lm = LanguageModel.train(
        [train],
        folder / MODEL,
        valid=[valid],
        tokenizer="bpe",
        vocab_size=4000,
        minutes=minutes,
        device=device,
        progress=progress,
    )
    perplexity = lm.evaluate_files([valid]).perplexity
    sample = lm.generate("The for statement", max_tokens=40, temperature=0.7, top_k=40, seed=0)
    chunks = list(read_chunks([train, valid], chunk="paragraphs"))
    with VectorStore(str(folder / INDEX), model=lm) as store:
        store.add([c.text for c in chunks], sources=[c.source for c in chunks])
        searches = [(q, mode, store.search(q, k=3, mode=mode)) for q, mode in EXAMPLE_QUERIES]
    return QuickstartResult(folder, sections, perplexity, sample, searches)
