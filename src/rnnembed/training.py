"""Training a RecurrentLM: contiguous streams, truncated BPTT, a schedule that fits the budget,
evaluation, checkpoints, exact resume, progress and metrics.

The token stream is cut into ``batch_size`` contiguous rows; each step reads the next ``bptt``
columns and carries the (detached) recurrent state into the next step, as PTB work does. The
learning rate follows the run's progress (step / total steps): linear warm-up, then cosine decay
for AdamW, or the classic divide-by-4-on-plateau for SGD. With ``minutes`` the total number of
steps is re-estimated from the measured speed so the schedule ends when the budget does.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rnnembed.atomic import save_tensors
from rnnembed.config import JsonConfig, check_seed
from rnnembed.errors import RnnembedError
from rnnembed.model import (
    CELLS,
    NONLINEARITIES,
    SOFTMAXES,
    ModelConfig,
    RecurrentLM,
    State,
    detach_state,
    flatten_state,
    stream_loss,
    unflatten_state,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint/checkpoint.safetensors"
METRICS = "metrics.jsonl"


# TrainConfig's numbers: (names, test, what it asks); 0 for a shape or lr: chosen for the budget
_RANGES: list[tuple[tuple[str, ...], Callable[[float], bool], str]] = [
    (
        (
            *("layers", "hidden", "embedding", "batch_size", "bptt"),
            *("lr", "weight_decay", "clip", "patience", "evaluations", "eval_tokens"),
        ),
        lambda v: v >= 0,
        "at least 0",
    ),
    # at most about two years: 60 × minutes and epochs × steps stay finite
    (
        ("minutes", "epochs", "checkpoint_minutes"),
        lambda v: 0 < v <= 1e6,
        "above 0 and at most 1,000,000",
    ),
    (("warmup", "final_lr"), lambda v: 0 <= v <= 1, "from 0 to 1"),
    # recurrent LMs stack 1 to 4; thousands of tiny layers pass the memory check and then take
    # minutes to build and step, far past any --minutes budget
    (("layers",), lambda v: v <= 100, "at most 100"),
    (
        ("dropout_embedding", "dropout_hidden", "dropout_output"),
        lambda v: 0 <= v < 1,
        "from 0 to below 1",
    ),
]


@dataclass
class TrainConfig(JsonConfig):
    """How to train: model shape, optimisation, budget. 0 or None means "choose for me"."""

    # model
    cell: str = "lstm"
    layers: int = 0
    hidden: int = 0
    embedding: int = 0
    tie_weights: bool = True
    nonlinearity: str = "tanh"
    bidirectional: bool = False  # also a backward LM, for embeddings that read both ways
    dropout_embedding: float | None = None
    dropout_hidden: float | None = None
    dropout_output: float | None = None
    softmax: str = "auto"  # full, adaptive, or auto: adaptive for large vocabularies
    cutoffs: list[int] = field(default_factory=list)
    # optimisation
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 0.0
    weight_decay: float = 0.01
    clip: float = 0.25
    warmup: float = 0.02  # fraction of the run
    final_lr: float = 0.05  # fraction of lr reached at the end of the cosine decay
    batch_size: int = 0
    bptt: int = 0
    # budget and bookkeeping
    minutes: float | None = None
    epochs: float | None = None
    evaluations: int = 10  # evaluations per run, the last at the end
    eval_tokens: int = 32768  # evaluations on the way score this much of the validation text
    patience: int = 3  # evaluations without improvement before an early stop
    checkpoint_minutes: float = 5.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 or fp32 for the training step; auto: bf16 where fast

    def check(self) -> None:
        """Refuse a value no run could use (called before a run reads or writes anything)."""
        choices = {
            "cell": CELLS,
            "nonlinearity": NONLINEARITIES,
            "softmax": ("auto", *SOFTMAXES),
            "optimizer": ("adamw", "sgd"),
            "precision": ("auto", "bf16", "fp32"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise RnnembedError(
                    f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}"
                )
        for names, allowed, rule in _RANGES:
            for name in names:
                value = getattr(self, name)
                if value is not None and not (math.isfinite(value) and allowed(value)):
                    finite = "" if math.isfinite(value) else "a finite number "
                    raise RnnembedError(f"{name} must be {finite}{rule}, not {value}")
        check_seed(self.seed)
        pick_device(self.device)


@dataclass
class TrainResult(JsonConfig):
    """What a run did and reached."""

    steps: int
    tokens: int
    seconds: float
    epochs: float
    valid_loss: float
    valid_ppl: float
    tokens_per_s: float
    stopped: str  # "budget", "early stop"


# vocabularies this large get the adaptive softmax by default; smaller ones a full softmax tied
# to the embedding, whose word vectors the embeddings use (tied: STS-B dev 64.8 vs 62.0, TREC
# 82.6 vs 80.2 for BPE 8,000 and 10 minutes, at perplexity 71 vs 59; README "Results")
ADAPTIVE_FROM = 10_000
# vocabularies this small (an alphabet's characters, with the 256 byte tokens of the char
# tokenizer) train with the character recipe; Chinese characters, thousands of them, train with
# the subword one (Chinese STS-B: README)
CHAR_RECIPE_BELOW = 1000


def choose_defaults(config: TrainConfig, kind: str, vocab_size: int) -> TrainConfig:
    """Fill what the user left open with the recipe measured on a 2-core CPU (README,
    benchmarks/lm_*.py): small recurrent models updated often beat big ones in short budgets.

    - softmax: adaptive (clusters at 10% and 40% of the vocabulary by frequency, untied) for
      vocabularies of ``ADAPTIVE_FROM`` ids or more, else a full softmax tied to the embedding;
    - words, subwords and large character sets (Chinese): 2×384 LSTM, 64 streams × 48 steps
      (wider products than 32 streams keep the bf16 units busier: benchmarks/throughput.py),
      AdamW 5e-3, dropout .1/.2/.3;
      runs of 20 minutes or more: dropout .1/.25/.4, and word models grow to 2×640 with 32
      streams (perplexity); subword models, the embeddings' default, stay 2×384 at every
      budget (encoding speed: README, benchmarks/encode_speed.py);
    - vocabularies under ``CHAR_RECIPE_BELOW`` ids (an alphabet's characters): 2×512 LSTM,
      16 streams × 64 steps, AdamW 5e-3, dropout 0/.1/.1;
    - bidirectional: one layer per direction, so the pair encodes with two layer calls per
      batch as the forward model does, and each half trains faster on its half of the budget
      (measured with BPE: README).
    """
    c = TrainConfig.from_dict(config.to_dict())
    if c.minutes is None and c.epochs is None:
        c.minutes = 10.0
    if c.softmax == "auto":
        c.softmax = "adaptive" if vocab_size >= ADAPTIVE_FROM else "full"
    if c.softmax == "adaptive":
        c.tie_weights = False  # the adaptive softmax has its own output weights
        c.cutoffs = c.cutoffs or [vocab_size // 10, vocab_size * 2 // 5]
    small_vocab = vocab_size < CHAR_RECIPE_BELOW
    long_run = (c.minutes or 0) >= 20 or (c.epochs or 0) >= 20
    if small_vocab:
        shape = {"layers": 2, "hidden": 512, "batch_size": 16, "bptt": 64, "lr": 5e-3}
        drops = (0.0, 0.1, 0.1)
    else:
        wide = long_run and kind == "word"
        shape = {
            "layers": 2,
            "hidden": 640 if wide else 384,
            "batch_size": 32 if wide else 64,
            "bptt": 48,
            "lr": 5e-3,
        }
        drops = (0.1, 0.25, 0.4) if long_run else (0.1, 0.2, 0.3)
    if c.optimizer == "sgd":
        shape["lr"] = 20.0
    if c.bidirectional:
        shape["layers"] = 1
    for name, value in shape.items():
        if not getattr(c, name):
            setattr(c, name, value)
    for name, value in zip(
        ("dropout_embedding", "dropout_hidden", "dropout_output"), drops, strict=True
    ):
        if getattr(c, name) is None:
            setattr(c, name, value)
    return c


def model_config(config: TrainConfig, vocab_size: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size,
        cell=config.cell,
        layers=config.layers,
        hidden=config.hidden,
        embedding=config.embedding,
        tie_weights=config.tie_weights,
        nonlinearity=config.nonlinearity,
        dropout_embedding=config.dropout_embedding or 0.0,
        dropout_hidden=config.dropout_hidden or 0.0,
        dropout_output=config.dropout_output or 0.0,
        softmax=config.softmax,
        cutoffs=list(config.cutoffs),
    )


# glibc returns big freed blocks to the OS, so each step re-faulted its temporaries page by page
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc's malloc.h
HEAP_UP_TO = (256 << 20, 32 << 20)  # heap-served block limits tried in order (older glibc: 32 MB)
KEEP_FREED = 1 << 30  # freed memory at the heap's top kept for reuse, not returned
MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc (process-wide, once, for the rest of the process) to serve blocks
    under the first ``HEAP_UP_TO`` limit it accepts from the heap and keep up to
    ``KEEP_FREED`` of freed memory for reuse. False, and nothing changed, where mallopt is
    missing or the user set malloc's own variables."""
    if any(name in os.environ for name in MALLOC_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # no mallopt (not glibc) or no C library
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    heap = any(mallopt(M_MMAP_THRESHOLD, size) for size in HEAP_UP_TO)
    trim = bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED))
    return heap and trim


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is a GPU, else the CPU) or a torch device name that this
    machine has; RnnembedError otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    unknown = RnnembedError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise unknown from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: not supported here
        raise unknown
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RnnembedError(f"device {name!r}, but PyTorch sees no CUDA GPU here; use cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RnnembedError(
            f"device {name!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s), "
            "numbered from 0; use cuda:0 or auto"
        )
    return device


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to run the training step in bfloat16 (weights and optimizer stay float32):
    on CUDA with bf16 support, or a CPU with native bf16 dot products (AVX512-BF16, AMX)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_corpus_size(tokens: int, batch_size: int) -> None:
    """Each of the ``batch_size`` streams needs at least two tokens (an input and its target)."""
    if tokens // batch_size < 2:
        raise RnnembedError(
            f"the corpus has {tokens} tokens, too few for a batch of {batch_size} streams; "
            "give more text or a smaller --batch-size"
        )


# a parameter's float32 training state: weight and gradient, and AdamW's two moments
TRAINING_BYTES_PER_PARAMETER = {"adamw": 16, "sgd": 8}


def check_model_fits(config: TrainConfig, vocab_size: int) -> None:
    """Refuse a model whose training state (``TRAINING_BYTES_PER_PARAMETER``, a floor:
    activations come on top) exceeds the memory free on its device; counted on the meta
    device, so nothing is allocated. Where the free memory is unknown, nothing is checked."""
    with torch.device("meta"):
        parameters = sum(
            p.numel() for p in RecurrentLM(model_config(config, vocab_size)).parameters()
        )
    device = pick_device(config.device)
    needed = parameters * TRAINING_BYTES_PER_PARAMETER[config.optimizer]
    free = free_memory(device)
    if free is not None and needed > free:
        raise RnnembedError(
            f"a {config.layers}×{config.hidden} {config.cell} over {vocab_size:,} token ids has "
            f"{parameters:,} parameters and needs at least {needed / 2**30:.1f} GiB to train, "
            f"more than the {free / 2**30:.1f} GiB free on {device}; choose a smaller "
            "--hidden, --layers or --vocab-size"
        )


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device``: the GPU's free memory; on Linux, MemAvailable plus free swap,
    capped by the cgroup's (container's) own limit; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)}
        free = (kib["MemAvailable"] + kib.get("SwapFree", 0)) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        left = None if limit == "max" else int(limit) - int((cgroup / "memory.current").read_text())
    except (OSError, ValueError):
        left = None
    return free if left is None else min(free, left)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D stream into ``batch_size`` contiguous rows, dropping the ragged end."""
    check_corpus_size(len(ids), batch_size)
    columns = len(ids) // batch_size
    return ids[: columns * batch_size].view(batch_size, columns)


def lr_factor(config: TrainConfig, progress: float) -> float:
    """Warm-up then cosine decay from 1 to ``final_lr``, as a function of progress in [0, 1]."""
    if config.optimizer == "sgd":
        return 1.0
    if progress < config.warmup:
        return max(progress / config.warmup, 1e-3)
    span = (progress - config.warmup) / max(1.0 - config.warmup, 1e-9)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(span, 1.0)))
    return config.final_lr + (1.0 - config.final_lr) * cosine


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    # the fused kernel: one pass over all parameters (a CPU step spent 14% in the loop version)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=fused or None)


class Trainer:
    """One training run over a token stream, written so DDP could wrap ``self.model`` later:
    every update goes through :meth:`step`, every write through rank 0's :meth:`save`."""

    def __init__(
        self,
        model: RecurrentLM,
        config: TrainConfig,
        train_ids: torch.Tensor,
        valid_ids: torch.Tensor,
        eos_id: int,
        out: Path,
        on_eval: Callable[[Trainer, dict], None] | None = None,
        progress: Callable[[Trainer, dict], None] | None = None,
        restore_best: Callable[[], None] | None = None,
    ):
        self.config = config
        self.device = pick_device(config.device)
        if self.device.type == "cpu" and not keep_freed_memory():
            log.debug("malloc left as it is: freed memory may be faulted back in every step")
        self.model = model.to(self.device)
        self.data = batchify(train_ids, config.batch_size).to(self.device)
        self.valid_ids = valid_ids.to(self.device)
        self.valid_probe = self.valid_ids[: config.eval_tokens or len(valid_ids)]
        self.eos_id = eos_id
        self.out = out
        self.on_eval = on_eval
        self.progress = progress
        self.restore_best = restore_best  # loads the best probe's weights back at the end
        self.optimizer = make_optimizer(config, self.model)
        self.bf16 = use_bf16(config.precision, self.device)
        self.steps_per_epoch = math.ceil((self.data.shape[1] - 1) / config.bptt)
        # the position of the run, all of it saved in a checkpoint
        self.step = 0
        self.total_steps = self._planned_steps()
        self.elapsed = 0.0
        self.tokens = 0
        self.best_loss = math.inf
        self.bad_evals = 0
        self.evals_done = 0
        self.next_eval = 1.0 / max(config.evaluations, 1)  # progress at which the next is due
        self.lr_scale = 1.0  # SGD's plateau divisions
        self.evaluated_step = -1
        self.eval_seconds_per_token = 0.0  # measured by each evaluation
        self._after_first_step: tuple[float, int] | None = None  # (elapsed, tokens) of this run
        self.state: State | None = None
        self.train_loss_sum = 0.0
        self.train_loss_steps = 0

    # -- the schedule ----------------------------------------------------------------------------

    def _planned_steps(self) -> int:
        if self.config.epochs is not None:
            return max(1, round(self.config.epochs * self.steps_per_epoch))
        return max(1, 10 * self.steps_per_epoch)  # a guess, replaced once speed is measured

    @property
    def budget_seconds(self) -> float | None:
        return None if self.config.minutes is None else 60.0 * self.config.minutes

    @property
    def _end_reserve(self) -> float:
        """Seconds the last probe and the final full evaluation will take: at the rate the
        last evaluation measured or, before the first, a third of a training token's time (a
        forward pass, without the backward) after the run's first step (which pays one-time
        costs: a GPU's libraries starting), so a slow validation is reserved for early on."""
        rate = self.eval_seconds_per_token
        if not rate and self._after_first_step is not None:
            seconds, tokens = self._after_first_step
            rate = (self.elapsed - seconds) / max(self.tokens - tokens, 1) / 3
        return (len(self.valid_probe) + len(self.valid_ids)) * rate

    def _replan(self, steps_done: int, seconds: float) -> None:
        """With a time budget: total steps = steps so far + the time left (less the final
        evaluation) × the wall-clock step rate of this run, probes included, so a slow probe
        slows the plan down in proportion and never swallows it."""
        budget = self.budget_seconds
        if budget is None or steps_done < 5 or seconds <= 0:
            return
        remaining = max(budget - self.elapsed - self._end_reserve, 0.0)
        self.total_steps = max(self.step + 1, self.step + int(remaining * steps_done / seconds))

    @property
    def out_of_time(self) -> bool:
        """The budget is spent, keeping room for the last probe and the final evaluation."""
        budget = self.budget_seconds
        return budget is not None and self.elapsed + self._end_reserve >= budget

    @property
    def progress_fraction(self) -> float:
        return min(self.step / self.total_steps, 1.0)

    def current_lr(self) -> float:
        return self.config.lr * self.lr_scale * lr_factor(self.config, self.progress_fraction)

    # -- one update --------------------------------------------------------------------------

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (step % self.steps_per_epoch) * self.config.bptt
        length = min(self.config.bptt, self.data.shape[1] - 1 - start)
        return self.data[:, start : start + length], self.data[:, start + 1 : start + 1 + length]

    def step_once(self) -> float:
        """One truncated-BPTT update; returns its training loss (nats/token)."""
        if self.step % self.steps_per_epoch == 0:
            self.state = None  # a new epoch starts each stream from scratch
        x, y = self.batch(self.step)
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_lr()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x, self.state, logits=False, targets=y)
            loss = out.nll.float().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.state = detach_state(out.state)
        self.step += 1
        self.tokens += y.numel()
        value = loss.item()
        self.train_loss_sum += value
        self.train_loss_steps += 1
        return value

    # -- evaluation and stopping ---------------------------------------------------------------

    def score(self, ids: torch.Tensor) -> float:
        """Validation loss (nats/token) of the current weights on ``ids``; times itself."""
        start = time.perf_counter()
        # rows of any length: scores compare checkpoints, and their time is in the budget
        tokens, nll = stream_loss(self.model, ids, self.eos_id, min_row=1)
        self.eval_seconds_per_token = (time.perf_counter() - start) / max(tokens, 1)
        return nll / tokens

    def evaluate(self) -> dict:
        """A probe: score the first ``eval_tokens`` of the validation text, log, and decide
        about early stopping (and SGD's learning rate)."""
        valid_loss = self.score(self.valid_probe)
        self.evaluated_step = self.step
        train_loss = self.train_loss_sum / max(self.train_loss_steps, 1)
        self.train_loss_sum, self.train_loss_steps = 0.0, 0
        self.evals_done += 1
        # spread the evaluations left evenly over the rest of the run
        left = max(self.config.evaluations - self.evals_done, 1)
        self.next_eval = self.progress_fraction + (1.0 - self.progress_fraction) / left
        improved = valid_loss < self.best_loss - 1e-4
        if improved:
            self.best_loss, self.bad_evals = valid_loss, 0
        else:
            self.bad_evals += 1
            if self.config.optimizer == "sgd":
                self.lr_scale /= 4.0
        record = {
            "step": self.step,
            "tokens": self.tokens,
            "seconds": round(self.elapsed, 3),
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "lr": self.current_lr(),
            "train_loss": train_loss,
            "train_ppl": math.exp(min(train_loss, 50)),
            "valid_loss": valid_loss,
            "valid_ppl": math.exp(min(valid_loss, 50)),
            "improved": improved,
        }
        if self.on_eval is not None:
            self.on_eval(self, record)
        return record

    def eval_due(self) -> bool:
        """A probe is due at each 1/evaluations of the run, and always at its end."""
        return self.progress_fraction >= min(self.next_eval, 1.0)

    def finished(self) -> str | None:
        if self.out_of_time:
            return "budget"
        if self.step >= self.total_steps:  # the planned steps (for --minutes, re-planned) are done
            return "budget"
        if self.config.patience and self.bad_evals >= self.config.patience:
            return "early stop"
        return None

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Step until the budget is spent or validation stops improving; probe on the way (the
        last probe at the very end), checkpoint at each probe and every ``checkpoint_minutes``;
        then score the kept (best) weights on the whole validation text."""
        clock = time.perf_counter
        run_start, start_step, start_elapsed = clock(), self.step, self.elapsed
        last_checkpoint = clock()
        while (stopped := self.finished()) is None:
            loss = self.step_once()
            if not math.isfinite(loss):  # NaN weights stay NaN: nothing later would be kept
                raise RnnembedError(
                    f"training diverged: the loss became {loss} at step {self.step} (learning "
                    f"rate {self.current_lr():g}); train again with a lower --lr"
                )
            self.elapsed = start_elapsed + clock() - run_start
            if self._after_first_step is None:
                self._after_first_step = (self.elapsed, self.tokens)
            if self.step % 10 == 0:
                self._replan(self.step - start_step, clock() - run_start)
            if self.out_of_time:
                self.total_steps = self.step  # the budget is spent: the schedule ends here
            evaluated = self.eval_due()
            if evaluated:
                self.evaluate()
            if evaluated or clock() - last_checkpoint >= 60 * self.config.checkpoint_minutes:
                self.save_checkpoint()
                last_checkpoint = clock()
            self.elapsed = start_elapsed + clock() - run_start
            if self.progress is not None:
                self.progress(self, {"loss": loss})
        if self.evaluated_step != self.step:  # stopped between evaluations: probe the end
            self.evaluate()
            self.save_checkpoint()
        if self.restore_best is not None:
            self.restore_best()
        final = self.score(self.valid_ids)  # the kept weights on the whole validation text
        self.elapsed = start_elapsed + clock() - run_start
        result = TrainResult(
            steps=self.step,
            tokens=self.tokens,
            seconds=round(self.elapsed, 2),
            epochs=round(self.step / self.steps_per_epoch, 3),
            valid_loss=final,
            valid_ppl=math.exp(min(final, 50)),
            tokens_per_s=round(self.tokens / max(self.elapsed, 1e-9), 1),
            stopped=stopped,
        )
        if self.on_eval is not None:
            self.on_eval(self, {"final": True, "step": self.step, **result.to_dict()})
        return result

    # -- checkpoints -------------------------------------------------------------------------

    RESUMABLE = (
        "step",
        "total_steps",
        "elapsed",
        "tokens",
        "best_loss",
        "bad_evals",
        "evals_done",
        "next_eval",
        "evaluated_step",
        "lr_scale",
        "train_loss_sum",
        "train_loss_steps",
    )

    def save_checkpoint(self) -> None:
        """Everything resume needs, in one safetensors file written atomically: weights,
        optimizer slots, the RNG, the carried state and the run's position."""
        tensors = {f"model.{k}": v for k, v in model_tensors(self.model).items()}
        optim = self.optimizer.state_dict()
        for index, slots in optim["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":  # dropout on a GPU draws from the GPU's generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        for i, layer in enumerate(flatten_state(self.state or [])):
            for j, t in enumerate(layer):
                tensors[f"state.{i}.{j}"] = t
        trainer = {key: getattr(self, key) for key in self.RESUMABLE}
        trainer["param_groups"] = optim["param_groups"]
        save_tensors(self.out / CHECKPOINT, tensors, metadata={"trainer": json.dumps(trainer)})

    def load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                trainer = json.loads(f.metadata()["trainer"])
        except FileNotFoundError:
            raise RnnembedError(
                f"{self.out}: no checkpoint to resume from; start a new run in another --out folder"
            ) from None
        except Exception as exc:
            raise RnnembedError(
                f"{path}: damaged checkpoint ({exc}); delete it and pass --resume again to train "
                "this run afresh with its settings, or start a new run in another --out folder"
            ) from None
        load_model_tensors(
            self.model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        slots: dict = {}
        layers: dict[int, dict[int, torch.Tensor]] = {}
        for key, value in tensors.items():
            kind, *rest = key.split(".", 2)
            if kind == "optim":
                slots.setdefault(int(rest[0]), {})[rest[1]] = value.to(self.device)
            elif kind == "state":
                layers.setdefault(int(rest[0]), {})[int(rest[1])] = value.to(self.device)
        self.optimizer.load_state_dict({"state": slots, "param_groups": trainer["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        if layers:
            self.state = unflatten_state(
                [[layer[j] for j in sorted(layer)] for _, layer in sorted(layers.items())]
            )
        for key in self.RESUMABLE:
            setattr(self, key, trainer[key])


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with tied duplicates dropped (safetensors refuses shared memory)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor
    return out


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load :func:`model_tensors` output; raises ValueError if names or shapes differ."""
    expected = model_tensors(model)
    if set(expected) != set(tensors):
        missing, extra = set(expected) - set(tensors), set(tensors) - set(expected)
        raise ValueError(f"weights do not match the model (missing {missing}, unexpected {extra})")
    for name, tensor in expected.items():
        if tensor.shape != tensors[name].shape:
            raise ValueError(
                f"{name}: shape {tuple(tensors[name].shape)}, model has {tuple(tensor.shape)}"
            )
    model.load_state_dict(tensors, strict=False)


def read_metrics(out: Path) -> list[dict]:
    """The records of ``metrics.jsonl``, but a last line cut short (a run killed as it wrote)."""
    path = out / METRICS
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise RnnembedError(
                f"{path}:{number}: not a JSON record; restore the file, or start a new run in "
                "another folder"
            ) from None
    return records
