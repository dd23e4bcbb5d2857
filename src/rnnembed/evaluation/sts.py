"""Semantic textual similarity: Spearman ×100 of a similarity score against gold.

Scores per mode: ``dense`` = cosine of the encoder's vectors; ``bm25`` = cosine of sublinear
TF-IDF fitted on the evaluated sentences (word unigrams; character uni+bigrams for CJK text);
``hybrid`` = the mean of the two cosines after z-scoring each over the evaluated pairs
((s - mean) / std), so neither dominates by scale. Spearman only sees ranks, and no gold score
is used to fuse. Adapted (``evaluate(adapt=True)``), the encoder's vectors are whitened over
the evaluated sentences, unlabelled, as the TF-IDF is fitted on them.

Layouts: STS-B ``stsb/sts-{train,dev,test}.csv`` (tab-separated, score in column 4, sentences
in 5 and 6; extra columns ignored), SICK-R ``sick/SICK_{train,trial,test_annotated}.txt``
(tab-separated with a header: sentence_A, sentence_B, relatedness_score), and pair files
``s1<TAB>s2<TAB>score`` (task ``pairs``; by default Chinese STS-B ``zh/sts/STS-B.{split}.data``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from rnnembed.errors import RnnembedError
from rnnembed.evaluation import bow
from rnnembed.evaluation.files import choose_split, data_root, read_lines, require

Encode = Callable[[list[str]], np.ndarray]
Adapted = Callable[[Sequence[str]], AbstractContextManager]
Pairs = tuple[list[str], list[str], np.ndarray]

LAYOUTS = {
    "stsb": ("stsb/sts-{}.csv", {"train": "train", "dev": "dev", "test": "test"}),
    "sickr": (
        "sick/SICK_{}.txt",
        {"train": "train", "dev": "trial", "test": "test_annotated"},
    ),
    "pairs": ("zh/sts/STS-B.{}.data", {"train": "train", "valid": "valid", "test": "test"}),
}
DEFAULT_SPLITS = {"stsb": ("test", "dev"), "sickr": ("test", "dev"), "pairs": ("test", "valid")}


def _score(value: str, path: Path, number: int) -> float:
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise RnnembedError(f"{path}:{number}: gold score {value!r} is not a finite number")
    return score


def read_stsb(path: Path, encoding: str | None = None) -> Pairs:
    """STS-B: columns genre, file, year, id, score, sentence1, sentence2 (tabs, no quoting)."""
    a, b, gold = [], [], []
    rows = csv.reader(read_lines(path, encoding), delimiter="\t", quoting=csv.QUOTE_NONE)
    for number, row in enumerate(rows, 1):
        if not row:
            continue
        if len(row) < 7:
            raise RnnembedError(
                f"{path}:{number}: expected 7 tab-separated columns (genre, file, year, id, "
                f"score, sentence1, sentence2), found {len(row)}"
            )
        gold.append(_score(row[4], path, number))
        a.append(row[5])
        b.append(row[6])
    return _checked(path, a, b, gold)


def read_sick(path: Path, encoding: str | None = None) -> Pairs:
    """SICK: a tab-separated header with sentence_A, sentence_B and relatedness_score."""
    rows = csv.reader(read_lines(path, encoding), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, [])
    columns = ("sentence_A", "sentence_B", "relatedness_score")
    if not set(columns) <= set(header):
        raise RnnembedError(
            f"{path}: expected a SICK header with {', '.join(columns)}; found {', '.join(header)}"
        )
    ia, ib, ig = (header.index(c) for c in columns)
    a, b, gold = [], [], []
    for number, row in enumerate(rows, 2):
        if not row:  # a blank line
            continue
        if len(row) <= max(ia, ib, ig):
            raise RnnembedError(
                f"{path}:{number}: expected {len(header)} tab-separated columns as the header "
                f"has, found {len(row)}"
            )
        a.append(row[ia])
        b.append(row[ib])
        gold.append(_score(row[ig], path, number))
    return _checked(path, a, b, gold)


def read_pairs(path: Path, encoding: str | None = None) -> Pairs:
    """``s1<TAB>s2<TAB>score`` lines, no header."""
    a, b, gold = [], [], []
    for number, line in enumerate(read_lines(path, encoding), 1):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) < 3:
            raise RnnembedError(
                f"{path}:{number}: expected 's1<TAB>s2<TAB>score', found {len(row)} column(s)"
            )
        a.append(row[0])
        b.append(row[1])
        gold.append(_score(row[2], path, number))
    return _checked(path, a, b, gold)


def _checked(path: Path, a: list[str], b: list[str], gold: list[float]) -> Pairs:
    if len(gold) < 2:
        raise RnnembedError(f"{path}: fewer than 2 scored pairs; pass a sentence-pair file")
    if len(set(gold)) < 2:
        raise RnnembedError(
            f"{path}: all {len(gold)} pairs have the same gold score, so no correlation can be "
            "measured; pass pairs with different scores"
        )
    return a, b, np.array(gold, dtype=np.float64)


READERS = {"stsb": read_stsb, "sickr": read_sick, "pairs": read_pairs}


def cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise cos(x_i, y_i) = x_i·y_i / (|x_i| |y_i|), 0 where a row is zero."""
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    return np.einsum("ij,ij->i", x, y) / np.where(norms > 0, norms, 1.0)


def zscore(s: np.ndarray) -> np.ndarray:
    """(s - mean) / std over the pairs; all zeros for a constant score."""
    std = s.std()
    return (s - s.mean()) / std if std > 0 else np.zeros_like(s)


def similarities(
    a: list[str], b: list[str], encode: Encode | None, mode: str, adapted: Adapted | None = None
) -> np.ndarray:
    """The similarity of each pair (a_i, b_i) in ``mode``; the texts are encoded within
    ``adapted(a + b)`` when given (the encoder fitted on the evaluated sentences)."""
    scores = []
    if mode in ("dense", "hybrid"):
        with adapted(a + b) if adapted else nullcontext():
            vectors = encode(a + b).astype(np.float64)
        scores.append(cosine(vectors[: len(a)], vectors[len(a) :]))
    if mode in ("bm25", "hybrid"):
        tfidf = bow.vectorizer(a + b, word_ngrams=(1, 1))
        x, y = tfidf.transform(a), tfidf.transform(b)
        scores.append(np.asarray(x.multiply(y).sum(axis=1)).ravel())  # rows are L2-normalised
    if len(scores) == 1:
        return scores[0]
    return (zscore(scores[0]) + zscore(scores[1])) / 2


def correlate(
    pairs: Pairs, encode: Encode | None, mode: str, adapted: Adapted | None = None
) -> dict:
    """Spearman and Pearson ×100 of the similarities against gold."""
    a, b, gold = pairs
    predicted = similarities(a, b, encode, mode, adapted)
    constant = predicted.std() == 0
    spearman = 0.0 if constant else float(spearmanr(predicted, gold).statistic)
    pearson = 0.0 if constant else float(pearsonr(predicted, gold).statistic)
    return {"score": 100 * spearman, "pearson": 100 * pearson, "n": len(gold)}


def run(
    task: str,
    encode: Encode | None,
    mode: str,
    data_dir: str | Path | None = None,
    split: str | None = None,
    file: str | Path | None = None,
    adapted: Adapted | None = None,
    encoding: str | None = None,
) -> dict:
    """Score ``stsb``, ``sickr`` or ``pairs`` from ``file`` or the layout under ``data_dir``
    (``encoding``: see :func:`read_lines`); ``adapted``: see :func:`similarities`."""
    pattern, splits = LAYOUTS[task]
    if file is not None:
        if split not in (None, *splits):
            raise RnnembedError(
                f"{task}: unknown split {split!r}; choose one of {', '.join(splits)} (with --file "
                "it only names the file's split in the result), or leave it out"
            )
        path = require(Path(file), task, "pass --file with an existing file")
    else:
        root = data_root(data_dir, task, pattern.format("{split}"))
        files = {name: root / pattern.format(stem) for name, stem in splits.items()}
        split, path = choose_split(task, files, split, DEFAULT_SPLITS[task])
    pairs = READERS[task](path, encoding)
    return {"split": split, "file": str(path), **correlate(pairs, encode, mode, adapted)}
