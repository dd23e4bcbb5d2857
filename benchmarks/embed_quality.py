"""Embedding quality through the evaluation harness, beside the baselines, on the data here.

python benchmarks/embed_quality.py --minutes 30 --out runs/
Three models, each trained on its own corpus (folders OUT/wikitext-2, OUT/scifact, OUT/zh), each
a forward and a backward LM on half the budget (--no-bidirectional: forward only):
- WikiText-2 train, --minutes: MR (10-fold CV), TREC (test), STS-B dev;
- the SciFact corpus texts alone, min(--minutes, 15): SciFact nDCG@10 on the train queries;
- the Chinese novels in zh/prose, min(--minutes, 15), read as characters: Chinese STS-B valid.
Each task is scored for the model in dense and hybrid mode, for bag of words (``bm25`` mode:
TF-IDF, or BM25 for retrieval), and for averaged word2vec and Doc2Vec trained on the same
corpus for the same time; the STS tasks also with every encoder adapted (``*_adapted`` rows:
its vectors whitened over the evaluated sentences, unlabelled, as the TF-IDF is fitted on
them). --baseline-seconds overrides the baselines' time, --no-baselines skips them (a machine
without gensim, such as a GPU one), --hidden and --layers override the recipe's shape; a smoke
run: ``--minutes 0.5 --baseline-seconds 20 --tasks trec,stsb``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from common import emit, run

from rnnembed.datasets import data_dir
from rnnembed.embedding import directions
from rnnembed.errors import RnnembedError
from rnnembed.evaluation import TASKS as KINDS
from rnnembed.evaluation import evaluate
from rnnembed.evaluation.baselines import BASELINES, train_baseline
from rnnembed.language_model import CONFIG, LanguageModel

# task -> (model, evaluate() arguments); paths are relative to $RNNEMBED_DATA_DIR
TASKS = {
    "mr": ("wikitext-2", {"task": "mr"}),
    "trec": ("wikitext-2", {"task": "trec"}),
    "stsb": ("wikitext-2", {"task": "stsb", "split": "dev"}),
    "scifact": ("scifact", {"task": "beir", "file": "scifact", "split": "train"}),
    "zh-stsb": ("zh", {"task": "pairs", "split": "valid"}),
}
# model -> (training files, validation files or None), relative to $RNNEMBED_DATA_DIR
CORPORA = {
    "wikitext-2": (["wikitext-2/wiki.train.tokens"], ["wikitext-2/wiki.valid.tokens"]),
    "scifact": (["scifact/corpus.jsonl"], None),
    "zh": (["zh/prose"], None),
}
# model -> tokenizer: byte-level BPE 8,000 for English; characters for Chinese, as word2vec
# reads it (Chinese STS-B valid 69.0 against 67.7 with BPE, train 61.3 against 60.2: README)
TOKENIZERS = {"wikitext-2": "bpe", "scifact": "bpe", "zh": "char"}
SMALL_MINUTES = 15.0  # the cap for the SciFact and Chinese models
# measured here through this harness (see the README), and published
REFERENCE = {
    "bag_of_words_here": {"mr": 77.6, "trec": 87.8, "stsb": 75.7, "zh-stsb": 73.1, "scifact": 0.67},
    "published": {
        "averaged GloVe (SentEval)": {"mr": 77.3, "trec": 83.0, "stsb test": 58.0},
        "InferSent": {"mr": 81.6, "trec": 88.2, "stsb test": 68.0},
        "BM25 (BEIR, test queries)": {"scifact": 0.665},
    },
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="WikiText-2 model budget")
    parser.add_argument("--out", type=Path, required=True, help="folder for the model folders")
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=None,
        help="word2vec/Doc2Vec budget (default: the same as the model's)",
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    parser.add_argument("--pooling", default=None, help="default: the model's (sif)")
    parser.add_argument(
        "--tokenizer", default=None, help="every model's tokenizer (default: TOKENIZERS)"
    )
    parser.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each model a forward and a backward LM, half the budget each (the default: "
        "higher dense scores on every task, README); --no-bidirectional: forward only",
    )
    parser.add_argument(
        "--hidden", type=int, default=0, help="each model's width (default: the recipe's)"
    )
    parser.add_argument(
        "--layers", type=int, default=0, help="layers per direction (default: the recipe's)"
    )
    parser.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train and score word2vec and Doc2Vec (--no-baselines: the model and bag of words)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="load models already in OUT instead of training (with their own budget and shape: "
        "--minutes, --hidden, --layers, --tokenizer and --bidirectional then shape only models "
        "trained anew, and the baselines get a reused model's budget)",
    )
    args = parser.parse_args()
    if args.minutes <= 0 or (args.baseline_seconds is not None and args.baseline_seconds <= 0):
        parser.error("--minutes and --baseline-seconds must be above 0")
    return args


def model_for(name: str, minutes: float, args: argparse.Namespace, root: Path) -> tuple:
    """(LanguageModel, facts): trained for ``minutes`` on the model's corpus, or reused."""
    train, valid = CORPORA[name]
    folder = args.out / name
    if args.reuse and (folder / CONFIG).is_file():
        lm = LanguageModel.load(folder)
        config = lm.train_config
        return lm, {
            "out": str(folder),
            "reused": True,
            "tokenizer": lm.tokenizer.kind,
            "minutes": config.minutes,
            "bidirectional": config.bidirectional,
        }
    lm = LanguageModel.train(
        [root / f for f in train],
        folder,
        valid=[root / f for f in valid] if valid else None,
        tokenizer=args.tokenizer or TOKENIZERS[name],
        minutes=minutes,
        bidirectional=args.bidirectional,
        hidden=args.hidden,
        layers=args.layers,
        seed=args.seed,
    )
    runs = [  # forward (, backward)
        {
            "minutes": round(r.seconds / 60, 2),
            "valid_ppl": round(r.valid_ppl, 2),
            "epochs": r.epochs,
        }
        for r in lm.results
    ]
    return lm, {
        "out": str(folder),
        "tokenizer": lm.tokenizer.kind,
        **runs[0],
        **({"backward": runs[1]} if len(runs) > 1 else {}),
        "parameters": sum(p.numel() for model in directions(lm) for p in model.parameters()),
        "recipe": lm.train_config.to_dict(),
    }


def scores(encoders: dict, arguments: dict, pooling: str | None, root: Path) -> dict:
    """The task's score for each row: the model dense and hybrid, bag of words, baselines; an
    STS task also scores the encoders adapted (``*_adapted``: vectors whitened over the
    evaluated sentences, as the bag of words fits its IDF on them)."""
    options = dict(arguments)
    if "file" in options:
        options["file"] = root / options["file"]
    rows = {
        "dense": (encoders["model"], "dense", pooling),
        "hybrid": (encoders["model"], "hybrid", pooling),
        "bag_of_words": (None, "bm25", None),
        **{name: (encoders[name], "dense", None) for name in BASELINES if name in encoders},
    }
    adaptable = KINDS[options["task"]] == "sts" and pooling in (None, "sif")
    adapts = [False, True] if adaptable else [False]
    out = {}
    for adapt in adapts:
        for row, (encoder, mode, row_pooling) in rows.items():
            if adapt and encoder is None:
                continue  # bag of words is fitted on the evaluated sentences already
            start = time.perf_counter()
            result = evaluate(
                encoder, data_dir=root, mode=mode, pooling=row_pooling, adapt=adapt, **options
            )
            name = f"{row}_adapted" if adapt else row
            out[name] = {k: v for k, v in result.items() if k not in ("task", "mode", "file", "C")}
            out[name]["seconds"] = round(time.perf_counter() - start, 1)
    return out


def targets(results: dict) -> dict:
    """The issue's targets: dense beats both baselines and hybrid beats bag of words, per
    task (an STS task: also with every encoder adapted, ``adapted``); stretch: dense beats bag
    of words on the mean of MR, TREC and STS-B dev."""

    def met(r: dict, suffix: str) -> dict:
        out = {
            "hybrid_beats_bag_of_words": r[f"hybrid{suffix}"]["score"] > r["bag_of_words"]["score"]
        }
        if all(f"{name}{suffix}" in r for name in BASELINES):  # not with --no-baselines
            out["dense_beats_word2vec_and_doc2vec"] = r[f"dense{suffix}"]["score"] > max(
                r[f"{name}{suffix}"]["score"] for name in BASELINES
            )
        return out

    out = {}
    for task, r in results.items():
        out[task] = met(r, "")
        if "dense_adapted" in r:
            out[task]["adapted"] = met(r, "_adapted")
    english = [results[t] for t in ("mr", "trec", "stsb") if t in results]
    if len(english) == 3:
        mean = {row: sum(r[row]["score"] for r in english) / 3 for row in ("dense", "bag_of_words")}
        out["stretch_dense_beats_bag_of_words_on_mean"] = mean["dense"] > mean["bag_of_words"]
    return out


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("rnnembed").setLevel(logging.INFO)
    root = data_dir()
    if root is None:
        raise RnnembedError("set RNNEMBED_DATA_DIR to the shared data folder")
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise RnnembedError(f"unknown tasks {sorted(unknown)}; choose from {', '.join(TASKS)}")
    models, results = {}, {}
    for name in dict.fromkeys(TASKS[t][0] for t in tasks):
        minutes = args.minutes if name == "wikitext-2" else min(args.minutes, SMALL_MINUTES)
        lm, facts = model_for(name, minutes, args, root)
        encoders = {"model": lm}
        if args.baselines:
            seconds = args.baseline_seconds or 60 * lm.train_config.minutes
            for baseline in BASELINES:
                encoders[baseline] = train_baseline(
                    baseline, [root / f for f in CORPORA[name][0]], seconds, seed=args.seed
                )
                facts[f"{baseline}_epochs"] = encoders[baseline].epochs
            facts["baseline_seconds"] = seconds
        models[name] = facts
        for task in (t for t in tasks if TASKS[t][0] == name):
            results[task] = scores(encoders, TASKS[task][1], args.pooling, root)
    emit(
        {
            "benchmark": "embed_quality",
            "pooling": args.pooling,
            "results": results,
            "targets": targets(results),
            "models": models,
            "reference": REFERENCE,
        }
    )


if __name__ == "__main__":
    run(main)
