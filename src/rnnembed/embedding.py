"""Embeddings from a language model's hidden states: pooling, batching and streaming.

A text is read as a line, the way the model was trained: ``<eos>`` (a line start), the text's
tokens, ``<eos>`` (its end). The hidden states after each of the text's tokens and after the
closing ``<eos>`` are pooled:

- ``last``: h after the closing ``<eos>``, the state that has read everything;
- ``mean``: the average of those states; ``max``: their element-wise maximum;
- ``mean+max``: the two concatenated.

Padding never enters a pool, so a text gets the same vector alone or in any batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from rnnembed.errors import RnnembedError
from rnnembed.model import RecurrentLM, State, flatten_state, unflatten_state

if TYPE_CHECKING:
    from rnnembed.language_model import LanguageModel

POOLINGS = ("mean", "last", "max", "mean+max")
WINDOW = 512  # long texts run in windows of this many tokens, carrying the state across


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise RnnembedError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def embedding_dim(model: RecurrentLM, pooling: str) -> int:
    check_pooling(pooling)
    return model.hidden_size * (2 if pooling == "mean+max" else 1)


class Pool:
    """Running pooled statistics of a batch of sequences: sum, count, max and last state."""

    def __init__(
        self, total: torch.Tensor, count: torch.Tensor, maximum: torch.Tensor, last: torch.Tensor
    ):
        self.total, self.count, self.max, self.last = total, count, maximum, last

    @classmethod
    def empty(cls, batch: int, dims: int, device: torch.device | None = None) -> Pool:
        zeros = torch.zeros(batch, dims, device=device)
        return cls(
            zeros,
            torch.zeros(batch, 1, device=device),
            torch.full_like(zeros, float("-inf")),
            zeros.clone(),
        )

    def copy(self) -> Pool:
        return Pool(self.total.clone(), self.count.clone(), self.max.clone(), self.last.clone())

    def add(self, hidden: torch.Tensor, mask: torch.Tensor) -> None:
        """Add hidden (batch, time, dims) at the positions where mask (batch, time) is true."""
        keep = mask.unsqueeze(-1)
        self.total += (hidden * keep).sum(dim=1)
        self.count += keep.sum(dim=1)
        self.max = torch.maximum(self.max, hidden.masked_fill(~keep, float("-inf")).amax(dim=1))
        last_index = (mask.long() * torch.arange(1, mask.shape[1] + 1, device=mask.device)).argmax(
            1
        )
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_index]
        self.last = torch.where(mask.any(dim=1, keepdim=True), picked, self.last)

    def vectors(self, pooling: str, normalize: bool) -> torch.Tensor:
        if pooling == "last":
            out = self.last
        else:
            mean = self.total / self.count.clamp_min(1)
            out = {"mean": mean, "max": self.max, "mean+max": torch.cat([mean, self.max], -1)}[
                pooling
            ]
        return F.normalize(out, dim=-1) if normalize else out


def run(
    model: RecurrentLM,
    ids: torch.Tensor,
    mask: torch.Tensor,
    pool: Pool,
    state: State | None = None,
) -> State:
    """Feed ids (batch, time) in windows of ``WINDOW``, pooling the hidden states where mask
    is true; returns the carried state."""
    for begin in range(0, ids.shape[1], WINDOW):
        window = slice(begin, begin + WINDOW)
        result = model(ids[:, window], state, logits=False)
        state = result.state
        pool.add(result.hidden.float(), mask[:, window])
    return state


@torch.no_grad()
def encode(
    lm: LanguageModel,
    texts: Sequence[str],
    pooling: str = "mean",
    normalize: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Embed ``texts``: float32 array (len(texts), dim), L2-normalised unless told otherwise.

    Texts are batched in order of length (little padding); long ones run in windows carrying
    the state, so time grows linearly with length and memory stays bounded.
    """
    check_pooling(pooling)
    if isinstance(texts, str):
        raise RnnembedError("encode takes a list of texts; wrap a single text in a list")
    model, eos, device = lm.model.eval(), lm.tokenizer.eos_id, lm.device
    out = np.zeros((len(texts), embedding_dim(model, pooling)), dtype=np.float32)
    sequences = [[eos, *ids, eos] for ids in lm.tokenizer.encode_batch(list(texts))]
    order = sorted(range(len(texts)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        lengths = torch.tensor([len(sequences[i]) for i in chosen], device=device)
        ids = torch.full((len(chosen), int(lengths.max())), eos, dtype=torch.long, device=device)
        for row, i in enumerate(chosen):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i], device=device)
        positions = torch.arange(ids.shape[1], device=device)
        mask = (positions > 0) & (positions < lengths.unsqueeze(1))  # not the opening <eos>
        pool = Pool.empty(len(chosen), model.hidden_size, device)
        run(model, ids, mask, pool)
        out[chosen] = pool.vectors(pooling, normalize).cpu().numpy()
    return out


class EmbeddingStream:
    """The running embedding of a growing text, at O(1) cost per new token.

    ``feed`` text in any chunks; ``vector()`` equals ``encode([all text so far])``. Text whose
    tokens could still change when more arrives (a word cut in two) waits in ``pending``.
    """

    def __init__(self, lm: LanguageModel, pooling: str = "mean", normalize: bool = True):
        check_pooling(pooling)
        self.lm, self.pooling, self.normalize = lm, pooling, normalize
        self.pending = ""
        self.tokens = 0
        self._pool = Pool.empty(1, lm.model.hidden_size, lm.device)
        self._state = self._advance([lm.tokenizer.eos_id], pooled=False)

    @torch.no_grad()
    def _advance(
        self,
        ids: list[int],
        pooled: bool = True,
        pool: Pool | None = None,
        state: State | None = None,
    ) -> State:
        tensor = torch.tensor([ids], device=self.lm.device)
        mask = torch.full_like(tensor, pooled, dtype=torch.bool)
        return run(self.lm.model.eval(), tensor, mask, pool or self._pool, state)

    def feed(self, text: str) -> None:
        """Read more text."""
        final, self.pending = self.lm.tokenizer.split_final(self.pending + text)
        ids = self.lm.tokenizer.encode(final) if final else []
        if ids:
            self._state = self._advance(ids, state=self._state)
            self.tokens += len(ids)

    def vector(self) -> np.ndarray:
        """The embedding of everything fed so far (with the closing ``<eos>``)."""
        tokenizer = self.lm.tokenizer
        tail = (tokenizer.encode(self.pending) if self.pending else []) + [tokenizer.eos_id]
        pool = self._pool.copy()
        self._advance(tail, pool=pool, state=self._state)
        return pool.vectors(self.pooling, self.normalize)[0].cpu().numpy()

    def state(self) -> dict:
        """Everything needed to continue this stream later (arrays and plain values)."""
        return {
            "fingerprint": self.lm.fingerprint(self.pooling),
            "pooling": self.pooling,
            "pending": self.pending,
            "tokens": self.tokens,
            "pool": [
                t.cpu().numpy()
                for t in (self._pool.total, self._pool.count, self._pool.max, self._pool.last)
            ],
            "model_state": [
                [t.cpu().numpy() for t in layer] for layer in flatten_state(self._state)
            ],
        }

    def restore(self, saved: dict) -> EmbeddingStream:
        """Continue from :meth:`state` (of a stream of the same model and pooling)."""
        if saved.get("fingerprint") != self.lm.fingerprint(self.pooling):
            raise RnnembedError("this stream state comes from another model or pooling")
        device = self.lm.device
        self.pending, self.tokens = saved["pending"], saved["tokens"]
        self._pool = Pool(*(torch.as_tensor(a, device=device) for a in saved["pool"]))
        self._state = unflatten_state(
            [[torch.as_tensor(a, device=device) for a in layer] for layer in saved["model_state"]]
        )
        return self


def fingerprint(model: RecurrentLM, pooling: str) -> str:
    """sha256 of the weights, the pooling and the dimension: what an index was built with."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"{pooling}:{embedding_dim(model, pooling)}".encode())
    return digest.hexdigest()
