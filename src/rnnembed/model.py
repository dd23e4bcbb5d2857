"""RecurrentLM: token embedding -> recurrent layers -> dropout -> (tied) decoder.

Cells: ``lstm``, ``gru`` and ``elman`` (the seed article's SimpleRNN math,
h = act(W[x; h_prev] + b), tanh or relu) run on PyTorch's fused ``nn.LSTM``/``nn.GRU``/
``nn.RNN`` kernels. (A parallel-scan minimal GRU, Feng et al. 2024, was tried and dropped:
2.05 nats/char on Tiny Shakespeare in 3 minutes against the LSTM's 1.46; see the README.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnembed.config import JsonConfig
from rnnembed.errors import RnnembedError

CELLS = ("lstm", "gru", "elman")
NONLINEARITIES = ("tanh", "relu")  # of the Elman cell
SOFTMAXES = ("full", "adaptive")
# stream_loss rows start from a fresh state; this long, few tokens of a row lack context
ROW_TOKENS = 4096

# One layer's carried state: (h, c) for an LSTM, h for the other cells; each (batch, hidden).
LayerState = Tensor | tuple[Tensor, Tensor]
State = list[LayerState]


@dataclass
class ModelConfig(JsonConfig):
    """Everything needed to rebuild a :class:`RecurrentLM` (saved in ``config.json``)."""

    vocab_size: int
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 512
    embedding: int = 0  # 0: same as hidden
    tie_weights: bool = True
    nonlinearity: str = "tanh"  # elman only: tanh or relu
    dropout_embedding: float = 0.0  # variational dropout on the embedded tokens
    dropout_hidden: float = 0.0  # variational dropout between recurrent layers
    dropout_output: float = 0.0  # variational dropout before the decoder
    softmax: str = "full"  # full, or adaptive (Grave et al. 2017: frequent words cost less)
    cutoffs: list[int] = field(default_factory=list)  # adaptive: frequency-rank cluster bounds

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell not in CELLS:
            raise RnnembedError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.layers < 1 or self.hidden < 1 or self.vocab_size < 2:
            raise RnnembedError("layers, hidden and vocab_size must be positive")
        if self.nonlinearity not in NONLINEARITIES:
            raise RnnembedError("nonlinearity must be tanh or relu")
        if self.softmax not in SOFTMAXES:
            raise RnnembedError("softmax must be full or adaptive")
        if self.softmax == "adaptive" and not self.cutoffs:
            self.cutoffs = [c for c in (2000, 10000) if c < self.vocab_size - 1]
        bounds = self.cutoffs
        if self.softmax == "adaptive" and not (
            bounds
            and bounds == sorted(set(bounds))
            and 0 < bounds[0] <= bounds[-1] < self.vocab_size
        ):
            raise RnnembedError(
                "an adaptive softmax needs cutoffs that rise from 1 to at most the vocabulary's "
                f"size less one ({self.vocab_size - 1}), not {bounds}"
            )

    @property
    def embedding_dims(self) -> int:
        return self.embedding or self.hidden

    def layer_sizes(self) -> list[int]:
        """Hidden size of each layer; with tied weights the last one matches the embedding."""
        sizes = [self.hidden] * self.layers
        if self.tie_weights:
            sizes[-1] = self.embedding_dims
        return sizes


class LMOutput(NamedTuple):
    logits: Tensor | None  # (batch, time, vocab) log-probabilities up to a constant, or None
    hidden: Tensor  # last layer's output at every position, (batch, time, hidden)
    state: State  # carried state after the last position
    nll: Tensor | None  # −log p(target) at every position (0 where target is −100), or None


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout: one mask per sequence, shared by every time step of x (T, B, D)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, *x.shape[1:]).bernoulli_(1 - p) / (1 - p)
    return x * mask


class CorpusStats(nn.Module):
    """What embeddings know of the training corpus: token frequencies p(w) and, for the ``sif``
    pooling, the mean and whitening matrix of pooled hidden states and of pooled word vectors
    (filled by :func:`rnnembed.embedding.fit_corpus_stats` at the end of training; refitted on
    other texts within :meth:`rnnembed.language_model.LanguageModel.adapted`)."""

    def __init__(self, vocab_size: int, hidden: int, words: int):
        super().__init__()
        self.register_buffer("frequencies", torch.zeros(vocab_size))
        self.register_buffer("hidden_mean", torch.zeros(hidden))
        self.register_buffer("hidden_whitening", torch.zeros(hidden, hidden))
        self.register_buffer("word_mean", torch.zeros(words))
        self.register_buffer("word_whitening", torch.zeros(words, words))

    @property
    def fitted(self) -> bool:
        return bool(self.hidden_whitening.any())


class RecurrentLM(nn.Module):
    """Next-token model over token ids; its hidden state at each position is an embedding."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        sizes = config.layer_sizes()
        inputs = [config.embedding_dims, *sizes[:-1]]
        self.embed = nn.Embedding(config.vocab_size, config.embedding_dims)
        self.rnns = nn.ModuleList(
            _make_layer(config, i, h) for i, h in zip(inputs, sizes, strict=True)
        )
        if config.softmax == "adaptive":
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(
                sizes[-1], config.vocab_size, config.cutoffs, div_value=4.0, head_bias=True
            )
        else:
            self.decoder = nn.Linear(sizes[-1], config.vocab_size)
            if config.tie_weights:
                self.decoder.weight = self.embed.weight
        # rank[id]: the id's position by training frequency; adaptive clusters group by rank
        self.register_buffer("rank", torch.arange(config.vocab_size))
        self.stats = CorpusStats(config.vocab_size, sizes[-1], config.embedding_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        if isinstance(self.decoder, nn.Linear):
            nn.init.zeros_(self.decoder.bias)
            if not self.config.tie_weights:
                nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    @torch.no_grad()
    def set_frequencies(self, counts: Tensor) -> None:
        """Start from the unigram model: the decoder bias becomes log p(id) (add-one smoothed),
        the adaptive softmax's clusters are ordered by these per-id training counts, and the
        embeddings' frequency weights come from them."""
        self.rank.copy_(torch.argsort(torch.argsort(counts, descending=True, stable=True)))
        self.stats.frequencies.copy_(counts.float() / counts.sum())
        probs = (counts.float() + 1) / (counts.sum() + len(counts))
        if isinstance(self.decoder, nn.Linear):
            self.decoder.bias.copy_(probs.log())
            return
        by_rank = probs.sort(descending=True).values
        bounds = [0, *self.decoder.cutoffs]
        shortlist = by_rank[: bounds[1]]
        clusters = by_rank.new_tensor(
            [by_rank[a:b].sum() for a, b in zip(bounds[1:], bounds[2:], strict=False)]
        )
        self.decoder.head.bias.copy_(torch.cat([shortlist, clusters]).log())

    @property
    def hidden_size(self) -> int:
        return self.config.layer_sizes()[-1]

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The zero state."""
        states: State = []
        for rnn in self.rnns:
            h = torch.zeros(batch_size, rnn.hidden_size, device=device)
            states.append((h, torch.zeros_like(h)) if isinstance(rnn, nn.LSTM) else h)
        return states

    def forward(
        self,
        ids: Tensor,
        state: State | None = None,
        logits: bool = True,
        targets: Tensor | None = None,
    ) -> LMOutput:
        """ids (batch, time) -> logits (batch, time, vocab), the last layer's hidden states,
        the carried state, and with ``targets`` (batch, time) the NLL of each target."""
        cfg = self.config
        # time-major inside: the fused recurrent kernels' own layout, so no transposed copies
        x = locked_dropout(self.embed(ids.t()), cfg.dropout_embedding, self.training)
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        new_state: State = []
        for i, (rnn, layer_state) in enumerate(zip(self.rnns, state, strict=True)):
            x, carried = _run_layer(rnn, x, layer_state)
            new_state.append(carried)
            if i < len(self.rnns) - 1:
                x = locked_dropout(x, cfg.dropout_hidden, self.training)
        out = locked_dropout(x, cfg.dropout_output, self.training)
        nll = None if targets is None else self._nll(out, targets.t()).t()
        scores = self._logits(out).transpose(0, 1) if logits else None
        return LMOutput(scores, x.transpose(0, 1), new_state, nll)

    def _logits(self, out: Tensor) -> Tensor:
        if isinstance(self.decoder, nn.Linear):
            return self.decoder(out)
        by_rank = self.decoder.log_prob(out.flatten(0, 1))
        return by_rank[:, self.rank].view(*out.shape[:2], -1)

    def _nll(self, out: Tensor, targets: Tensor) -> Tensor:
        if isinstance(self.decoder, nn.Linear):
            flat = F.cross_entropy(
                self.decoder(out).flatten(0, 1), targets.flatten(), reduction="none"
            )
            return flat.view(targets.shape)
        flat = out.flatten(0, 1)
        if torch.is_autocast_enabled(flat.device.type):
            # GRU layers give float32 under autocast; the adaptive softmax
            # needs its input in the dtype its own linear layers compute in
            flat = flat.to(torch.get_autocast_dtype(flat.device.type))
        # every position is scored (an ignored one as id 0) and ignored ones are zeroed after:
        # no gather/scatter of the positions, no host sync to find them
        scored = -self.decoder(flat, self.rank[targets.clamp_min(0).flatten()]).output.float()
        return torch.where(targets != -100, scored.view_as(targets), 0.0)


def _make_layer(config: ModelConfig, in_dims: int, hidden: int) -> nn.Module:
    if config.cell == "lstm":
        return nn.LSTM(in_dims, hidden)
    if config.cell == "gru":
        return nn.GRU(in_dims, hidden)
    return nn.RNN(in_dims, hidden, nonlinearity=config.nonlinearity)


def _run_layer(rnn: nn.Module, x: Tensor, state: LayerState) -> tuple[Tensor, LayerState]:
    if isinstance(rnn, nn.LSTM):
        h, c = state
        out, (h_n, c_n) = rnn(x, (h.unsqueeze(0), c.unsqueeze(0)))
        return out, (h_n[0], c_n[0])
    out, h_n = rnn(x, state.unsqueeze(0))
    return out, h_n[0]


def flatten_state(state: State) -> list[list[Tensor]]:
    """Each layer's state as a list: [h, c] for an LSTM, [h] otherwise."""
    return [list(s) if isinstance(s, tuple) else [s] for s in state]


def unflatten_state(layers: list[list[Tensor]]) -> State:
    """The inverse of :func:`flatten_state`."""
    return [tuple(layer) if len(layer) == 2 else layer[0] for layer in layers]


def detach_state(state: State) -> State:
    """Cut the graph behind a carried state (truncated BPTT)."""
    return [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]


@torch.no_grad()
def stream_loss(
    model: RecurrentLM,
    ids: Tensor,
    eos_id: int,
    batch_size: int = 16,
    bptt: int = 128,
    min_row: int = ROW_TOKENS,
) -> tuple[int, float]:
    """(tokens, Σ −log p(ids[t] | ids[<t])) over a token stream, in nats.

    The first token is conditioned on ``<eos>`` (a line start). The stream is cut into up to
    ``batch_size`` contiguous rows of at least ``min_row`` tokens, scored side by side, each
    row fed its true previous token but starting from a fresh state (so a stream shorter than
    2 × ``min_row`` is one row, scored exactly); every token is scored exactly once.
    """
    model.eval()
    n = len(ids)
    rows = max(1, min(batch_size, n // min_row))
    cols = -(-n // rows)
    pad = rows * cols - n
    inputs = torch.cat([ids.new_tensor([eos_id]), ids[:-1]])
    inputs = F.pad(inputs, (0, pad), value=eos_id).view(rows, cols)
    targets = F.pad(ids, (0, pad), value=-100).view(rows, cols)
    total, state = 0.0, None
    for start in range(0, cols, bptt):
        window = slice(start, start + bptt)
        out = model(inputs[:, window], state, logits=False, targets=targets[:, window])
        state = out.state
        total += out.nll.sum().item()
    return n, total
