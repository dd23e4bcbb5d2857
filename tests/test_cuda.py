"""The GPU path: training, loading, scoring, generating and embedding on CUDA, checked against
the CPU. Skipped where no CUDA device is present (CI); run on a GPU machine."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
import torch

from conftest import kill_at_first_checkpoint, train_command
from rnnembed import RnnembedError
from rnnembed.language_model import LanguageModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = {"layers": 2, "hidden": 64, "batch_size": 16, "bptt": 32, "lr": 1e-2}
TEXTS = ["def main():", "The for statement iterates over a sequence.", "x", "a " * 700]


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_training_on_cuda_learns_and_loads_on_the_cpu(tmp_path, small_corpus, cell):
    train, valid = small_corpus
    out = tmp_path / cell
    lm = LanguageModel.train(
        [train], out, valid=[valid], tokenizer="bpe", vocab_size=400, cell=cell, epochs=2,
        device="cuda", **SMALL,
    )  # fmt: skip
    assert lm.device.type == "cuda"
    losses = [json.loads(line)["valid_loss"] for line in (out / "metrics.jsonl").open()]
    assert losses[-1] < math.log(lm.tokenizer.vocab_size) - 1.0  # a uniform guess scores log V
    on_gpu, on_cpu = LanguageModel.load(out), LanguageModel.load(out, device="cpu")
    assert on_gpu.device.type == "cuda"  # auto: the GPU
    lines = valid.read_text(encoding="utf-8").splitlines()[:20]
    assert on_gpu.perplexity(lines) == pytest.approx(on_cpu.perplexity(lines), rel=1e-3)


def test_embeddings_on_cuda_equal_the_cpu_ones_alone_or_in_a_batch(tiny_model_folder):
    on_gpu = LanguageModel.load(tiny_model_folder, device="cuda")
    on_cpu = LanguageModel.load(tiny_model_folder, device="cpu")
    for pooling in ("sif", "mean", "last"):
        batch = on_gpu.encode(TEXTS, pooling=pooling)
        # float32 on both (cuDNN's default TF32 is off while encoding)
        np.testing.assert_allclose(batch, on_cpu.encode(TEXTS, pooling=pooling), atol=1e-5)
        for i, text in enumerate(TEXTS):
            np.testing.assert_allclose(
                on_gpu.encode([text], pooling=pooling)[0], batch[i], atol=1e-5
            )
    assert torch.backends.cudnn.allow_tf32  # the user's setting is back
    stream = on_gpu.stream(pooling="mean")
    for chunk in ("The for state", "ment iterates over ", "a sequence."):
        stream.feed(chunk)
    expected = on_gpu.encode([TEXTS[1]], pooling="mean")[0]
    np.testing.assert_allclose(stream.vector(), expected, atol=1e-5)
    moved = on_cpu.stream(pooling="mean").restore(stream.state())  # a GPU stream goes on on a CPU
    stream.feed(" Again.")
    moved.feed(" Again.")
    np.testing.assert_allclose(moved.vector(), stream.vector(), atol=1e-5)


def test_a_gpu_this_machine_lacks_is_a_clear_error(tiny_model_folder):
    with pytest.raises(RnnembedError, match="numbered from 0"):
        LanguageModel.load(tiny_model_folder, device=f"cuda:{torch.cuda.device_count()}")


def test_generation_on_cuda_is_deterministic_under_a_seed(tiny_model_folder):
    lm = LanguageModel.load(tiny_model_folder, device="cuda")
    first = lm.generate("The ", max_tokens=30, seed=3, top_k=20)
    assert first == lm.generate("The ", max_tokens=30, seed=3, top_k=20)


def test_a_long_prompt_on_cuda_continues_as_on_the_cpu(tiny_model_folder):
    on_gpu = LanguageModel.load(tiny_model_folder, device="cuda")
    on_cpu = LanguageModel.load(tiny_model_folder, device="cpu")
    prompt = "The for statement iterates over a sequence. " * 150  # over 512 tokens: windows
    assert len(on_gpu.tokenizer.encode(prompt)) > 1000
    greedy = on_gpu.generate(prompt, max_tokens=20, temperature=0)
    assert greedy.startswith(prompt) and greedy == on_cpu.generate(prompt, 20, temperature=0)


def test_a_run_killed_on_cuda_resumes_on_the_cpu(tmp_path, small_corpus):
    train, _ = small_corpus
    out = tmp_path / "run"
    kill_at_first_checkpoint(train_command(train, out, "--device", "cuda"), out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert not any(record.get("final") for record in records)  # killed mid-run
    subprocess.run(train_command(train, out, "--resume", "--device", "cpu"), check=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert records[-1]["final"] and records[-1]["step"] > records[0]["step"]
    lm = LanguageModel.load(out, device="cpu")
    assert records[-1]["valid_loss"] < math.log(lm.tokenizer.vocab_size) - 1.0
    finished = LanguageModel.train([train], out, resume=True, device="cuda")
    assert finished.device.type == "cuda"  # a finished run resumed is on the device asked for
