"""Kneser-Ney n-gram baseline on PTB: train on ptb.train, print one JSON object with valid ppl.

python benchmarks/ngram_ptb.py --order 5
Published interpolated KN5 (Mikolov 2012): valid 148.0, test 141.2.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from common import emit, run

from rnnembed import Tokenizer
from rnnembed.datasets import dataset_path
from rnnembed.ngram import KneserNeyLM


def _lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", type=int, default=5, help="n-gram order, 1 to 5")
    args = parser.parse_args()

    train_lines = _lines(dataset_path("ptb", "train"))
    valid_lines = _lines(dataset_path("ptb", "valid"))
    tok = Tokenizer.train(train_lines, kind="word")
    train = [i for line in tok.encode_lines(train_lines) for i in line]
    valid = [i for line in tok.encode_lines(valid_lines) for i in line]

    start = time.perf_counter()
    model = KneserNeyLM.train(train, tok.vocab_size, tok.eos_id, order=args.order)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    n, nll = model.evaluate(valid)
    eval_seconds = time.perf_counter() - start

    emit(
        {
            "benchmark": "ngram_ptb",
            "order": args.order,
            "valid_ppl": round(math.exp(nll / n), 3),
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "train_tokens": len(train),
            "valid_tokens": n,
        }
    )


if __name__ == "__main__":
    run(main)
