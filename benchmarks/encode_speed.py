"""Encoding speed: sentences/s on STS-B sentences and time on long texts, beside a transformer
encoder of all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads, FFN 1536, random weights:
speed only) in the same run; streaming µs/token at 100 and at 100,000 tokens (a bidirectional
model's forward half); peak memory.

python benchmarks/encode_speed.py --model OUT/wikitext-2   (the quality benchmark's model)
Both encoders run in float32 on the same token ids, batch 64, texts sorted by length, in
``--rounds`` interleaved runs (medians; speedups are medians of the per-round ratios). A long
text is timed alone and as one of 8 copies encoded in one call (time per text); the
transformer, like MiniLM, reads at most 512 tokens at once, so a long text is cut into 512-token
chunks (batched) whose vectors are averaged.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import emit, peak_rss_mb, run
from torch import nn

from rnnembed.datasets import dataset_path
from rnnembed.language_model import LanguageModel

MAX_POSITIONS = 512
LONG_COPIES = 8  # long texts encoded in one call, beside one alone


class MiniLMShape(nn.Module):
    """A BERT-style encoder of all-MiniLM-L6-v2's shape with random weights, mean-pooled."""

    def __init__(self, vocab: int = 30522, width: int = 384, layers: int = 6, heads: int = 12):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(MAX_POSITIONS, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, activation="gelu", batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=True)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1])
        h = self.encoder(self.embed(ids) + self.position(positions), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return (torch.nan_to_num(h) * keep).sum(1) / keep.sum(1)


def transformer_encode(
    model: MiniLMShape, sequences: list[list[int]], batch: int = 64
) -> np.ndarray:
    """Encode token sequences as MiniLM would: chunks of ≤512, batched in order of length, each
    sequence's vector the mean of its chunks'."""
    chunks = [
        (n, s[i : i + MAX_POSITIONS])
        for n, s in enumerate(sequences)
        for i in range(0, len(s), MAX_POSITIONS)
    ]
    chunks.sort(key=lambda chunk: len(chunk[1]))
    sums = torch.zeros(len(sequences), model.embed.embedding_dim)
    counts = torch.zeros(len(sequences), 1)
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        longest = max(len(c) for _, c in part)
        ids = torch.zeros(len(part), longest, dtype=torch.long)
        pad = torch.ones(len(part), longest, dtype=torch.bool)
        for row, (_, chunk) in enumerate(part):
            ids[row, : len(chunk)] = torch.tensor([t % 30522 for t in chunk])
            pad[row, : len(chunk)] = False
        owners = torch.tensor([n for n, _ in part])
        sums.index_add_(0, owners, model(ids, pad))
        counts.index_add_(0, owners, torch.ones(len(part), 1))
    return (sums / counts).numpy()


def side_by_side(
    rounds: int, ours: Callable[[], object], theirs: Callable[[], object]
) -> tuple[float, float, float]:
    """Median seconds of ``ours`` and of ``theirs`` over ``rounds`` interleaved runs (after one
    warm-up each; the order swaps every round), and the median of the per-round ratios
    theirs / ours: the machine is shared and its speed drifts, so each ratio compares runs made
    side by side."""
    ours()
    theirs()
    times = []
    for round_ in range(rounds):
        pair = {}
        for name, work in (("ours", ours), ("theirs", theirs))[:: 1 if round_ % 2 == 0 else -1]:
            start = time.perf_counter()
            work()
            pair[name] = time.perf_counter() - start
        times.append((pair["ours"], pair["theirs"]))
    a, b = np.array(times).T
    return float(np.median(a)), float(np.median(b)), float(np.median(b / a))


def stsb_sentences(limit: int) -> list[str]:
    from rnnembed.datasets import data_dir

    root = data_dir()
    if root is None or not (root / "stsb" / "sts-dev.csv").is_file():
        raise SystemExit("needs stsb/sts-dev.csv under $RNNEMBED_DATA_DIR")
    sentences: list[str] = []
    for name in ("sts-dev.csv", "sts-train.csv"):
        with open(root / "stsb" / name, encoding="utf-8") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                sentences.extend(row[5:7])
    return list(dict.fromkeys(s for s in sentences if s.strip()))[:limit]


def long_text(lm: LanguageModel, words: list[str], tokens: int) -> str:
    """A real WikiText-2 passage of exactly ``tokens`` tokens under the model's tokenizer."""
    ids = lm.tokenizer.encode(" ".join(words[: 2 * tokens]))[:tokens]
    return lm.tokenizer.decode(ids)


def window_costs(
    lm: LanguageModel, words: list[str], windows: list[tuple[int, int]]
) -> list[float]:
    """µs per token over each (first, last) token window of one stream fed real text word by
    word (windows in order, not overlapping)."""
    stream = lm.stream()
    costs, pending = [], iter(windows)
    low, high = next(pending)
    began = None
    for word in words:
        stream.feed(word + " ")
        fed, now = stream.tokens, time.perf_counter()
        if began is None and fed >= low:
            began = (now, fed)
        elif began is not None and fed >= high:
            costs.append((now - began[0]) / (fed - began[1]) * 1e6)
            began = None
            low, high = next(pending, (None, None))
            if low is None:
                break
    return costs


def stream_cost(lm: LanguageModel, words: list[str], upto: int, rounds: int) -> dict:
    """µs per token on 100-token windows: tokens 50 to 150 (median over ``rounds`` fresh
    streams) and the last ten windows before ``upto`` (their median) of one long stream."""
    early = [window_costs(lm, words, [(50, 150)])[0] for _ in range(rounds)]
    late = window_costs(
        lm, words, [(upto - 100 * i, upto - 100 * (i - 1)) for i in range(10, 0, -1)]
    )
    return {
        "stream_us_per_token_at_100": round(float(np.median(early)), 1),
        f"stream_us_per_token_at_{upto}": round(float(np.median(late)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder")
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--stream-tokens", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed runs")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.stream_tokens < 1150:
        parser.error("--stream-tokens must be at least 1150 (its windows are the last 1,000)")

    lm = LanguageModel.load(args.model, device="cpu")  # beside the transformer, on the CPU
    transformer = MiniLMShape().eval()
    sentences = stsb_sentences(args.sentences)
    sentence_ids = lm.tokenizer.encode_batch(sentences)
    ours, theirs, ratio = side_by_side(
        args.rounds,
        lambda: lm.encode(sentences, batch_size=64),
        lambda: transformer_encode(transformer, sentence_ids),
    )
    result = {
        "benchmark": "encode_speed",
        "model": str(args.model),
        "pooling": lm.default_pooling,
        "dim": lm.dim(),
        "stsb_sentences": len(sentences),
        "mean_tokens_per_sentence": round(float(np.mean([len(s) for s in sentence_ids])), 1),
        "ours_sentences_per_s": round(len(sentences) / ours, 1),
        "transformer_sentences_per_s": round(len(sentences) / theirs, 1),
    }
    result["speedup_stsb"] = round(ratio, 2)

    words = dataset_path("wikitext-2", "train").read_text(encoding="utf-8").split()
    texts = {tokens: long_text(lm, words, tokens) for tokens in (1000, 2000, 4000)}
    lm.encode([texts[4000]] * LONG_COPIES)  # our largest call, before the transformer's
    result["peak_rss_mb_before_transformer_long_texts"] = peak_rss_mb()
    long = {}
    for tokens, text in texts.items():
        ids = lm.tokenizer.encode(text)
        for copies, label in ((1, "alone"), (LONG_COPIES, f"{LONG_COPIES}_per_call")):
            t_ours, t_theirs, ratio = side_by_side(
                args.rounds,
                lambda text=text, copies=copies: lm.encode([text] * copies),
                lambda ids=ids, copies=copies: transformer_encode(transformer, [ids] * copies),
            )
            long.setdefault(tokens, {})[label] = {
                "ours_s_per_text": round(t_ours / copies, 4),
                "transformer_s_per_text": round(t_theirs / copies, 4),
                "speedup": round(ratio, 2),
            }
    result["long_texts"] = long
    # a bidirectional model cannot stream (its backward half reads from the end): its forward
    # half streams, as a user would stream it
    forward = lm if lm.backward is None else LanguageModel(lm.model, lm.tokenizer)
    result["stream_model"] = "the model" if lm.backward is None else "its forward half"
    result.update(stream_cost(forward, words, args.stream_tokens, args.rounds))
    emit(result)


if __name__ == "__main__":
    run(main)
