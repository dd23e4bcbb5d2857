"""The ``rnnembed`` command: a thin typer shell over the Python API."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column as TableColumn
from rich.table import Table
from rich.text import Text

from rnnembed.config import DEFAULT_TEMPERATURE
from rnnembed.errors import RnnembedError

app = typer.Typer(
    name="rnnembed",
    help="Train a recurrent language model on your text; embed, search and serve with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)
OUT_OF_MEMORY = ("out of memory", "can't allocate memory")  # PyTorch's words, CUDA's and CPU's

Encoding = Annotated[
    str, typer.Option(help="Text encoding of the input files, e.g. utf-8, cp1252.")
]
Field = Annotated[str, typer.Option(help="The text field of .jsonl records.")]
Column = Annotated[str, typer.Option(help="The text column of .csv/.tsv files.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


def _check_device(name: str) -> str:
    """Refuse a device this machine lacks before any work, on paths that load no model too."""
    if name != "auto":  # auto always works; PyTorch need not be imported for it
        from rnnembed.training import pick_device

        pick_device(name)
    return name


Device = Annotated[
    str,
    typer.Option(
        callback=_check_device, help="cpu, cuda, cuda:N, or auto: a GPU when there is one."
    ),
]


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")]


def _setup_logging(quiet: bool) -> None:
    """rnnembed's own notes (INFO) on stderr unless quiet; other libraries' only if WARNING."""
    from rich.logging import RichHandler

    handler = RichHandler(console=err_console, show_time=False, show_path=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("rnnembed").setLevel(logging.WARNING if quiet else logging.INFO)
    # jieba (Milvus Lite's Chinese analyzer) sets its logger to DEBUG when first imported:
    # imported here first, its notes of loading a dictionary stay off stderr
    import jieba  # noqa: F401

    logging.getLogger("jieba").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a user error prints its message, no traceback, exit 1.
    SIGTERM ends a command as Ctrl-C does, unwinding it (exit 143): files it was writing are
    removed, not left half-written."""
    handles = threading.current_thread() is threading.main_thread()  # Python's rule for signals
    previous = signal.signal(signal.SIGTERM, _terminate) if handles else None
    try:
        app(args=argv, prog_name="rnnembed")
    except RnnembedError as exc:
        _print_error(str(exc))
    except OSError as exc:  # the system refused: permissions, a folder where a file goes, ...
        if exc.errno == errno.ENOSPC:
            _print_error(f"{exc}: free some space, or write the output elsewhere")
        else:
            _print_error(f"{exc}; check the path and its permissions" if exc.filename else str(exc))
    except (MemoryError, RuntimeError) as exc:  # PyTorch's CPU allocator raises RuntimeError
        sentences = str(exc).split(". ")
        found = [i for i, said in enumerate(sentences) if any(w in said for w in OUT_OF_MEMORY)]
        if not isinstance(exc, MemoryError) and not found:
            raise
        detail = ". ".join(sentences[found[0] : found[0] + 2])[:200] if found else "MemoryError"
        _print_error(
            f"out of memory ({detail}); ask for less (when training, a smaller --hidden, "
            "--layers or --batch-size), free memory, or, if a GPU is full, pass --device cpu"
        )
    finally:
        if previous is not None:  # None: a handler not set from Python, or not ours to change
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _print_error(message: str) -> None:
    """``error: message`` on stderr, the message as written (never read as rich markup)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    sys.exit(1)


def _print_json(data: dict) -> None:
    console.out(json.dumps(data, ensure_ascii=False), highlight=False)


def _print_table(data: dict) -> None:
    table = Table(show_header=False)
    for key, value in data.items():
        table.add_row(key, Text(f"{value:.4f}" if isinstance(value, float) else str(value)))
    console.print(table)


def _print_result(data: dict, as_json: bool) -> None:
    """A command's result: one JSON line with ``--json``, else a two-column table."""
    if as_json:
        _print_json(data)
    else:
        _print_table(data)


@app.command()
def tokenize(
    corpus: Annotated[list[Path], typer.Argument(help="Text files or folders to learn from.")],
    out: Annotated[Path, typer.Option(help="Where to write the tokenizer (a .json file).")],
    kind: Annotated[str, typer.Option(help="char, word or bpe.")] = "bpe",
    vocab_size: Annotated[
        int | None, typer.Option(help="Vocabulary cap, special tokens included.")
    ] = None,
    encoding: Encoding = "utf-8",
    field: Field = "text",
    column: Column = "text",
    as_json: AsJson = False,
) -> None:
    """Train a tokenizer (char, word or byte-level BPE) on a corpus and save it."""
    from rnnembed.atomic import check_writable
    from rnnembed.corpus import is_model_folder, iter_texts
    from rnnembed.tokenizer import Tokenizer

    check_writable(out, suffix=".json", inputs=corpus)
    if is_model_folder(out.parent):
        raise RnnembedError(
            f"{out.parent} is a model folder, whose files must stay those it was trained with; "
            "write the tokenizer elsewhere"
        )
    if out.is_file():  # only a tokenizer is replaced, never another JSON file
        try:
            Tokenizer.load(out)
        except RnnembedError:
            raise RnnembedError(
                f"{out} exists and is not an rnnembed tokenizer; pass another --out, or move "
                "the file away"
            ) from None

    def texts():
        return iter_texts(corpus, encoding=encoding, field=field, column=column)

    tokenizer = Tokenizer.train(texts(), kind=kind, vocab_size=vocab_size)
    ids, chars = tokenizer.encode_stream(texts())
    tokens = len(ids)
    tokenizer.save(out)
    summary = {
        "kind": kind,
        "vocab_size": tokenizer.vocab_size,
        "characters": chars,
        "tokens": tokens,
        "chars_per_token": round(chars / max(tokens, 1), 3),
        "path": str(out),
    }
    _print_result(summary, as_json)


@app.command()
def datasets(as_json: AsJson = False) -> None:
    """List the named public datasets and where each file is found locally."""
    from rnnembed.datasets import DATASETS, find_dataset

    def local(name: str, split: str) -> str:
        try:
            return str(find_dataset(name, split) or "")
        except RnnembedError as exc:  # one damaged file: listed as such, the others still shown
            return f"refused: {exc}"

    rows = [
        {
            "dataset": name,
            "split": split,
            "file": spec.name,
            "local": local(name, split),
            "url": spec.url,
        }
        for name, ds in DATASETS.items()
        for split, spec in ds.files.items()
    ]
    if as_json:
        _print_json({"datasets": rows})
        return
    table = Table("dataset", "split", "file", "local path (empty: downloads when needed)")
    for row in rows:
        table.add_row(*(Text(row[key]) for key in ("dataset", "split", "file", "local")))
    console.print(table)


@app.command()
def train(
    ctx: typer.Context,
    corpus: Annotated[list[Path], typer.Argument(help="Text files or folders to train on.")],
    out: Annotated[Path, typer.Option(help="The model folder to write.")],
    valid: Annotated[
        list[Path] | None,
        typer.Option(help="Validation file(s); default: the corpus's last 5% (≤200k tokens)."),
    ] = None,
    tokenizer: Annotated[
        str,
        typer.Option(
            help="bpe, char, word, a tokenizer .json (rnnembed tokenize) or a model folder."
        ),
    ] = "bpe",
    vocab_size: Annotated[int | None, typer.Option(help="Tokenizer vocabulary cap.")] = None,
    cell: Annotated[str, typer.Option(help="lstm, gru or elman.")] = "lstm",
    layers: Annotated[int, typer.Option(help="Recurrent layers (0: pick for the budget).")] = 0,
    hidden: Annotated[int, typer.Option(help="Hidden size (0: pick for the budget).")] = 0,
    minutes: Annotated[
        float | None, typer.Option(help="Wall-clock budget in minutes (10 when no --epochs).")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Budget in passes over the corpus.")] = None,
    optimizer: Annotated[str, typer.Option(help="adamw or sgd.")] = "adamw",
    lr: Annotated[float, typer.Option(help="Peak learning rate (0: pick).")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Parallel streams (0: pick).")] = 0,
    bptt: Annotated[int, typer.Option(help="Steps of backpropagation through time (0: pick).")] = 0,
    seed: Annotated[int, typer.Option(help="One seed for everything.")] = 0,
    device: Device = "auto",
    bidirectional: Annotated[
        bool,
        typer.Option(
            help="Also train a backward LM (each half of --minutes, or all --epochs); embeddings "
            "then read both ways."
        ),
    ] = False,
    encoding: Encoding = "utf-8",
    field: Field = "text",
    column: Column = "text",
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its checkpoint.")
    ] = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Train a recurrent language model on a corpus into a model folder."""
    from rnnembed.corpus import is_model_folder
    from rnnembed.language_model import LanguageModel

    _setup_logging(quiet or as_json)
    options = {
        "cell": cell,
        "layers": layers,
        "hidden": hidden,
        "minutes": minutes,
        "epochs": epochs,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": batch_size,
        "bptt": bptt,
        "seed": seed,
        "device": device,
        "bidirectional": bidirectional,
    }
    if resume:  # the run keeps its settings: pass on only those given, which must match them
        options = {name: value for name, value in options.items() if _given(ctx, name)}
        tokenizer = tokenizer if _given(ctx, "tokenizer") else None
    try:
        lm = LanguageModel.train(
            corpus,
            out,
            valid=valid,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            encoding=encoding,
            field=field,
            column=column,
            resume=resume,
            progress=not (quiet or as_json),
            **options,
        )
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: the run stays resumable
        if is_model_folder(out):  # its settings and tokenizer are there: it can go on
            err_console.print(
                f"stopped: the run in {out} is kept; the same command with --resume goes on",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
        raise
    summary = {**lm.last_result.to_dict(), "out": str(out)}
    if lm.backward is not None:
        backward = lm.results[1]
        summary["backward_valid_loss"] = backward.valid_loss
        summary["backward_valid_ppl"] = backward.valid_ppl
    _print_result(summary, as_json)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave the option ``name`` (on the command line or in the environment)."""
    source = ctx.get_parameter_source(name)  # an enum of the click that typer carries
    return source is not None and source.name != "DEFAULT"


@app.command(name="eval")
def evaluate_lm(
    model: Annotated[
        Path, typer.Argument(help="A model folder (with --ngram: the n-gram's training file).")
    ],
    files: Annotated[list[Path], typer.Argument(help="Text files to score.")],
    ngram: Annotated[
        int | None, typer.Option(help="Score a Kneser-Ney n-gram of this order (1 to 5) instead.")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="With --ngram: word (the default), char, bpe, a tokenizer .json or a model "
            "folder to share its tokenizer."
        ),
    ] = None,
    device: Device = "auto",
    encoding: Encoding = "utf-8",
    field: Field = "text",
    column: Column = "text",
    as_json: AsJson = False,
) -> None:
    """Score text: tokens, loss (nats/token), perplexity and bits per character."""
    from rnnembed.corpus import iter_texts

    read = {"encoding": encoding, "field": field, "column": column}
    if ngram is not None:
        from rnnembed.ngram import ngram_evaluation

        result = ngram_evaluation(
            [model], files, order=ngram, tokenizer=tokenizer or "word", **read
        ).to_dict()
    elif tokenizer is not None:
        raise RnnembedError(
            "--tokenizer applies with --ngram; a model folder is scored with its own tokenizer"
        )
    else:
        from rnnembed.language_model import LanguageModel

        lm = LanguageModel.load(model, device)
        result = lm.evaluate(iter_texts(files, **read)).to_dict()
    _print_result(result, as_json)


@app.command()
def generate(
    model: Annotated[Path, typer.Argument(help="A model folder.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "",
    max_tokens: Annotated[int, typer.Option(help="Tokens to sample.")] = 100,
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature; 0 is greedy.")
    ] = DEFAULT_TEMPERATURE,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus: the smallest set with this mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for a repeatable sample.")] = None,
    device: Device = "auto",
) -> None:
    """Continue a prompt with text sampled from a model."""
    from rnnembed.language_model import LanguageModel

    lm = LanguageModel.load(model, device)
    pieces = lm.generate_stream(prompt, max_tokens, temperature, top_k, top_p, seed)
    for piece in pieces:  # printed as drawn: a long sample shows, and Ctrl-C keeps what it shows
        console.out(piece, highlight=False, end="")
    console.out("")


@app.command(name="evaluate")
def evaluate_embeddings(
    task: Annotated[
        str, typer.Option(help="mr, cr, subj, mpqa, trec, sst2, stsb, sickr, pairs or beir.")
    ],
    model: Annotated[
        Path | None,
        typer.Argument(help="A model folder (not needed with --baseline or --mode bm25)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder in SentEval/STS/BEIR layout; default $RNNEMBED_DATA_DIR."),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to score (default: test, else dev).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="The task's data file (beir: the BEIR folder).")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="dense (embeddings), bm25 (bag of words) or hybrid (both).")
    ] = "dense",
    pooling: Annotated[
        str | None, typer.Option(help="sif, mean, last, max or mean+max (default: the model's).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Score word2vec or doc2vec instead of a model.")
    ] = None,
    baseline_corpus: Annotated[
        list[Path] | None, typer.Option(help="Files or folders the baseline trains on.")
    ] = None,
    baseline_seconds: Annotated[
        float, typer.Option(help="The baseline's training budget in seconds.")
    ] = 60.0,
    adapt: Annotated[
        bool,
        typer.Option(
            help="STS: whiten the vectors over the evaluated sentences (unlabelled) first."
        ),
    ] = False,
    device: Device = "auto",
    data_encoding: Annotated[
        str | None,
        typer.Option(
            help="Encoding of the task's data files (default: UTF-8, with a line that is not "
            "read as cp1252, else latin-1)."
        ),
    ] = None,
    encoding: Annotated[
        str, typer.Option(help="Text encoding of the --baseline-corpus files.")
    ] = "utf-8",
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Score embeddings on a classification, STS or retrieval task (score: accuracy %,
    Spearman ×100 or nDCG@10); bag of words is --mode bm25 and needs no model."""
    from rnnembed.evaluation import evaluate

    _setup_logging(quiet or as_json)
    if model is not None and baseline is not None:
        raise RnnembedError("give a model folder or --baseline, not both")
    encoder, name = None, "bag of words" if mode == "bm25" else None
    encodes = mode != "bm25"  # bag of words alone: a model or baseline is not loaded nor named
    if encodes and baseline is not None:
        from rnnembed.evaluation.baselines import check_baseline_pooling, train_baseline

        if pooling is not None:
            check_baseline_pooling(pooling)  # before training
        encoder = train_baseline(
            baseline, baseline_corpus or [], baseline_seconds, encoding=encoding
        )
        name = baseline
    elif encodes and model is not None:
        from rnnembed.language_model import LanguageModel

        encoder, name = LanguageModel.load(model, device), str(model)
    result = evaluate(
        encoder,
        task,
        data_dir=data_dir,
        split=split,
        file=file,
        mode=mode,
        pooling=pooling,
        adapt=adapt,
        encoding=data_encoding,
    )
    result = {"model": name, **result}
    _print_result(result, as_json)


# -- embed, index, search ------------------------------------------------------------------------

Pooling = Annotated[str, typer.Option(help="sif, mean, last, max or mean+max.")]
IndexPooling = Annotated[
    str | None,
    typer.Option(
        "--pooling",
        help="sif, mean, last, max or mean+max; default: the one the index was built with "
        "(sif for a new index).",
    ),
]
Db = Annotated[
    str,
    typer.Option(
        "--db",
        help="A Milvus Lite database (a path ending in .db) or a server URI, e.g. "
        "http://localhost:19530.",
    ),
]
Collection = Annotated[str, typer.Option(help="The collection in the database.")]
Token = Annotated[
    str, typer.Option(envvar="MILVUS_TOKEN", help="Milvus server token (user:password or key).")
]
INDEX_BATCH = 256  # chunks per VectorStore.add while indexing
HIT_CHARS = 200  # of a hit's text shown in a table


def _chunk_blocks(
    paths: list[Path], chunk: str, read: dict, size: int
) -> tuple[int, Iterator[list]]:
    """How many chunks the files behind ``paths`` hold, counted in a first pass (so unreadable
    input fails before any work), and an iterator over them again, ``size`` at a time, that
    raises RnnembedError if this second pass does not find as many."""
    from itertools import islice

    from rnnembed.chunking import read_chunks

    count = sum(1 for _ in read_chunks(paths, chunk, **read))

    def blocks() -> Iterator[list]:
        stream, done = read_chunks(paths, chunk, **read), 0
        while block := list(islice(stream, size)):
            done += len(block)
            if done > count:
                break
            yield block
        if done != count:
            raise RnnembedError("the inputs changed while they were being read; run again")

    return count, blocks()


@app.command()
def embed(
    model: Annotated[Path, typer.Argument(help="A model folder.")],
    inputs: Annotated[list[Path], typer.Argument(help="Text files or folders to embed.")],
    out: Annotated[Path, typer.Option(help="Where to write the vectors (a .npy file).")],
    pooling: Pooling = "sif",
    device: Device = "auto",
    encoding: Encoding = "utf-8",
    field: Field = "text",
    column: Column = "text",
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Embed each non-blank line (or .jsonl/.csv record) of the inputs, in order, into a .npy
    file of unit vectors, written block by block (memory-mapped)."""
    import numpy as np

    from rnnembed.atomic import atomic_path, check_writable, reserve_space
    from rnnembed.embedding import ENCODE_BLOCK
    from rnnembed.language_model import LanguageModel
    from rnnembed.progress import ChunkProgress

    check_writable(out, suffix=".npy", inputs=inputs)
    lm = LanguageModel.load(model, device)
    read = {"encoding": encoding, "field": field, "column": column}
    count, blocks = _chunk_blocks(inputs, "lines", read, ENCODE_BLOCK)
    shape = (count, lm.dim(pooling))
    with atomic_path(out) as tmp, ChunkProgress("embed", count, quiet or as_json) as progress:
        vectors = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        reserve_space(tmp)  # a mapped page the disk cannot hold would kill us with SIGBUS
        done = 0
        for block in blocks:
            vectors[done : done + len(block)] = lm.encode([c.text for c in block], pooling=pooling)
            done += len(block)
            progress.advance(len(block))
        vectors.flush()
        del vectors  # unmapped before the file is renamed
    summary = {"texts": count, "shape": list(shape), "pooling": pooling}
    if as_json:
        _print_json({**summary, "out": str(out)})
    else:
        _print_table({**summary, "shape": " × ".join(map(str, shape)), "out": str(out)})


@app.command()
def index(
    model: Annotated[Path, typer.Argument(help="A model folder.")],
    inputs: Annotated[list[Path], typer.Argument(help="Text files or folders to index.")],
    db: Db,
    collection: Collection = "default",
    chunk: Annotated[str, typer.Option(help="lines, paragraphs or sentences.")] = "lines",
    pooling: IndexPooling = None,
    analyzer: Annotated[
        str | None,
        typer.Option(
            help="BM25 analyzer of a new collection: standard, or chinese (jieba). "
            "Default: the collection's own (standard for a new one)."
        ),
    ] = None,
    device: Device = "auto",
    token: Token = "",
    encoding: Encoding = "utf-8",
    field: Field = "text",
    column: Column = "text",
    prune: Annotated[
        bool,
        typer.Option(
            help="Also delete the chunks stored earlier from these inputs that they no longer "
            "hold (edited lines, another --chunk, --field or --column, files deleted from an "
            "input folder); sources are matched as written, so give the same paths from the "
            "same folder. One lookup per input."
        ),
    ] = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Embed the inputs' chunks and store them in Milvus for search; chunks already stored are
    skipped, so indexing the same files again adds nothing."""
    from rnnembed.corpus import corpus_files, empty_corpus
    from rnnembed.language_model import LanguageModel
    from rnnembed.progress import ChunkProgress
    from rnnembed.store import VectorStore
    from rnnembed.tokenizer import check_unicode

    _setup_logging(quiet or as_json)
    # listed once (pruning compares with what was read), each file once: a chunk is stored once
    files = list(dict.fromkeys(corpus_files(inputs)))
    if not files:
        raise empty_corpus(inputs)
    for file in files:  # before any database is made: the name is each chunk's source
        try:
            check_unicode(str(file))
        except RnnembedError:
            raise RnnembedError(
                f"{str(file)!r}: the file's name is not UTF-8 text, which a chunk's source must "
                "be; rename the file"
            ) from None
    lm = LanguageModel.load(model, device)
    read = {"encoding": encoding, "field": field, "column": column}
    count, blocks = _chunk_blocks(files, chunk, read, INDEX_BATCH)
    options = {"collection": collection, "pooling": pooling, "analyzer": analyzer, "token": token}
    with VectorStore(db, model=lm, **options) as store:
        before = store.count()
        current: set[str] = set()
        with ChunkProgress("index", count, quiet or as_json) as progress:
            for part in blocks:
                current.update(store.add([c.text for c in part], sources=[c.source for c in part]))
                progress.advance(len(part))
        rows = store.count()
        summary = {"chunks": count, "added": rows - before}
        summary["already_present"] = count - summary["added"]
        if prune:
            summary["removed"] = store.delete(_stale_ids(store, inputs, files, current))
            rows -= summary["removed"]
        summary.update(rows=rows, collection=collection, db=db)
    _print_result(summary, as_json)


def _stale_ids(store, inputs: list[Path], files: list[Path], current: set[str]) -> list[str]:
    """Ids of rows stored from ``inputs`` that are not among the ``current`` chunks' ids: rows
    of a file read now, or of a file under an input folder that no longer exists."""
    from rnnembed.corpus import source_file

    read = {str(f) for f in files}
    stale = []
    for path in inputs:
        for id_, source in store.sources_in(str(path)).items():
            file = source_file(source)
            if id_ not in current and (file in read or not Path(file).exists()):
                stale.append(id_)
    return stale


@app.command()
def search(
    model: Annotated[Path, typer.Argument(help="The model folder the index was built with.")],
    query: Annotated[str, typer.Argument(help="What to search for.")],
    db: Db,
    k: Annotated[int, typer.Option("-k", "--top-k", help="How many hits.")] = 10,
    mode: Annotated[str, typer.Option(help="dense, bm25 or hybrid.")] = "dense",
    collection: Collection = "default",
    filter_: Annotated[
        str | None,
        typer.Option("--filter", help="A Milvus filter expression, e.g. 'source like \"docs/%\"'."),
    ] = None,
    pooling: IndexPooling = None,
    device: Device = "auto",
    token: Token = "",
    as_json: AsJson = False,
) -> None:
    """Search an index: the best-matching chunks with their scores and sources."""
    from rnnembed.language_model import LanguageModel
    from rnnembed.store import VectorStore

    _setup_logging(as_json)
    lm = LanguageModel.load(model, device)
    options = {"collection": collection, "pooling": pooling, "token": token, "create": False}
    with VectorStore(db, model=lm, **options) as store:
        hits = store.search(query, k=k, mode=mode, filter=filter_)
    if as_json:
        _print_json({"query": query, "hits": [hit.to_dict() for hit in hits]})
        return
    if not hits:
        console.print("no hits", highlight=False)
        return
    console.print(_hits_table(hits), highlight=False)


def _hits_table(hits: list, title: Text | None = None) -> Table:
    """Rank, score, source and the start of the text of each hit: the table fills the
    terminal, a source takes up to a third of it (folded beyond), the text the rest, wrapped."""
    table = Table(
        "#",
        "score",
        TableColumn("source", overflow="fold", max_width=console.width // 3),
        TableColumn("text", ratio=1),
        title=title,
        title_justify="left",
        expand=True,
    )
    for rank, hit in enumerate(hits, 1):
        text = " ".join(hit.text.split())
        text = text if len(text) <= HIT_CHARS else text[: HIT_CHARS - 1] + "…"
        table.add_row(str(rank), f"{hit.score:.4f}", Text(hit.source), Text(text))
    return table


@app.command()
def quickstart(
    folder: Annotated[Path, typer.Option(help="Where to build it all.")] = Path(
        "rnnembed-quickstart"
    ),
    minutes: Annotated[float, typer.Option(help="Training budget.")] = 1.5,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train on Python's own documentation, index it in Milvus Lite and search it (offline)."""
    from rnnembed.quickstart import run_quickstart

    _setup_logging(quiet)
    result = run_quickstart(folder, minutes=minutes, progress=not quiet, device=device)
    model, db = result.model, result.index
    console.print(Text.assemble(("model", "bold"), f" {model}  ({result.sections} sections)"))
    console.print(Text.assemble(("held-out perplexity", "bold"), f" {result.perplexity:.1f}"))
    console.print(Text.assemble(("sample", "bold"), f" {result.sample}"))
    for query, mode, hits in result.searches:
        console.print(_hits_table(hits, Text(f"{query!r} ({mode})")), highlight=False)
    console.print(  # soft-wrapped: a command cut at the terminal's width could not be copied
        "\n[bold]Now with your own files:[/]\n"
        "  rnnembed train my_docs/ --out my-model --minutes 10\n"
        "  rnnembed index my-model my_docs/ --db my-index.db --chunk paragraphs\n"
        '  rnnembed search my-model "your question" --db my-index.db --mode hybrid\n'
        + escape(f'or search this one: rnnembed search {model} "open a file" --db {db}'),
        highlight=False,
        soft_wrap=True,
    )


# -- serve ---------------------------------------------------------------------------------------


def _check_can_listen(host: str, port: int) -> None:
    """Bind every address of ``host:port`` as uvicorn's asyncio server will (address reuse on,
    IPv6 sockets IPv6 only), before a store is opened."""
    import socket

    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RnnembedError(
            f"cannot listen on {shown} ({exc.strerror}); pass an address of this machine "
            "with --host"
        ) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise RnnembedError(
                    f"cannot listen on {shown} ({exc.strerror}); pick another --port or --host, "
                    "or stop what holds it"
                ) from None


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="A model folder.")],
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Serve search over this Milvus Lite database (.db) or server URI (created "
            "if missing); without it, only embeddings and generation.",
        ),
    ] = None,
    collection: Collection = "default",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RNNEMBED_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every route but /health and the page.",
        ),
    ] = None,
    pooling: IndexPooling = None,
    max_batch_tokens: Annotated[
        int, typer.Option(help="Token budget of one dynamic batch of embedding requests.")
    ] = 16_384,
    max_batch_requests: Annotated[
        int | None, typer.Option(help="Requests merged into one batch at most (1: no batching).")
    ] = None,
    max_queue: Annotated[
        int, typer.Option(help="Embedding requests that may wait; more are refused with 429.")
    ] = 512,
    device: Device = "auto",
    token: Token = "",
    quiet: Quiet = False,
) -> None:
    """Serve a model over HTTP: OpenAI-compatible /v1/embeddings, /v1/search and /v1/documents
    over an index, /v1/generate, /metrics, and a search page at /."""
    import ipaddress

    import uvicorn

    from rnnembed.language_model import LanguageModel
    from rnnembed.server import ServerConfig, check_api_key, create_app
    from rnnembed.store import VectorStore

    _setup_logging(quiet)
    if api_key is None and os.environ.get("RNNEMBED_API_KEY") == "":
        api_key = ""  # click reads an empty variable as unset: a missing secret, not no key
    check_api_key(api_key)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    _check_can_listen(host, port)
    if not loopback and api_key is None:
        err_console.print(
            f"[bold yellow]warning:[/] listening on {escape(host)} without an API key: anyone "
            "who can reach this address can use the server; pass --api-key (or set "
            "RNNEMBED_API_KEY)",
            highlight=False,
            soft_wrap=True,
        )
    config = ServerConfig(
        model_name=model.resolve().name,
        max_batch_tokens=max_batch_tokens,
        max_batch_requests=max_batch_requests,
        max_queue=max_queue,
    )
    lm = LanguageModel.load(model, device)
    store = None
    if db is not None:
        store = VectorStore(db, model=lm, collection=collection, pooling=pooling, token=token)
    # /v1/embeddings gives the vectors the index holds
    config = replace(config, pooling=store.pooling if store else pooling or lm.default_pooling)
    # uvicorn stops gracefully on SIGTERM, then raises it again: exit cleanly, closing the store.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app = create_app(lm, store, api_key=api_key, config=config)
        uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if store is not None:
            store.close()
