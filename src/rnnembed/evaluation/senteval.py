"""SentEval-style classification: frozen features + logistic regression, accuracy in %.

MR, CR, SUBJ and MPQA are scored by 10-fold stratified cross-validation (seeded); TREC and
SST-2 train on their train split and are scored on test (SST-2: or dev). Files are SentEval's
``label sentence`` lines, read as UTF-8 with a cp1252 fallback.

Features per mode: ``dense`` = the encoder's vectors, standardised on the training part and
divided by sqrt(d), so a row has expected squared norm 1 like an L2-normalised TF-IDF row;
``bm25`` = sublinear uni+bigram TF-IDF fitted on the training part (character uni+bigrams for
CJK text); ``hybrid`` = both, concatenated, the dense block times a weight from
``DENSE_WEIGHTS`` (how far the classifier may lean on it against the words). The inverse
regularisation C, and the hybrid's weight, are chosen from their grids on a stratified
``VALIDATION`` share of the training part, then the model is refitted on the whole training
part: the test part is never used to choose anything.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from rnnembed.errors import RnnembedError
from rnnembed.evaluation import bow
from rnnembed.evaluation.files import choose_split, data_root, read_lines, require

log = logging.getLogger(__name__)

Encode = Callable[[list[str]], np.ndarray]
Matrix = np.ndarray | sp.csr_matrix

CV_FILES = {
    "mr": "rt-polarity.all",
    "cr": "custrev.all",
    "subj": "subj.all",
    "mpqa": "mpqa.all",
}
SPLIT_FILES = {
    "trec": {"train": "TREC.train.all", "test": "TREC.test.all"},
    "sst2": {
        "train": "stsa.binary.train",
        "dev": "stsa.binary.dev",
        "test": "stsa.binary.test",
    },
}
FOLDS = 10
C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
# a hybrid's dense block weight: a factor of 4 either way of equal blocks; ascending, so ties
# go to the smaller weight
DENSE_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
VALIDATION = 0.1
MAX_ITER = 2000


def read_labelled(path: Path, encoding: str | None = None) -> tuple[list[str], np.ndarray]:
    """(sentences, integer labels) of a ``label sentence`` file; blank lines are skipped."""
    texts, labels = [], []
    for number, line in enumerate(read_lines(path, encoding), 1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        try:
            labels.append(int(label))
            if not -(2**63) <= labels[-1] < 2**63:  # numpy's int64, which the classifier needs
                raise ValueError
        except ValueError:
            raise RnnembedError(
                f"{path}:{number}: expected 'label sentence' with an integer label (of at most "
                f"18 digits), got {line[:40]!r}"
            ) from None
        texts.append(text)
    if not texts:
        raise RnnembedError(f"{path}: no labelled sentences; pass a SentEval 'label sentence' file")
    return texts, np.array(labels)


class Features:
    """Per-mode features of a fixed list of texts, fitted on a training subset."""

    def __init__(self, texts: list[str], encode: Encode | None, mode: str):
        self.texts = texts
        self.dense = encode(texts) if mode in ("dense", "hybrid") else None
        self.bow = mode in ("bm25", "hybrid")

    @property
    def hybrid(self) -> bool:
        return self.dense is not None and self.bow

    @property
    def dense_weights(self) -> tuple[float, ...]:
        """The dense block weights :func:`fit` chooses from."""
        return DENSE_WEIGHTS if self.hybrid else (1.0,)

    def split(self, train: np.ndarray, test: np.ndarray) -> tuple:
        """(X_train, X_test), fitted on the ``train`` indices only; a hybrid's dense block
        comes first."""
        parts = []
        if self.dense is not None:
            scaler = StandardScaler().fit(self.dense[train])
            scale = 1.0 / np.sqrt(self.dense.shape[1])
            parts.append([scaler.transform(self.dense[i]) * scale for i in (train, test)])
        if self.bow:
            train_texts = [self.texts[i] for i in train]
            tfidf = bow.vectorizer(train_texts)
            parts.append([tfidf.transform([self.texts[j] for j in i]) for i in (train, test)])
        if len(parts) == 1:
            return tuple(parts[0])
        return tuple(sp.hstack([p[k] for p in parts], format="csr") for k in (0, 1))

    def weighted(self, x: Matrix, weight: float) -> Matrix:
        """``x`` (from :meth:`split`) with a hybrid's dense block times ``weight``."""
        if not self.hybrid:
            return x
        d = self.dense.shape[1]
        return (x @ sp.diags(np.r_[np.full(d, weight), np.ones(x.shape[1] - d)])).tocsr()


def fit(
    features: Features, train: np.ndarray, test: np.ndarray, y: np.ndarray, seed: int
) -> tuple[LogisticRegression, Matrix, dict]:
    """Logistic regression on the ``train`` rows (labels ``y``), with C (and a hybrid's dense
    block weight) chosen on a stratified validation share of them, then refitted on all of
    them; returns (model, the ``test`` rows' features, the choice: ``{"C": c}``, with
    ``"dense_weight"`` for a hybrid). Ties go to the smaller weight, then the smaller C."""
    classes, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise RnnembedError(
            "the training data has a single class; give sentences of at least two classes"
        )
    # a class of one sentence cannot be split: it stays in the part the classifier learns from
    alone = np.isin(y, classes[counts == 1])
    rows = np.flatnonzero(~alone)
    try:
        inner, held = train_test_split(
            rows, test_size=VALIDATION, stratify=y[rows], random_state=seed
        )
    except ValueError:  # fewer held-out rows than classes
        raise RnnembedError(
            f"{len(y)} training sentences in {len(classes)} classes are too few to hold out "
            f"{VALIDATION:.0%} for choosing C; give more sentences per class"
        ) from None
    inner = np.concatenate([inner, np.flatnonzero(alone)])
    x, x_test = features.split(train, test)
    best, chosen = -1.0, None
    for weight in features.dense_weights:
        xw = features.weighted(x, weight)
        model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
        for c in C_GRID:
            accuracy = model.set_params(C=c).fit(xw[inner], y[inner]).score(xw[held], y[held])
            if accuracy > best:
                best, chosen = accuracy, (c, weight, xw)
    c, weight, xw = chosen
    model = LogisticRegression(C=c, max_iter=MAX_ITER).fit(xw, y)
    choice = {"C": c, **({"dense_weight": weight} if features.hybrid else {})}
    return model, features.weighted(x_test, weight), choice


def cross_validate(
    texts: list[str], labels: np.ndarray, encode: Encode | None, mode: str, seed: int = 0
) -> dict:
    """Mean accuracy (%) over ``FOLDS`` stratified folds."""
    classes, counts = np.unique(labels, return_counts=True)
    if counts.max() < FOLDS:
        raise RnnembedError(
            f"{FOLDS}-fold cross-validation needs at least {FOLDS} sentences of some class; "
            "give a larger labelled file"
        )
    if counts.min() < 2:
        raise RnnembedError(
            f"class {classes[counts.argmin()]} has a single sentence: the fold that tests it "
            "cannot learn it; give at least 2 sentences of each class, or drop it"
        )
    if counts.min() < FOLDS:
        log.warning(
            "class %s has %d sentences, fewer than the %d folds: some folds test none of it",
            classes[counts.argmin()],
            counts.min(),
            FOLDS,
        )
    features = Features(texts, encode, mode)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    scores, choices = [], []
    with warnings.catch_warnings():  # sklearn's warning of the same, said above
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(folds.split(np.zeros(len(labels)), labels))
    for train, test in splits:
        model, x_test, choice = fit(features, train, test, labels[train], seed)
        scores.append(100.0 * model.score(x_test, labels[test]))
        choices.append(choice)
    return {
        "score": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "n": len(labels),
        "folds": FOLDS,
        **{key: [choice[key] for choice in choices] for key in choices[0]},
    }


def train_test(
    train: tuple[list[str], np.ndarray],
    test: tuple[list[str], np.ndarray],
    encode: Encode | None,
    mode: str,
    seed: int = 0,
) -> dict:
    """Accuracy (%) on ``test`` of a classifier fitted on ``train``."""
    unseen = sorted(set(test[1].tolist()) - set(train[1].tolist()))
    if unseen:
        log.warning(
            "test labels %s never occur in the training data: those sentences count as wrong",
            ", ".join(map(str, unseen)),
        )
    features = Features(train[0] + test[0], encode, mode)
    n = len(train[0])
    model, x_test, choice = fit(
        features, np.arange(n), np.arange(n, n + len(test[0])), train[1], seed
    )
    return {
        "score": 100.0 * model.score(x_test, test[1]),
        "n": len(test[0]),
        "n_train": n,
        **choice,
    }


def run(
    task: str,
    encode: Encode | None,
    mode: str,
    data_dir: str | Path | None = None,
    split: str | None = None,
    file: str | Path | None = None,
    encoding: str | None = None,
) -> dict:
    """Score a classification task (``CV_FILES`` or ``SPLIT_FILES``) from SentEval's layout
    under ``data_dir/senteval``, or from ``file`` for the cross-validated tasks (``encoding``:
    see :func:`read_lines`)."""
    if task in CV_FILES:
        if split is not None:
            raise RnnembedError(
                f"{task} is scored by {FOLDS}-fold cross-validation and has no splits; "
                "leave out --split"
            )
        hint = f"pass --data-dir DIR holding senteval/{CV_FILES[task]}, or --file FILE"
        if file is not None:
            path = require(Path(file), task, hint)
        else:
            wanted = f"senteval/{CV_FILES[task]}"
            path = require(data_root(data_dir, task, wanted) / wanted, task, hint)
        return {
            "split": None,
            "file": str(path),
            **cross_validate(*read_labelled(path, encoding), encode, mode),
        }
    if file is not None:
        raise RnnembedError(
            f"{task} reads its train and test files from SentEval's layout; pass --data-dir "
            f"DIR holding senteval/{SPLIT_FILES[task]['train']}, not --file"
        )
    names = SPLIT_FILES[task]
    wanted = f"senteval/{names['train']}"
    folder = data_root(data_dir, task, wanted, takes_file=False) / "senteval"
    paths = {name: folder / file_name for name, file_name in names.items()}
    test_splits = {name: path for name, path in paths.items() if name != "train"}
    defaults = tuple(test_splits)[::-1]
    chosen, test_path = choose_split(task, test_splits, split, defaults, takes_file=False)
    train_path = require(
        paths["train"], task, f"pass --data-dir DIR holding senteval/{names['train']}"
    )
    result = train_test(
        read_labelled(train_path, encoding), read_labelled(test_path, encoding), encode, mode
    )
    return {"split": chosen, "file": str(test_path), **result}
