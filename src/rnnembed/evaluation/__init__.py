"""Evaluation of embeddings on standard tasks, one entry point: :func:`evaluate`.

Tasks (``TASKS``): SentEval classification ``mr cr subj mpqa trec sst2`` (accuracy %), STS
``stsb sickr pairs`` (Spearman ×100) and BEIR retrieval ``beir`` (nDCG@10). Modes: ``dense``
(the encoder's vectors), ``bm25`` (bag of words: TF-IDF for classification and STS, BM25 for
retrieval; needs no encoder) and ``hybrid`` (both). An encoder is anything with
``encode(texts: list[str]) -> np.ndarray`` (L2-normalised float32 rows): a LanguageModel, or a
baseline from :mod:`rnnembed.evaluation.baselines`. Retrieval also needs what a VectorStore
binds to (``dim`` and ``fingerprint``); STS with ``adapt`` needs ``adapted(texts)``, a context
manager within which the encoder is fitted on the texts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from rnnembed.atomic import check_path
from rnnembed.config import check_flag, check_model
from rnnembed.corpus import check_encoding
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


def _encoder(model: Encoder | None, mode: str, pooling: str | None, adapt: bool) -> Callable | None:
    if mode == "bm25":
        return None
    if model is None:
        raise RnnembedError(
            f"--mode {mode} needs an encoder: pass a model folder or --baseline NAME "
            "(--mode bm25 needs neither)"
        )
    check_model(model, ("encode", "adapted") if adapt else ("encode",))
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
    adapt: bool = False,
    encoding: str | None = None,
) -> dict:
    """Score ``model`` on ``task``: a dict with ``task``, ``mode``, ``score`` (accuracy %,
    Spearman ×100 or nDCG@10) and the task's details.

    Files come from ``file``, else from the task's standard layout under ``data_dir`` (default
    ``$RNNEMBED_DATA_DIR``); ``split`` picks among a task's splits. ``pooling`` is passed to
    ``model.encode`` (a LanguageModel's) when given. ``adapt`` (STS only) encodes within
    ``model.adapted(sentences)``: the vectors whitened over the evaluated sentences, unlabelled,
    as the bag of words fits its IDF on them. Data files are read as UTF-8, falling back line by
    line to cp1252 (SentEval's MR and TREC) and latin-1, or, given ``encoding``, in it alone.
    """
    check_flag(adapt, "adapt")
    if encoding is not None:
        check_encoding(encoding)
    for name, path in (("data_dir", data_dir), ("file", file)):
        if path is not None:
            check_path(path, name)
    if not isinstance(task, str) or task not in TASKS:
        raise RnnembedError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if mode not in MODES:
        raise RnnembedError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if adapt and TASKS[task] != "sts":
        raise RnnembedError(
            "--adapt whitens the vectors over the sentences an STS task compares; it applies to "
            f"{', '.join(sts.LAYOUTS)}, not {task}"
        )
    if adapt and mode == "bm25":
        raise RnnembedError(
            "--adapt fits an encoder on the evaluated sentences; --mode bm25 has none (its "
            "TF-IDF is fitted on them already)"
        )
    if adapt and pooling not in (None, "sif"):
        raise RnnembedError(f"--adapt refits the sif pooling; it does not change {pooling!r}")
    if mode == "bm25" and pooling is not None:
        raise RnnembedError(
            f"--pooling pools an encoder's vectors; --mode bm25 has none: leave out --pooling "
            f"{pooling}, or use --mode dense or hybrid"
        )
    encode = _encoder(model, mode, pooling, adapt)  # also checks that the mode has its model
    head = {"task": task, "mode": mode}
    if encode is not None:
        head["pooling"] = pooling or getattr(model, "default_pooling", "mean")
    if adapt:
        head["adapted"] = True
    if TASKS[task] == "retrieval":  # the store encodes
        result = retrieval.run(task, model, mode, data_dir, split, file, pooling, encoding)
    elif TASKS[task] == "sts":
        adapted = model.adapted if adapt else None
        result = sts.run(task, encode, mode, data_dir, split, file, adapted, encoding)
    else:
        result = senteval.run(task, encode, mode, data_dir, split, file, encoding)
    return {**head, **result}
