"""Interpolated modified Kneser-Ney n-gram language model (Chen & Goodman 1998), orders 1..5.

The count-based baseline for the recurrent LM, as SRILM's ``ngram-count -kndiscount
-interpolate`` with no count cut-offs, over the flat id streams of :class:`rnnembed.Tokenizer`:

- Sentences are independent. ``eos`` is ``</s>`` when predicted and ``<s>`` as context; a
  context never reaches past it, and the first token of a stream is at sentence start.
- For a context ``h`` of order ``k`` and a word ``w``::

      p_k(w | h) = max(c(h w) - D(c(h w)), 0) / c(h .) + gamma(h) p_{k-1}(w | h')
      gamma(h)   = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h .)

  ``h'`` is ``h`` without its first word, ``p_0`` is uniform over the vocabulary, and a
  context never seen in training (``c(h .) = 0``) passes straight to ``p_{k-1}``. ``c`` is
  the raw count at the highest order; below it, the continuation count ``N1+(. h w)``, except
  for n-grams that start with ``<s>``, which keep their raw count (nothing precedes ``<s>``).
- Each order has its discounts from the count-of-counts ``n1..n4`` of its counts ``c``:
  ``Y = n1 / (n1 + 2 n2)``, ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2``,
  ``D3+ = 3 - 4Y n4/n3``; where one is undefined or outside ``(0, i)`` (tiny corpora), the
  order falls back to ``(0.5, 1.0, 1.5)``, as KenLM's ``--discount_fallback``.

N-grams are numbered order by order: the key of a ``k``-gram is ``id(its (k-1)-gram context) *
vocab_size + word``, so every order is one sorted int64 array and counting is ``np.unique``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnembed.config import is_whole
from rnnembed.errors import RnnembedError
from rnnembed.perplexity import Evaluation
from rnnembed.tokenizer import MAX_VOCAB

MAX_ORDER = 5
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class _Level:
    """Order ``k >= 2``: sorted n-gram keys, each n-gram's discounted term
    ``max(c - D, 0) / c(h .)``, and ``gamma`` per context id (1 for contexts with no count)."""

    keys: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray


class KneserNeyLM:
    """An interpolated modified Kneser-Ney LM; build one with :meth:`train`."""

    def __init__(
        self,
        order: int,
        vocab_size: int,
        eos_id: int,
        unigram: np.ndarray,
        levels: list[_Level],
        discounts: list[tuple[float, float, float]],
    ):
        self.order = order
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.discounts = discounts  # (D1, D2, D3+) of orders 1..order
        self._unigram = unigram  # p_1(w), already interpolated with the uniform distribution
        self._levels = levels  # orders 2..order

    @classmethod
    def train(
        cls,
        ids: Sequence[int] | np.ndarray,
        vocab_size: int,
        eos_id: int,
        order: int = 5,
    ) -> KneserNeyLM:
        """Count the n-grams of ``ids`` (a token stream, lines ending in ``eos_id``) up to
        ``order`` and estimate the smoothed model."""
        if not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
            raise RnnembedError(f"n-gram order must be 1 to {MAX_ORDER}, not {order!r}")
        if not (is_whole(vocab_size) and 1 <= vocab_size <= MAX_VOCAB):
            raise RnnembedError(
                f"vocab_size must be a whole number from 1 to {MAX_VOCAB:,}, not {vocab_size!r}"
            )
        if not (is_whole(eos_id) and 0 <= eos_id < vocab_size):
            raise RnnembedError(
                f"eos_id {eos_id!r} must be an id of the vocabulary (size {vocab_size})"
            )
        x = _padded(ids, vocab_size, eos_id)
        if len(x) == 1:
            raise RnnembedError("cannot train an n-gram model on no tokens; give it some text")
        history = _history_lengths(x, eos_id)

        # Per order k >= 2: the distinct k-grams (keys), their raw counts, whether they start
        # with <s>, and the id of their (k-1)-gram suffix. Order-1 ids are the words.
        keys, raw, suffix = [], [], []
        bos = [np.zeros(vocab_size, dtype=bool)]  # per order; <s> alone is never an n-gram
        ids_prev = x  # id of the (k-1)-gram ending at each position
        for k in range(2, order + 1):
            ends = np.flatnonzero(history >= k - 1)
            uniq, first, inverse, n = np.unique(
                ids_prev[ends - 1] * vocab_size + x[ends],
                return_index=True,
                return_inverse=True,
                return_counts=True,
            )
            keys.append(uniq)
            raw.append(n)
            bos.append(history[ends[first]] == k - 1)
            suffix.append(ids_prev[ends[first]])
            ids_prev = np.full(len(x), -1, dtype=np.int64)
            ids_prev[ends] = inverse.reshape(-1)

        # Kneser-Ney counts: raw at the top order, continuation counts below it.
        counts = [np.bincount(x[1:], minlength=vocab_size), *raw]
        for k in range(1, order):
            continuation = np.bincount(suffix[k - 1], minlength=len(counts[k - 1]))
            counts[k - 1] = np.where(bos[k - 1], counts[k - 1], continuation)

        discounts = [_discounts(c) for c in counts]
        unigram_counts = counts[0]
        d = _discount_of(unigram_counts, discounts[0])
        total = unigram_counts.sum()
        unigram = (unigram_counts - d) / total + d.sum() / total / vocab_size

        levels = []
        for k in range(2, order + 1):
            c, key = counts[k - 1], keys[k - 2]
            if not len(key):  # no k-grams (nor longer ones): these orders change nothing
                break
            context = key // vocab_size
            n_contexts = vocab_size if k == 2 else len(keys[k - 3])
            d = _discount_of(c, discounts[k - 1])
            context_total = np.bincount(context, weights=c, minlength=n_contexts)
            seen = context_total > 0
            safe_total = np.where(seen, context_total, 1.0)
            gamma = np.where(seen, np.bincount(context, weights=d, minlength=n_contexts), 1.0)
            levels.append(_Level(key, (c - d) / safe_total[context], gamma / safe_total))
        return cls(order, vocab_size, eos_id, unigram, levels, discounts)

    def log_probs(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Natural log of ``p(ids[t] | ids[<t] since the last eos)`` for every position ``t``."""
        x = _padded(ids, self.vocab_size, self.eos_id)
        history = _history_lengths(x, self.eos_id)[1:]
        words = x[1:]
        p = self._unigram[words]
        ids_prev = x  # id of the (k-1)-gram ending at each position, -1 where unseen
        for k, level in enumerate(self._levels, start=2):
            context = ids_prev[:-1]
            usable = (history >= k - 1) & (context >= 0)
            context = np.where(usable, context, 0)
            key = context * self.vocab_size + words
            at = np.minimum(np.searchsorted(level.keys, key), len(level.keys) - 1)
            found = usable & (level.keys[at] == key)
            gamma = np.where(usable, level.gamma[context], 1.0)
            p = np.where(found, level.alpha[at], 0.0) + gamma * p
            ids_prev = np.concatenate(([-1], np.where(found, at, -1)))
        return np.log(p)

    def evaluate(self, ids: Sequence[int] | np.ndarray) -> tuple[int, float]:
        """(number of predicted tokens, total negative log-likelihood in nats) of ``ids``."""
        logp = self.log_probs(ids)
        return len(logp), float(-logp.sum())

    def __repr__(self) -> str:
        return f"KneserNeyLM(order={self.order}, vocab_size={self.vocab_size})"


def _padded(ids: Sequence[int] | np.ndarray, vocab_size: int, eos_id: int) -> np.ndarray:
    """``[eos_id] + ids`` as int64: the leading eos is the first sentence's ``<s>``."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise RnnembedError(f"token ids must be a flat sequence, not shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise RnnembedError(f"token ids must be integers, not {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise RnnembedError(
            f"token ids must lie in 0..{vocab_size - 1}, found {array.min()}..{array.max()}; "
            "encode with the tokenizer the model was trained with"
        )
    return np.concatenate(([eos_id], array))


def _history_lengths(x: np.ndarray, eos_id: int) -> np.ndarray:
    """For each position ``t >= 1`` of a padded stream, how many tokens back its sentence's
    ``<s>`` is (1 for the first word); position 0 gets 0."""
    positions = np.arange(len(x))
    last_eos = np.maximum.accumulate(np.where(x == eos_id, positions, 0))
    return np.concatenate(([0], positions[1:] - last_eos[:-1]))


def _discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's (D1, D2, D3+) from the count-of-counts of ``counts``."""
    n1, n2, n3, n4 = (float(n) for n in np.bincount(counts, minlength=5)[1:5])
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.float64(n1) / (n1 + 2 * n2)
        estimate = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if all(np.isfinite(d) and 0 < d < i for i, d in enumerate(estimate, start=1)):
        return tuple(float(d) for d in estimate)
    return FALLBACK_DISCOUNTS


def _discount_of(counts: np.ndarray, discounts: tuple[float, float, float]) -> np.ndarray:
    """D(c) for each count: D1, D2 or D3+, and 0 for a zero count."""
    return np.concatenate(([0.0], discounts))[np.minimum(counts, 3)]


def ngram_evaluation(
    train: Sequence[str | Path],
    files: Sequence[str | Path],
    order: int = 5,
    tokenizer: str = "word",
    **read: str,
) -> Evaluation:
    """Train a Kneser-Ney model of ``order`` on the ``train`` files and score ``files``.

    ``tokenizer`` is a kind (word, char, bpe), trained on the same files, a model folder whose
    tokenizer is shared, so the n-gram and the network see the same tokens, or a tokenizer
    file (:func:`rnnembed.tokenizer.tokenizer_for`).
    """
    from rnnembed.corpus import iter_texts
    from rnnembed.tokenizer import tokenizer_for

    tok = tokenizer_for(tokenizer, lambda: iter_texts(train, **read))
    train_ids, _ = tok.encode_stream(iter_texts(train, **read))
    ids, chars = tok.encode_stream(iter_texts(files, **read))
    model = KneserNeyLM.train(train_ids, tok.vocab_size, tok.eos_id, order=order)
    tokens, nll = model.evaluate(ids)
    return Evaluation.from_nll(tokens, chars, nll)
