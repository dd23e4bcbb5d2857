"""Evaluation of embeddings on standard tasks, one entry point: :func:`evaluate`.

Tasks (``TASKS``): SentEval classification ``mr cr subj mpqa trec sst2`` (accuracy %), STS
``stsb sickr pairs`` (Spearman ×100) and BEIR retrieval ``beir`` (nDCG@10). Modes: ``dense``
(the encoder's vectors), ``bm25`` (bag of words: TF-IDF for classification and STS, BM25 for
retrieval; needs no encoder) and ``hybrid`` (both). An encoder is anything with
``encode(texts: list[str]) -> np.ndarray`` (L2-normalised float32 rows): a LanguageModel, or a
baseline from :mod:`rnnembed.evaluation.baselines`. Retrieval also needs what a VectorStore
binds to (``dim`` and ``fingerprint``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from rnnembed.errors import RnnembedError
from rnnembed.evaluation import retrieval, senteval, sts


class Encoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


TASKS: dict[str, str] = {
    **{task: "classification" for task in (*senteval.CV_FILES, *senteval.SPLIT_FILES)},
    **{task: "sts" for task in sts.LAYOUTS},
    "beir": "retrieval",
}
MODES = ("dense", "bm25", "hybrid")


def _encoder(model: Encoder | None, mode: str, pooling: str | None) -> Callable | None:
    if mode == "bm25":
        return None
    if model is None:
        raise RnnembedError(
            f"--mode {mode} needs an encoder: pass a model folder or --baseline NAME "
            "(--mode bm25 needs neither)"
        )
    if pooling is None:
        return model.encode
    return lambda texts: model.encode(texts, pooling=pooling)


def evaluate(
    model: Encoder | None,
    task: str,
    data_dir: str | Path | None = None,
    split: str | None = None,
    file: str | Path | None = None,
    mode: str = "dense",
    pooling: str | None = None,
) -> dict:
    """Score ``model`` on ``task``: a dict with ``task``, ``mode``, ``score`` (accuracy %,
    Spearman ×100 or nDCG@10) and the task's details.

    Files come from ``file``, else from the task's standard layout under ``data_dir`` (default
    ``$RNNEMBED_DATA_DIR``); ``split`` picks among a task's splits. ``pooling`` is passed to
    ``model.encode`` (a LanguageModel's) when given.
    """
    if task not in TASKS:
        raise RnnembedError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if mode not in MODES:
        raise RnnembedError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    head = {"task": task, "mode": mode}
    if TASKS[task] == "retrieval":
        _encoder(model, mode, pooling)  # the same check; the store encodes
        result = retrieval.run(task, model, mode, data_dir, split, file, pooling)
    else:
        run = senteval.run if TASKS[task] == "classification" else sts.run
        result = run(task, _encoder(model, mode, pooling), mode, data_dir, split, file)
    return {**head, **result}
