"""How well a model predicts a text: loss, perplexity and bits per character."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rnnembed.config import JsonConfig


@dataclass
class Evaluation(JsonConfig):
    """Scores on a text: loss in nats/token, perplexity = e^loss, bits per character =
    total nats / ln 2 / characters (newlines counted)."""

    tokens: int
    characters: int
    loss: float
    perplexity: float
    bits_per_char: float

    @classmethod
    def from_nll(cls, tokens: int, characters: int, nll: float) -> Evaluation:
        """From the total negative log-likelihood (nats) of ``tokens`` tokens."""
        loss = nll / tokens
        return cls(
            tokens, characters, loss, math.exp(min(loss, 700)), nll / math.log(2) / characters
        )
