"""Progress bars for long work: rich, on stderr, gone when done; off with --quiet."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rnnembed.training import Trainer


class _Bar:
    """One rich progress task shown while the ``with`` block runs."""

    def __init__(self, columns: list[ProgressColumn], total: float, quiet: bool, **fields: str):
        self.bar = Progress(
            *columns,
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=quiet,
        )
        self.task = self.bar.add_task("", total=total, **fields)

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


class TrainingProgress(_Bar):
    """Over a training run: tokens/s, smoothed training loss and ppl, best validation ppl."""

    def __init__(self, quiet: bool = False):
        columns = [
            TextColumn("[bold]train[/]"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn(
                "{task.fields[rate]} tok/s  loss {task.fields[loss]}  ppl {task.fields[ppl]}"
            ),
            TextColumn("valid ppl {task.fields[valid]}"),
        ]
        super().__init__(columns, 1000, quiet, rate="-", loss="-", ppl="-", valid="-")
        self.smoothed: float | None = None

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


class ChunkProgress(_Bar):
    """Over the chunks being indexed or embedded (``label``): count, chunks/s."""

    def __init__(self, label: str, total: int, quiet: bool = False):
        columns = [
            TextColumn(f"[bold]{label}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} chunks/s"),
        ]
        super().__init__(columns, total, quiet, rate="-")

    def advance(self, chunks: int) -> None:
        self.bar.advance(self.task, chunks)
        task = self.bar.tasks[0]
        self.bar.update(self.task, rate=f"{task.completed / max(task.elapsed or 0, 1e-9):,.0f}")
