"""The ``rnnembed`` command: a thin typer shell over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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

Encoding = Annotated[
    str, typer.Option(help="Text encoding of the input files, e.g. utf-8, cp1252.")
]
Field = Annotated[str, typer.Option(help="The text field of .jsonl records.")]
Column = Annotated[str, typer.Option(help="The text column of .csv/.tsv files.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a user error prints its message, no traceback, exit 1."""
    try:
        app(args=argv, prog_name="rnnembed")
    except RnnembedError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


def _print_json(data: dict) -> None:
    console.out(json.dumps(data, ensure_ascii=False), highlight=False)


@app.command()
def tokenize(
    corpus: Annotated[list[Path], typer.Argument(help="Text files or folders to learn from.")],
    out: Annotated[Path, typer.Option(help="Where to write the tokenizer JSON.")],
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
    from rnnembed.corpus import iter_texts
    from rnnembed.tokenizer import Tokenizer

    def texts():
        return iter_texts(corpus, encoding=encoding, field=field, column=column)

    tokenizer = Tokenizer.train(texts(), kind=kind, vocab_size=vocab_size)
    chars = 0

    def counted():
        nonlocal chars
        for text in texts():
            chars += len(text) + 1
            yield text

    tokens = sum(len(ids) for ids in tokenizer.encode_lines(counted()))
    tokenizer.save(out)
    summary = {
        "kind": kind,
        "vocab_size": tokenizer.vocab_size,
        "characters": chars,
        "tokens": tokens,
        "chars_per_token": round(chars / max(tokens, 1), 3),
        "path": str(out),
    }
    if as_json:
        _print_json(summary)
        return
    table = Table(show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def datasets(as_json: AsJson = False) -> None:
    """List the named public datasets and where each file is found locally."""
    from rnnembed.datasets import DATASETS, find_dataset

    rows = [
        {
            "dataset": name,
            "split": split,
            "file": spec.name,
            "local": str(find_dataset(name, split) or ""),
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
        table.add_row(row["dataset"], row["split"], row["file"], row["local"])
    console.print(table)
