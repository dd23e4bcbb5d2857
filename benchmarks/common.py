"""What every benchmark reports beside its numbers: when, where, and the peak memory."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import signal
import sys
from collections.abc import Callable

import torch

from rnnembed.errors import RnnembedError


def run(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``: an error in what it was given (rnnembed's) is one line on
    stderr and exit 1, as the rnnembed command gives it. SIGTERM exits through ``finally``
    blocks, so a server the benchmark started is stopped too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        main()
    except RnnembedError as exc:
        sys.exit(f"error: {exc}")


def machine() -> dict:
    """Date, CPU, core count, and the versions that produced the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def emit(result: dict) -> None:
    """Print the benchmark's one JSON object, with the machine it ran on."""
    print(json.dumps({**result, "peak_rss_mb": peak_rss_mb(), "machine": machine()}))


def lm_arguments(description: str, default_minutes: float):
    """The flags both language-model benchmarks take: --minutes, --out, --seed."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--minutes", type=float, default=default_minutes)
    parser.add_argument("--out", type=Path, required=True, help="folder for the model folders")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def train_lm(name: str, train: list, valid: list, tokenizer: str, minutes: float, out, seed: int):
    """Train with no size flags (the recipe `rnnembed train` picks for the budget); return the
    model and the facts every LM benchmark reports."""
    from rnnembed.language_model import LanguageModel

    folder = out / f"{name}-{minutes:g}m"
    lm = LanguageModel.train(
        train, folder, valid=valid, tokenizer=tokenizer, minutes=minutes, seed=seed
    )
    result = lm.last_result
    facts = {
        "tokens_per_s": result.tokens_per_s,
        "minutes": round(result.seconds / 60, 2),
        "epochs": result.epochs,
        "steps": result.steps,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "recipe": lm.train_config.to_dict(),
        "out": str(folder),
    }
    return lm, facts
