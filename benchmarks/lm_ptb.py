"""Word-level Penn Treebank: train on ptb.train.txt for --minutes, validate on ptb.valid.txt.

python benchmarks/lm_ptb.py --minutes 5 --out runs/
Prints one JSON object: valid_ppl, tokens_per_s, minutes, ... and test_ppl when ptb.test.txt
is present. The model folder is OUT/ptb-<minutes>m.
"""

from __future__ import annotations

from common import emit, lm_arguments, run, train_lm

from rnnembed.datasets import dataset_path, find_dataset


def main() -> None:
    args = lm_arguments(__doc__.splitlines()[0], default_minutes=5.0)
    train, valid = dataset_path("ptb", "train"), dataset_path("ptb", "valid")
    lm, facts = train_lm("ptb", [train], [valid], "word", args.minutes, args.out, args.seed)
    test = find_dataset("ptb", "test")
    emit(
        {
            "benchmark": "lm_ptb",
            "valid_ppl": round(lm.last_result.valid_ppl, 2),
            "test_ppl": round(lm.evaluate_files([test]).perplexity, 2) if test else None,
            **facts,
        }
    )


if __name__ == "__main__":
    run(main)
