"""Embeddings from a language model: pooling, batching, streaming and corpus statistics.

A text is read as a line, the way the model was trained: ``<eos>`` (a line start), the text's
tokens, ``<eos>`` (its end). At each position after the opening ``<eos>`` the model has a
hidden state h_t (the last layer's output, everything read so far) and the word vector e_t of
the token it just read (its input embedding). Poolings:

- ``last``: h after the closing ``<eos>``, the state that has read everything;
- ``mean``: the average of the h_t; ``max``: their element-wise maximum; ``mean+max``: both;
- ``sif`` (the default): smooth-inverse-frequency averages (Arora et al. 2017) of the h_t and
  of the e_t, weights a / (a + p(token)) with a = 1e-3 and p the training frequency, each
  whitened over sentences of the training corpus (Su et al. 2021: x -> (x - mean) U
  diag(1/sqrt(var + 1% of the mean var)), U and var the covariance's axes and variances), unit
  length, the state block at a tenth of the weight of the word block.

A bidirectional model (a forward and a backward LM, as ELMo and Flair) reads the text both
ways and concatenates the two vectors. Padding never enters a pool, so a text gets the same
vector alone or in any batch.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from rnnembed.chunking import split_sentences
from rnnembed.config import check_flag, is_whole
from rnnembed.errors import RnnembedError
from rnnembed.model import CorpusStats, RecurrentLM, State, flatten_state, unflatten_state
from rnnembed.tokenizer import check_text, check_texts, check_unicode

if TYPE_CHECKING:
    from rnnembed.language_model import LanguageModel
    from rnnembed.tokenizer import Tokenizer

POOLINGS = ("sif", "mean", "last", "max", "mean+max")
DEFAULT_POOLING = "sif"
WINDOW = 512  # long texts run in windows of this many tokens, carrying the state across
# texts tokenized and sorted by length at a time: memory stays bounded however many there are,
# and batches of 64 drawn from 4,096 sorted texts are padded about as little as from all of them
ENCODE_BLOCK = 4096
SIF_A = 1e-3
# the state block's weight against the word block, measured on train splits after whitening
# (0 / 0.1 / 0.25 / 0.5: STS-B train 59.9 / 59.9 / 59.7 / 59.0, Chinese STS-B train
# 59.1 / 59.1 / 59.0 / 58.4): 0 and 0.1 tie, and 0.1 keeps the hidden states in the vector
SIF_STATE_WEIGHT = 0.1
WHITEN_FLOOR = 0.01  # added to each variance, as a share of the mean variance: no 1/sqrt(0)
FIT_LINES = 8192  # training lines read, and sentences of theirs the sif statistics are fitted on
FIT_TOKENS = range(4, 257)  # the lengths of those sentences
# tokens of training lines read at most: a corpus of long documents stays cheap to fit (WikiText-2,
# SciFact and the Chinese novels read 0.9, 1.6 and 1.6 M)
FIT_READ_TOKENS = FIT_LINES * FIT_TOKENS.stop


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise RnnembedError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def _model_dim(model: RecurrentLM, pooling: str) -> int:
    check_pooling(pooling)
    if pooling == "sif":
        return model.hidden_size + model.config.embedding_dims
    return model.hidden_size * (2 if pooling == "mean+max" else 1)


def directions(lm: LanguageModel) -> list[RecurrentLM]:
    """The model, and for a bidirectional one its backward model too."""
    return [lm.model] if lm.backward is None else [lm.model, lm.backward]


def embedding_dim(lm: LanguageModel, pooling: str) -> int:
    return sum(_model_dim(model, pooling) for model in directions(lm))


class Pool:
    """Running pooled statistics of a batch of sequences, those its pooling reads: the sum and
    count of the states (mean), their maximum (max), the last state (last), or the
    frequency-weighted sums of states and word vectors with their weight (sif). The fields
    another pooling reads keep their starting values, so a stream's saved state has one layout."""

    FIELDS = ("total", "count", "max", "last", "sif_states", "sif_words", "sif_weight")

    def __init__(self, pooling: str, *tensors: torch.Tensor):
        self.pooling = pooling
        for name, tensor in zip(self.FIELDS, tensors, strict=True):
            setattr(self, name, tensor)

    @classmethod
    def empty(cls, pooling: str, batch: int, model: RecurrentLM, device: torch.device) -> Pool:
        def zeros(dims: int) -> torch.Tensor:
            return torch.zeros(batch, dims, device=device)

        states = model.hidden_size
        minus_inf = torch.full((batch, states), float("-inf"), device=device)
        return cls(
            pooling,
            zeros(states),
            zeros(1),
            minus_inf,
            zeros(states),
            zeros(states),
            zeros(model.config.embedding_dims),
            zeros(1),
        )

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.FIELDS]

    def copy(self) -> Pool:
        return Pool(self.pooling, *(t.clone() for t in self.tensors()))

    def add(
        self, model: RecurrentLM, ids: torch.Tensor, states: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """Add the states (batch, time, dims) that ``model`` gave for ``ids`` (batch, time) at
        the positions where mask (batch, time) is true; sif also adds the ids' word vectors."""
        keep = mask.unsqueeze(-1)
        if self.pooling in ("mean", "mean+max"):
            self.total += (states * keep).sum(dim=1)
            self.count += keep.sum(dim=1)
        if self.pooling in ("max", "mean+max"):
            masked = states.masked_fill(~keep, float("-inf"))
            self.max = torch.maximum(self.max, masked.amax(dim=1))
        if self.pooling == "last":
            steps = torch.arange(1, mask.shape[1] + 1, device=mask.device)
            last_index = (mask.long() * steps).argmax(dim=1)
            picked = states[torch.arange(states.shape[0], device=states.device), last_index]
            self.last = torch.where(mask.any(dim=1, keepdim=True), picked, self.last)
        if self.pooling == "sif":
            w = (sif_weights(model, ids) * mask).unsqueeze(-1)
            self.sif_states += (states * w).sum(dim=1)
            self.sif_words += (model.embed(ids).float() * w).sum(dim=1)
            self.sif_weight += w.sum(dim=1)

    def sif_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted averages of states and of word vectors, before any correction."""
        weight = self.sif_weight.clamp_min(1e-12)
        return self.sif_states / weight, self.sif_words / weight

    def vectors(self, normalize: bool, stats: CorpusStats) -> torch.Tensor:
        if self.pooling == "sif":
            states, words = self.sif_blocks()
            states = (states - stats.hidden_mean) @ stats.hidden_whitening
            words = (words - stats.word_mean) @ stats.word_whitening
            out = torch.cat(
                [SIF_STATE_WEIGHT * F.normalize(states, dim=-1), F.normalize(words, dim=-1)], dim=-1
            )
        elif self.pooling == "last":
            out = self.last
        else:
            mean = self.total / self.count.clamp_min(1)
            out = {"mean": mean, "max": self.max, "mean+max": torch.cat([mean, self.max], -1)}[
                self.pooling
            ]
        return F.normalize(out, dim=-1) if normalize else out


def sif_weights(model: RecurrentLM, ids: torch.Tensor) -> torch.Tensor:
    """a / (a + p(id)) for each id: rare tokens count more than frequent ones."""
    return SIF_A / (SIF_A + model.stats.frequencies[ids])


class _IeeeFloat32:
    """``with ieee_float32:`` runs recurrences in true float32 on a GPU (cuDNN's TF32 off), so a
    text's vector is the same alone or in any batch to 1e-5 there too. The setting is one per
    process: it stays off while any thread is inside and the caller's comes back after the last
    one leaves."""

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = True

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._saved = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = False
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                torch.backends.cudnn.allow_tf32 = self._saved


ieee_float32 = _IeeeFloat32()


@torch.no_grad()
def start_state(model: RecurrentLM, eos_id: int, device: torch.device) -> State:
    """The state after reading the opening ``<eos>`` (batch 1): the same for every text, so it
    is computed once (:meth:`LanguageModel.start_state` keeps it) and shared by every row
    (:func:`expand_state`) instead of read again by each text."""
    with ieee_float32:
        return model(torch.tensor([[eos_id]], device=device), logits=False).state


def reading_order(token_ids: list[list[int]], eos_id: int, backward: bool) -> list[list[int]]:
    """Each text's ids as the model reads them (reversed for a backward model), then ``<eos>``."""
    return [[*(ids[::-1] if backward else ids), eos_id] for ids in token_ids]


def expand_state(state: State, batch: int) -> State:
    """A batch-1 state repeated for ``batch`` rows."""
    layers = flatten_state(state)
    return unflatten_state([[t.expand(batch, -1).contiguous() for t in layer] for layer in layers])


def run(
    model: RecurrentLM,
    ids: torch.Tensor,
    mask: torch.Tensor,
    pool: Pool,
    state: State,
) -> State:
    """Feed ids (batch, time) from ``state`` in windows of ``WINDOW``, pooling where mask is
    true; returns the carried state."""
    with ieee_float32:
        for begin in range(0, ids.shape[1], WINDOW):
            window = slice(begin, begin + WINDOW)
            chunk = ids[:, window]
            result = model(chunk, state, logits=False)
            state = result.state
            pool.add(model, chunk, result.hidden.float(), mask[:, window])
    return state


def pooled_batches(
    model: RecurrentLM,
    sequences: list[list[int]],
    start: State,
    pooling: str,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[list[int], Pool]]:
    """(indices, pool of ``pooling``) for batches of sequences taken in order of length, each
    read from ``start``, the batch-1 state after the opening ``<eos>`` (:func:`start_state`)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for first in range(0, len(order), batch_size):
        chosen = order[first : first + batch_size]
        lengths = [len(sequences[i]) for i in chosen]
        # padding id 0 is any valid id: padded positions never enter a pool
        padded = np.zeros((len(chosen), max(lengths)), dtype=np.int64)
        for row, i in enumerate(chosen):
            padded[row, : lengths[row]] = sequences[i]
        ids = torch.from_numpy(padded).to(device)
        mask = torch.from_numpy(np.arange(padded.shape[1]) < np.array(lengths)[:, None]).to(device)
        pool = Pool.empty(pooling, len(chosen), model, device)
        run(model, ids, mask, pool, expand_state(start, len(chosen)))
        yield chosen, pool


def _check_stats(lm: LanguageModel, pooling: str) -> None:
    if pooling == "sif" and not all(model.stats.fitted for model in directions(lm)):
        raise RnnembedError(
            "this model has no corpus statistics for the sif pooling (they are fitted at the "
            "end of `rnnembed train`); pass another --pooling, e.g. mean"
        )


def encode(
    lm: LanguageModel,
    texts: Sequence[str],
    pooling: str = DEFAULT_POOLING,
    normalize: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Embed ``texts``: float32 array (len(texts), dim), L2-normalised unless told otherwise.

    Texts are tokenized and batched in order of length (little padding), ``ENCODE_BLOCK`` of
    them at a time; long ones run in windows carrying the state, so time grows linearly with
    length and memory stays bounded beside the result.
    """
    texts = check_texts(texts)
    blocks = (
        lm.tokenizer.encode_batch(texts[first : first + ENCODE_BLOCK])
        for first in range(0, len(texts), ENCODE_BLOCK)
    )
    return _encode_blocks(lm, blocks, len(texts), pooling, normalize, batch_size)


def encode_ids(
    lm: LanguageModel,
    token_ids: Sequence[Sequence[int]],
    pooling: str = DEFAULT_POOLING,
    normalize: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """:func:`encode` of texts given as the model's token ids, read as given (a text's ids
    are ``lm.tokenizer.encode(text)``; ``<eos>`` ends a line). RnnembedError for an id that
    is not the tokenizer's."""
    if isinstance(token_ids, str | bytes | Set | Mapping) or not isinstance(token_ids, Iterable):
        raise RnnembedError(
            f"token_ids must be a list of id lists, one per text, not {type(token_ids).__name__}"
        )
    token_ids = list(token_ids)

    def checked(i: int) -> list[int]:
        ids = token_ids[i]
        if (
            isinstance(ids, str | bytes | Set | Mapping)
            or not isinstance(ids, Iterable)
            or getattr(ids, "ndim", 1) != 1
        ):
            raise RnnembedError(
                f"token_ids[{i}] is {type(ids).__name__}, not a list of ids: give one list per "
                "text (wrap a single text's ids in a list)"
            )
        try:
            return lm.tokenizer.check_ids(ids)
        except RnnembedError as exc:
            raise RnnembedError(f"token_ids[{i}]: {exc}") from None

    blocks = (  # checked a block at a time, as encode tokenizes: Python ints only for a block
        [checked(i) for i in range(first, min(first + ENCODE_BLOCK, len(token_ids)))]
        for first in range(0, len(token_ids), ENCODE_BLOCK)
    )
    return _encode_blocks(lm, blocks, len(token_ids), pooling, normalize, batch_size)


@torch.no_grad()
def _encode_blocks(
    lm: LanguageModel,
    blocks: Iterator[list[list[int]]],
    count: int,
    pooling: str,
    normalize: bool,
    batch_size: int,
) -> np.ndarray:
    """The vectors of ``count`` texts whose token ids come in ``blocks``, in order."""
    check_pooling(pooling)
    check_flag(normalize, "normalize")
    if not is_whole(batch_size) or batch_size < 1:
        raise RnnembedError(f"batch_size must be a whole number, at least 1, not {batch_size!r}")
    _check_stats(lm, pooling)
    models = directions(lm)
    dims = [_model_dim(model, pooling) for model in models]
    out = np.zeros((count, sum(dims)), dtype=np.float32)
    first = 0
    for token_ids in blocks:
        column = 0
        for model, dim in zip(models, dims, strict=True):
            sequences = reading_order(token_ids, lm.tokenizer.eos_id, model is lm.backward)
            start = lm.start_state(model.eval())
            batches = pooled_batches(model, sequences, start, pooling, batch_size, lm.device)
            for chosen, pool in batches:
                vectors = pool.vectors(normalize, model.stats).cpu().numpy()
                out[[first + i for i in chosen], column : column + dim] = vectors
            column += dim
        first += len(token_ids)
    if normalize and len(models) > 1:
        out /= np.sqrt(len(models))  # unit parts: a unit whole
    return out


def fit_corpus_stats(
    model: RecurrentLM,
    ids: torch.Tensor,
    tokenizer: Tokenizer,
    backward: bool = False,
    batch_size: int = 64,
) -> None:
    """Fit the sif pooling's statistics (:func:`fit_text_stats`) on the sentences of the lines
    of the id stream the model trained on (reversed for a backward model): sentences, the unit
    most often embedded (queries, STS pairs), not whole paragraphs (WikiText-2's lines; fitted on
    them, STS-B dev scores 69.5, on their sentences 70.7). Sentences are stripped: WikiText-2
    starts every line with a space, which byte-level BPE reads into the first token."""
    ids = ids.cpu()
    ends = (ids == tokenizer.eos_id).nonzero().flatten().tolist()
    spans = [(a + 1, b) for a, b in zip([-1, *ends], ends, strict=False)]
    spans = _spread([(a, b) for a, b in spans if b - a >= FIT_TOKENS.start])
    lines, left = [], FIT_READ_TOKENS
    for a, b in spans:
        if left <= 0:
            break
        lines.append(ids[a : min(b, a + left)].tolist())  # the last one read may be cut
        left -= b - a
    texts = [tokenizer.decode(line[::-1] if backward else line) for line in lines]
    sentences = [sentence for text in texts for sentence in split_sentences(text)]
    fit_text_stats(model, sentences, tokenizer, backward, batch_size)


def _spread(lines: list) -> list:
    """Every ⌊N / FIT_LINES⌋-th of the N ``lines``, at most ``FIT_LINES`` (so the first
    ``FIT_LINES`` when N < 2 · FIT_LINES)."""
    return lines[:: max(1, len(lines) // FIT_LINES)][:FIT_LINES]


@torch.no_grad()
def fit_text_stats(
    model: RecurrentLM,
    texts: Sequence[str],
    tokenizer: Tokenizer,
    backward: bool = False,
    batch_size: int = 64,
) -> bool:
    """Fit the sif pooling's means and whitening matrices on ``texts`` (those of ``FIT_TOKENS``
    tokens, :func:`_spread`), each read as :func:`encode` reads a text; whether it did. Fewer
    than two such texts, or no variance among them, leave the statistics as they were."""
    model.eval()
    read = _spread([ids for ids in tokenizer.encode_batch(list(texts)) if len(ids) in FIT_TOKENS])
    if len(read) < 2:
        return False
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_id
    sequences = reading_order(read, eos_id, backward)
    start = start_state(model, eos_id, device)
    batches = pooled_batches(model, sequences, start, "sif", batch_size, device)
    blocks = [pool.sif_blocks() for _, pool in batches]  # (states, words) of each batch
    states, words = (whitening(torch.cat(block)) for block in zip(*blocks, strict=True))
    if states is None or words is None:
        return False
    stats = model.stats
    stats.hidden_mean.copy_(states[0])
    stats.hidden_whitening.copy_(states[1])
    stats.word_mean.copy_(words[0])
    stats.word_whitening.copy_(words[1])
    return True


def whitening(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, W) with W = U diag(1 / sqrt(var + WHITEN_FLOOR · mean var)), U and var the
    axes and variances of the rows' covariance; None for fewer than two rows or rows that do
    not vary."""
    if len(blocks) < 2:
        return None
    blocks = blocks.double()
    mean = blocks.mean(dim=0)
    centred = blocks - mean
    variances, axes = torch.linalg.eigh(centred.T @ centred / (len(blocks) - 1))
    variances = variances.clamp_min(0)
    if variances.sum() <= 0:
        return None
    return mean, axes / torch.sqrt(variances + WHITEN_FLOOR * variances.mean())


class EmbeddingStream:
    """The running embedding of a growing text, at O(1) cost per new token.

    ``feed`` text in any chunks; ``vector()`` equals ``encode([all text so far])``. Text whose
    tokens could still change when more arrives (a word cut in two) waits in ``pending``.
    """

    def __init__(self, lm: LanguageModel, pooling: str = DEFAULT_POOLING, normalize: bool = True):
        check_pooling(pooling)
        check_flag(normalize, "normalize")
        if lm.backward is not None:
            raise RnnembedError(
                "a bidirectional model cannot stream: its backward half reads from the end; "
                "use encode, or a forward-only model"
            )
        _check_stats(lm, pooling)
        self.lm, self.pooling, self.normalize = lm, pooling, normalize
        self.pending = ""
        self.tokens = 0
        self._pool = Pool.empty(pooling, 1, lm.model, lm.device)
        self._state = lm.start_state(lm.model.eval())

    @torch.no_grad()
    def _advance(self, ids: list[int], pool: Pool, state: State) -> State:
        tensor = torch.tensor([ids], device=self.lm.device)
        mask = torch.ones_like(tensor, dtype=torch.bool)
        return run(self.lm.model.eval(), tensor, mask, pool, state)

    def feed(self, text: str) -> None:
        """Read more text."""
        check_text(text, 0, "fed text")
        check_unicode(text)
        final, self.pending = self.lm.tokenizer.split_final(self.pending + text)
        ids = self.lm.tokenizer.encode(final) if final else []
        if ids:
            self._state = self._advance(ids, self._pool, self._state)
            self.tokens += len(ids)

    def vector(self) -> np.ndarray:
        """The embedding of everything fed so far (with the closing ``<eos>``)."""
        tokenizer = self.lm.tokenizer
        tail = (tokenizer.encode(self.pending) if self.pending else []) + [tokenizer.eos_id]
        pool = self._pool.copy()
        self._advance(tail, pool, self._state)
        return pool.vectors(self.normalize, self.lm.model.stats)[0].cpu().numpy()

    def state(self) -> dict:
        """Everything needed to continue this stream later (arrays and plain values)."""
        return {
            "fingerprint": self.lm.fingerprint(self.pooling),
            "pooling": self.pooling,
            "pending": self.pending,
            "tokens": self.tokens,
            "pool": [t.cpu().numpy().copy() for t in self._pool.tensors()],
            "model_state": [
                [t.cpu().numpy().copy() for t in layer] for layer in flatten_state(self._state)
            ],
        }

    def restore(self, saved: dict) -> EmbeddingStream:
        """Continue from :meth:`state` (of a stream of the same model and pooling)."""
        if not isinstance(saved, dict):
            raise _damaged_state(f"it is a {type(saved).__name__}, not the dict state() gives")
        if saved.get("fingerprint") != self.lm.fingerprint(self.pooling):
            raise RnnembedError(
                "this stream state comes from another model or pooling, or from an earlier "
                "rnnembed whose pooling computed other vectors; start a new stream"
            )
        pending, tokens = saved.get("pending"), saved.get("tokens")
        if not isinstance(pending, str) or not is_whole(tokens):
            raise _damaged_state("'pending' must be text and 'tokens' a whole number")
        try:
            check_unicode(pending, "'pending'")
        except RnnembedError as exc:
            raise _damaged_state(str(exc)) from None
        pool = _tensors_like(saved.get("pool"), self._pool.tensors(), "pool")
        layers = flatten_state(self._state)
        state = saved.get("model_state")
        if not isinstance(state, list | tuple) or len(state) != len(layers):
            raise _damaged_state(f"'model_state' must hold {len(layers)} layers")
        restored = [_tensors_like(a, b, "model_state") for a, b in zip(state, layers, strict=True)]
        self.pending, self.tokens = pending, tokens
        self._pool = Pool(self.pooling, *pool)
        self._state = unflatten_state(restored)
        return self


def _tensors_like(arrays: object, like: list[torch.Tensor], key: str) -> list[torch.Tensor]:
    """``arrays`` as tensors of the shapes, dtypes and device of ``like``, or RnnembedError."""
    if not isinstance(arrays, list | tuple) or len(arrays) != len(like):
        raise _damaged_state(f"{key!r} must hold {len(like)} arrays")
    out = []
    for array, ref in zip(arrays, like, strict=True):
        try:
            # a copy: the stream updates its pool in place, and the saved state must not change
            tensor = torch.tensor(np.asarray(array, dtype=np.float32), device=ref.device)
        except (TypeError, ValueError):
            raise _damaged_state(f"{key!r} holds something that is not numbers") from None
        # max pooling starts at -inf; nothing is ever +inf
        if tensor.shape != ref.shape or tensor.isnan().any() or tensor.isposinf().any():
            raise _damaged_state(
                f"{key!r} holds an array of shape {tuple(tensor.shape)} (expected "
                f"{tuple(ref.shape)}) or with values that are not numbers"
            )
        out.append(tensor.to(ref.dtype))
    return out


def _damaged_state(what: str) -> RnnembedError:
    return RnnembedError(
        f"this stream state is damaged: {what}; save it again with stream.state(), or start "
        "a new stream"
    )


def fingerprint(lm: LanguageModel, pooling: str) -> str:
    """sha256 of the weights and corpus statistics (of both directions), the pooling, its
    constants and the dimension: what an index was built with."""
    digest = hashlib.sha256()
    for model in directions(lm):
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"{pooling}:{embedding_dim(lm, pooling)}".encode())
    if pooling == "sif":  # vectors change with these, so an index built before is refused
        digest.update(f"{SIF_A}:{SIF_STATE_WEIGHT}".encode())
    return digest.hexdigest()
