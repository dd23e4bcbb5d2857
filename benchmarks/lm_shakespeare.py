"""Character-level Tiny Shakespeare, nanoGPT's split: the first 90% of input.txt trains, the
last 10% validates; validation loss in nats per character.

python benchmarks/lm_shakespeare.py --minutes 3 --out runs/
"""

from __future__ import annotations

from common import emit, lm_arguments, run, train_lm

from rnnembed.datasets import dataset_path


def main() -> None:
    args = lm_arguments(__doc__.splitlines()[0], default_minutes=3.0)
    text = dataset_path("tinyshakespeare", "all").read_text(encoding="utf-8")
    split = int(len(text) * 0.9)
    data = args.out / "tinyshakespeare-split"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.txt").write_text(text[:split], encoding="utf-8")
    (data / "valid.txt").write_text(text[split:], encoding="utf-8")
    lm, facts = train_lm(
        "shakespeare",
        [data / "train.txt"],
        [data / "valid.txt"],
        "char",
        args.minutes,
        args.out,
        args.seed,
    )
    result = lm.last_result
    emit(
        {
            "benchmark": "lm_shakespeare",
            "valid_loss": round(result.valid_loss, 4),
            "valid_bits_per_char": round(result.valid_loss / 0.6931471805599453, 4),
            **facts,
        }
    )


if __name__ == "__main__":
    run(main)
