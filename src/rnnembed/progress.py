"""Progress bars for long work (rich, on stderr, gone when done)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rnnembed.training import Trainer


class TrainingProgress:
    """A bar over a training run: tokens/s, training loss and ppl, last validation ppl, ETA."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.bar = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn(
                "{task.fields[rate]} tok/s  loss {task.fields[loss]}  ppl {task.fields[ppl]}"
            ),
            TextColumn("valid ppl {task.fields[valid]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task("train", total=1000, rate="-", loss="-", ppl="-", valid="-")
        self.smoothed: float | None = None

    def __enter__(self) -> TrainingProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, trainer: Trainer, info: dict) -> None:
        loss = info["loss"]
        self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        valid = "-" if math.isinf(trainer.best_loss) else f"{math.exp(trainer.best_loss):.2f}"
        self.bar.update(
            self.task,
            completed=1000 * trainer.progress_fraction,
            rate=f"{trainer.tokens / max(trainer.elapsed, 1e-9):,.0f}",
            loss=f"{self.smoothed:.3f}",
            ppl=f"{math.exp(min(self.smoothed, 50)):.1f}",
            valid=valid,
        )
