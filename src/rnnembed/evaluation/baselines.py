"""Baseline encoders trained on a corpus within a time budget: averaged word2vec and Doc2Vec.

Both present the LanguageModel's ``encode(texts) -> float32 (n, d)`` with L2-normalised rows
(plus ``dim`` and ``fingerprint``), so every evaluation task runs them unchanged. The
bag-of-words baselines (TF-IDF, BM25) need no training: they are the ``bm25`` mode.

Training goes epoch by epoch until ``seconds`` are spent (at least one epoch, at most
``MAX_EPOCHS``): the first epoch runs at the initial learning rate and times the corpus; the
budget then fixes the number of epochs, over which the rate decays linearly to ``min_alpha``.
Text is split by :func:`rnnembed.evaluation.bow.words` (CJK text into characters). Seeded; one
worker thread per core, as the language model trains on every core (so not bit-for-bit
repeatable).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from rnnembed.corpus import iter_texts
from rnnembed.embedding import whitening
from rnnembed.errors import RnnembedError
from rnnembed.evaluation.bow import words

log = logging.getLogger(__name__)

BASELINES = ("word2vec", "doc2vec")
WORKERS = os.cpu_count() or 1  # every core, as the language model's training uses
MAX_EPOCHS = 40  # more passes stop helping (word2vec converges well before); stop early


def _gensim():
    try:
        import gensim
    except ImportError:
        raise RnnembedError(
            "the word2vec and doc2vec baselines need gensim; pip install 'rnnembed[baselines]'"
        ) from None
    return gensim


def _documents(corpus: Sequence[str | Path], encoding: str) -> list[list[str]]:
    docs = [tokens for tokens in map(words, iter_texts(corpus, encoding=encoding)) if tokens]
    if not docs:
        raise RnnembedError("the baseline corpus has no words; pass text files or folders")
    return docs


def _train_within(model, corpus: list, seconds: float) -> int:
    """Train ``model`` (vocabulary built) epoch by epoch within ``seconds``; returns epochs."""
    alpha, min_alpha = model.alpha, model.min_alpha
    start = time.perf_counter()
    model.train(corpus, total_examples=len(corpus), epochs=1, start_alpha=alpha, end_alpha=alpha)
    done, epoch_seconds = 1, time.perf_counter() - start
    planned = max(1, int(min(MAX_EPOCHS, seconds // epoch_seconds)))  # the quotient may be inf
    rates = np.linspace(alpha, min_alpha, planned)  # epoch d + 1 runs rates[d - 1] to rates[d]
    while done < planned and time.perf_counter() - start + epoch_seconds <= seconds:
        model.train(
            corpus,
            total_examples=len(corpus),
            epochs=1,
            start_alpha=rates[done - 1],
            end_alpha=rates[done],
        )
        done += 1
        epoch_seconds = (time.perf_counter() - start) / done
    log.info("%s: %d epoch(s) in %.1f s", type(model).__name__, done, time.perf_counter() - start)
    return done


def check_baseline_pooling(pooling: str) -> None:
    """RnnembedError unless ``pooling`` is "mean", the only one a baseline has."""
    if pooling != "mean":
        raise RnnembedError(f"a baseline has no {pooling!r} pooling; it only averages (mean)")


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class _Baseline:
    """What the harness and the VectorStore need from an encoder besides ``encode``."""

    name = ""
    default_pooling = "mean"  # the only pooling a baseline has

    def __init__(self, model, epochs: int):
        self.model, self.epochs = model, epochs
        self.whitened: tuple[np.ndarray, np.ndarray] | None = None  # (mean, W) while adapted
        self._trained_digest = None  # sha256 of the kind and vectors, once asked for

    @contextmanager
    def adapted(self, texts: Sequence[str]) -> Iterator[_Baseline]:
        """This encoder with its vectors whitened over ``texts`` until the block ends:
        v -> (v - mean) W (:func:`rnnembed.embedding.whitening`), then L2-normalised, the
        adaptation :meth:`LanguageModel.adapted` gives the sif pooling."""
        previous, self.whitened = self.whitened, None
        try:
            fitted = whitening(torch.from_numpy(self.encode(texts)))
            if fitted is None:
                raise RnnembedError("too few texts to adapt to: give at least two that differ")
            mean, w = fitted
            self.whitened = (mean.numpy(), w.numpy())
            yield self
        finally:
            self.whitened = previous

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        """L2-normalised rows, whitened first while adapted."""
        if self.whitened is not None:
            mean, w = self.whitened
            vectors = (_normalized(vectors) - mean) @ w
        return _normalized(vectors)

    @classmethod
    def train(
        cls,
        corpus: Sequence[str | Path],
        seconds: float,
        *,
        dim: int = 300,
        window: int = 5,
        min_count: int = 2,
        seed: int = 0,
        encoding: str = "utf-8",
    ) -> _Baseline:
        """Train on the files and folders in ``corpus`` (one document per line or record)
        for about ``seconds``."""
        if not 0 < seconds < math.inf:
            raise RnnembedError(
                f"a baseline trains for a finite number of seconds above 0, not {seconds}"
            )
        gensim = _gensim()
        docs = cls._training_documents(gensim, _documents(corpus, encoding))
        model = cls._new_model(
            gensim, vector_size=dim, window=window, min_count=min_count, workers=WORKERS, seed=seed
        )
        model.build_vocab(docs)
        if not len(model.wv):
            raise RnnembedError(
                f"no word of the baseline corpus occurs {min_count} times or more; give more text"
            )
        return cls(model, _train_within(model, docs, seconds))

    @staticmethod
    def _training_documents(gensim, docs: list[list[str]]) -> list:
        return docs

    @staticmethod
    def _new_model(gensim, **options):
        raise NotImplementedError

    def _vectors(self) -> np.ndarray:
        return self.model.wv.vectors

    def dim(self, pooling: str = "mean") -> int:
        """Length of the vectors :meth:`encode` returns."""
        return self._vectors().shape[1]

    def fingerprint(self, pooling: str = "mean") -> str:
        """sha256 of the kind and the trained vectors (hashed once: training is over), and of
        the whitening while adapted."""
        if self._trained_digest is None:
            digest = hashlib.sha256(self.name.encode())
            digest.update(np.ascontiguousarray(self._vectors()).tobytes())
            self._trained_digest = digest
        digest = self._trained_digest.copy()
        for array in self.whitened or ():
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


class Word2VecBaseline(_Baseline):
    """The mean of a text's word2vec (skip-gram, negative sampling) word vectors."""

    name = "word2vec"

    @staticmethod
    def _new_model(gensim, **options):
        return gensim.models.Word2Vec(sg=1, **options)

    def encode(self, texts: Sequence[str], pooling: str = "mean") -> np.ndarray:
        """Mean word vector of each text (zeros when no word is known), L2-normalised."""
        check_baseline_pooling(pooling)
        wv = self.model.wv
        out = np.zeros((len(texts), wv.vector_size), dtype=np.float32)
        for row, text in enumerate(texts):
            known = [wv.key_to_index[w] for w in words(text) if w in wv.key_to_index]
            if known:
                out[row] = wv.vectors[known].mean(axis=0)
        return self._finish(out)


class Doc2VecBaseline(_Baseline):
    """Doc2Vec PV-DBOW with word training (dbow_words=1); a text's vector is inferred."""

    name = "doc2vec"
    infer_epochs = 20  # passes over a text to infer its vector

    @staticmethod
    def _training_documents(gensim, docs: list[list[str]]) -> list:
        tagged = gensim.models.doc2vec.TaggedDocument
        return [tagged(tokens, [i]) for i, tokens in enumerate(docs)]

    @staticmethod
    def _new_model(gensim, **options):
        return gensim.models.Doc2Vec(dm=0, dbow_words=1, **options)

    def encode(self, texts: Sequence[str], pooling: str = "mean") -> np.ndarray:
        """Each text's inferred document vector (``infer_epochs`` passes), L2-normalised;
        the sampling is reseeded per text, so a text's vector does not depend on its batch."""
        check_baseline_pooling(pooling)
        out = np.zeros((len(texts), self.model.vector_size), dtype=np.float32)
        for row, text in enumerate(texts):
            self.model.random = np.random.RandomState(self.model.seed)  # same text, same vector
            out[row] = self.model.infer_vector(words(text), epochs=self.infer_epochs)
        return self._finish(out)


def train_baseline(
    name: str, corpus: Sequence[str | Path], seconds: float, **options
) -> Word2VecBaseline | Doc2VecBaseline:
    """Train the baseline called ``name`` (one of ``BASELINES``)."""
    kinds = {"word2vec": Word2VecBaseline, "doc2vec": Doc2VecBaseline}
    if name not in kinds:
        raise RnnembedError(
            f"unknown baseline {name!r}; choose {' or '.join(BASELINES)} (TF-IDF and BM25 are "
            "--mode bm25, which needs no model)"
        )
    if not corpus:
        raise RnnembedError(f"the {name} baseline trains on a corpus; pass --baseline-corpus FILE")
    return kinds[name].train(corpus, seconds, **options)
