"""Training speed: tokens/s and model FLOP utilisation (MFU) against this machine's measured
matmul peak, per cell type and size, and for the PTB benchmark's own recipe.

python benchmarks/throughput.py [--seconds 8] [--rounds 5]
MFU = model FLOPs per token (multiply-adds ×2; backward = 2× forward; adaptive-softmax tails
counted for the tokens that reach them) × tokens/s ÷ the matmul peak of the precision the
step runs in (bf16 autocast where the CPU has native bf16, else fp32); the fp32 ratio too.
The machine is shared and its speed drifts, so each row alternates ``--rounds`` rounds of
(fp32 peak, bf16 peak, training) and reports the medians of the per-round rates and ratios."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import emit, run

from rnnembed.datasets import find_dataset
from rnnembed.model import ModelConfig, RecurrentLM
from rnnembed.tokenizer import Tokenizer
from rnnembed.training import TrainConfig, Trainer, choose_defaults, model_config

GATES = {"lstm": 4, "gru": 3, "elman": 1}
WARMUP_SECONDS = 2.0


def matmul_peak(dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Best GEMM rate in GFLOP/s over ``seconds`` of square products in ``dtype``."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def forward_flops(config: ModelConfig, tail_fraction: list[float]) -> float:
    """Forward FLOPs per token of a RecurrentLM's matrix products."""
    sizes = config.layer_sizes()
    inputs = [config.embedding_dims, *sizes[:-1]]
    flops = 0.0
    for i, h in zip(inputs, sizes, strict=True):
        flops += 2 * GATES[config.cell] * h * (i + h)
    h = sizes[-1]
    if config.softmax == "full":
        return flops + 2 * h * config.vocab_size
    bounds = [*config.cutoffs, config.vocab_size]
    flops += 2 * h * (bounds[0] + len(bounds) - 1)
    for k, fraction in enumerate(tail_fraction):
        dims = int(h // 4 ** (k + 1))
        flops += fraction * 2 * (h * dims + dims * (bounds[k + 1] - bounds[k]))
    return flops


def train_for(trainer: Trainer, seconds: float) -> float:
    """Run training steps for about ``seconds``; returns the tokens per second (the tokens the
    steps read: an epoch's last window is shorter)."""
    tokens, start = trainer.tokens, time.perf_counter()
    while time.perf_counter() - start < seconds:
        trainer.step_once()
    return (trainer.tokens - tokens) / (time.perf_counter() - start)


def measure(
    config: TrainConfig, ids: torch.Tensor, vocab_size: int, seconds: float, rounds: int
) -> dict:
    """Steady-state training tokens/s of one configuration on a token stream, and its MFU,
    each round's training beside that round's matmul peaks; medians over the rounds."""
    torch.manual_seed(0)
    model = RecurrentLM(model_config(config, vocab_size))
    model.set_frequencies(torch.bincount(ids, minlength=vocab_size))
    trainer = Trainer(model, config, ids, ids[:1000], 0, out=None)
    train_for(trainer, WARMUP_SECONDS)  # allocator and kernel caches settle
    counts = torch.bincount(ids, minlength=vocab_size).sort(descending=True).values.float()
    cuts = [*model.config.cutoffs, vocab_size]
    total = counts.sum().item()
    tails = [counts[a:b].sum().item() / total for a, b in zip(cuts, cuts[1:], strict=False)]
    flops = 3 * forward_flops(model.config, tails)
    precision = "bf16" if trainer.bf16 else "fp32"
    rates, peaks = [], {"fp32": [], "bf16": []}
    for _ in range(rounds):
        peaks["fp32"].append(matmul_peak(torch.float32))
        peaks["bf16"].append(matmul_peak(torch.bfloat16))
        rates.append(train_for(trainer, seconds / rounds))
    gflops = np.array(rates) * flops / 1e9
    mfu = gflops / np.array(peaks[precision])  # per round, against its own precision's peak
    return {
        "precision": precision,
        "tokens_per_s": round(float(np.median(rates))),
        "gflop_per_token": round(flops / 1e9, 5),
        "gflops": round(float(np.median(gflops)), 1),
        "peak_gflops": round(float(np.median(peaks[precision])), 1),
        "mfu": round(float(np.median(mfu)), 3),
        "mfu_vs_fp32_peak": round(float(np.median(gflops / np.array(peaks["fp32"]))), 3),
        "mfu_rounds": [round(float(x), 3) for x in mfu],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="training per configuration")
    parser.add_argument("--rounds", type=int, default=5, help="peak/training rounds per row")
    args = parser.parse_args()
    ptb = find_dataset("ptb", "train")
    if ptb is None:
        raise SystemExit("needs ptb/ptb.train.txt under $RNNEMBED_DATA_DIR")
    lines = ptb.read_text(encoding="utf-8").splitlines()
    tokenizer = Tokenizer.train(lines, kind="word")
    ids = torch.from_numpy(tokenizer.encode_stream(lines)[0])
    rows = []
    recipe = choose_defaults(TrainConfig(minutes=5), "word", tokenizer.vocab_size)
    runs = [
        ("ptb recipe (5 minutes)", recipe),
        ("ptb recipe, fp32", TrainConfig(**{**recipe.to_dict(), "precision": "fp32"})),
    ]
    for cell in GATES:
        for hidden in (256, 512, 1024):
            runs.append(
                (
                    f"{cell} 2x{hidden}",
                    TrainConfig(
                        **{**recipe.to_dict(), "cell": cell, "hidden": hidden, "embedding": 0}
                    ),
                )
            )
    for name, config in runs:
        row = {"name": name, "cell": config.cell, "hidden": config.hidden}
        rows.append(row | measure(config, ids, tokenizer.vocab_size, args.seconds, args.rounds))
    emit({"benchmark": "throughput", "runs": rows})


if __name__ == "__main__":
    run(main)
