import json
import os
import platform
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import kill_at_first_checkpoint, train_command
from rnnembed import RnnembedError, training
from rnnembed.language_model import LanguageModel
from rnnembed.model import CELLS, ModelConfig, RecurrentLM
from rnnembed.tokenizer import Tokenizer
from rnnembed.training import (
    CHECKPOINT,
    MALLOC_SETTINGS,
    TrainConfig,
    choose_defaults,
    keep_freed_memory,
    lr_factor,
)

TINY = {"layers": 1, "hidden": 32, "batch_size": 8, "bptt": 16, "lr": 1e-2}


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_learns(tmp_path, small_corpus, cell):
    train, valid = small_corpus
    lm = LanguageModel.train(
        [train], tmp_path / cell, valid=[valid], tokenizer="char", cell=cell, epochs=2, **TINY
    )
    *records, final = [json.loads(line) for line in (tmp_path / cell / "metrics.jsonl").open()]
    assert len(records) == 10 and final["final"]
    assert records[-1]["valid_loss"] < records[0]["valid_loss"] - 0.2
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.2
    assert lm.last_result.valid_loss == final["valid_loss"]
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training_curve.png",
        CHECKPOINT,
    ):
        assert (tmp_path / cell / name).is_file()


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_an_adaptive_softmax_under_bf16_autocast(cell):
    config = ModelConfig(vocab_size=60, cell=cell, hidden=16, softmax="adaptive", cutoffs=[10, 30])
    model = RecurrentLM(config)
    model.set_frequencies(torch.arange(60, 0, -1))
    ids = torch.randint(0, 60, (4, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = model(ids[:, :-1], logits=False, targets=ids[:, 1:]).nll
    nll.mean().backward()
    assert torch.isfinite(nll).all() and nll.shape == (4, 11) and nll.dtype == torch.float32
    assert all(p.grad is not None for p in model.rnns.parameters())


def test_minutes_budget_stops_the_run(tmp_path, small_corpus):
    train, _ = small_corpus
    lm = LanguageModel.train([train], tmp_path / "m", tokenizer="char", minutes=0.03, **TINY)
    result = lm.last_result
    assert result.stopped == "budget" and result.steps > 0
    # the run spends its 1.8 s rather than stopping at once; it ends a little early by design
    # (it keeps room for the final evaluation), so the bound is loose, not a timing
    assert result.seconds >= 0.5 * 1.8


def test_a_diverging_run_says_so_and_leaves_no_folder(tmp_path, small_corpus):
    train, valid = small_corpus
    options = {**TINY, "lr": 1000.0, "epochs": 2}
    with pytest.raises(RnnembedError, match=r"training diverged: .* nan .*lower --lr"):
        LanguageModel.train([train], tmp_path / "m", valid=[valid], tokenizer="char", **options)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("kind", "vocab", "minutes", "hidden", "streams", "softmax", "dropout"),
    [
        ("bpe", 8000, 10, 384, 64, "full", 0.3),
        ("bpe", 8000, 30, 384, 64, "full", 0.4),  # embedding models keep the fast shape
        ("word", 10000, 10, 384, 64, "adaptive", 0.3),
        ("word", 10000, 30, 640, 32, "adaptive", 0.4),
        ("char", 323, 30, 512, 16, "full", 0.1),  # Tiny Shakespeare
        ("char", 6660, 10, 384, 64, "full", 0.3),  # Chinese characters: a subword-sized vocab
    ],
)
def test_defaults_follow_the_tokenizer_and_budget(
    kind, vocab, minutes, hidden, streams, softmax, dropout
):
    config = choose_defaults(TrainConfig(minutes=minutes), kind, vocab)
    picked = (config.hidden, config.batch_size, config.softmax, config.dropout_output)
    assert picked == (hidden, streams, softmax, dropout)
    assert config.tie_weights == (softmax == "full")
    assert choose_defaults(TrainConfig(minutes=minutes, hidden=200), kind, vocab).hidden == 200
    assert config.layers == 2
    both_ways = choose_defaults(TrainConfig(minutes=minutes, bidirectional=True), kind, vocab)
    assert (both_ways.layers, both_ways.hidden) == (1, hidden)  # two directions, one layer each


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_training_keeps_freed_memory_for_reuse_on_glibc(monkeypatch):
    for name in MALLOC_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert keep_freed_memory.__wrapped__()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")  # the user's own setting wins
    assert not keep_freed_memory.__wrapped__()


def test_schedule_warms_up_then_decays():
    config = TrainConfig(warmup=0.1, final_lr=0.05)
    factors = [lr_factor(config, p / 100) for p in range(101)]
    assert factors[0] < 0.01 and abs(factors[10] - 1) < 1e-9
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert abs(factors[-1] - 0.05) < 1e-9
    assert lr_factor(TrainConfig(optimizer="sgd"), 0.5) == 1.0


def test_an_existing_folder_is_not_overwritten(tmp_path, small_corpus):
    train, _ = small_corpus
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RnnembedError, match="--resume"):
        LanguageModel.train([train], out, tokenizer="char", epochs=1, **TINY)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(RnnembedError, match="nothing to resume"):
        LanguageModel.train([train], tmp_path / "nothing", resume=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"minutes": -1}, "minutes must be above 0 and at most 1,000,000, not -1"),
        ({"epochs": 0}, "epochs must be above 0"),
        ({"lr": -1e-3}, "lr must be at least 0"),
        ({"layers": 1000}, "layers must be at most 100, not 1000"),
        ({"dropout_hidden": 1.0}, "dropout_hidden must be from 0 to below 1"),
        ({"warmup": float("nan")}, "warmup must be a finite number from 0 to 1, not nan"),
        ({"minutes": float("inf")}, "minutes must be a finite number above 0 and at most"),
        ({"cell": "transformer"}, "unknown cell 'transformer'; choose one of lstm, gru, elman"),
        ({"optimizer": "lion"}, "unknown optimizer"),
        ({"device": "gpu0"}, "unknown device 'gpu0'"),
        ({"hidden": "64"}, "hidden must be int, not '64'"),
        ({"bidirectional": "no"}, "bidirectional must be bool, not 'no'"),
        ({"minutes": 1, "epochs": 1}, "give minutes or epochs, not both"),
        ({"resume": "no"}, "resume must be True or False, not 'no'"),  # "no" would mean yes
        ({"vocab_size": "500"}, "vocab_size must be a whole number, not '500'"),
    ],
)
def test_a_bad_option_or_a_tiny_corpus_is_refused_before_anything_is_written(
    tmp_path, small_corpus, options, message
):
    with pytest.raises(RnnembedError, match=message):
        LanguageModel.train([small_corpus[0]], tmp_path / "m", tokenizer="char", **options)
    assert not (tmp_path / "m").exists()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello\n", encoding="utf-8")
    with pytest.raises(RnnembedError, match="the corpus has 5 tokens, too few for a batch of 8"):
        LanguageModel.train([tiny], tmp_path / "m", tokenizer="char", minutes=1, batch_size=8)
    assert not (tmp_path / "m").exists()


def test_config_values_become_json_types_and_wrong_types_are_refused():
    config = TrainConfig(
        layers=np.int64(1), bidirectional=np.True_, lr=np.float32(0.5), cutoffs=(100, 500)
    )
    assert json.loads(json.dumps(config.to_dict()))["cutoffs"] == [100, 500]
    assert type(config.layers) is int and config.bidirectional is True
    with pytest.raises(RnnembedError, match="layers must be int, not '2'"):
        ModelConfig(vocab_size=10, layers="2")


def test_a_model_too_big_for_memory_is_refused_before_anything_is_written(
    tmp_path, small_corpus, monkeypatch
):
    train, _ = small_corpus
    monkeypatch.setattr(training, "free_memory", lambda device: 10 << 20)  # 10 MiB free
    with pytest.raises(RnnembedError, match=r"parameters and needs at least .* GiB to train"):
        LanguageModel.train([train], tmp_path / "m", tokenizer="char", hidden=512, layers=2)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("made", [True, False])
def test_a_run_failing_before_it_saves_weights_leaves_its_folder_as_found(
    tmp_path, small_corpus, monkeypatch, made
):
    train, _ = small_corpus
    out = tmp_path / "new" / "m" if made else tmp_path / "m"
    if not made:
        out.mkdir()  # the user's own empty folder stays
    with monkeypatch.context() as patch:

        def run_out_of_memory(self):
            raise RuntimeError("CUDA out of memory. Tried to allocate 32.00 GiB")

        patch.setattr(training.Trainer, "run", run_out_of_memory)
        with pytest.raises(RuntimeError, match="out of memory"):
            LanguageModel.train([train], out, tokenizer="char", epochs=1, hidden=512)
    assert out.exists() is not made and not (out.exists() and any(out.iterdir()))
    assert not (tmp_path / "new").exists()  # nor the parent it made
    LanguageModel.train([train], out, tokenizer="char", epochs=0.2, **TINY)  # smaller, same --out
    interrupted = tmp_path / "interrupted"
    with monkeypatch.context() as patch:

        def interrupt(self):
            raise KeyboardInterrupt

        patch.setattr(training.Trainer, "run", interrupt)
        with pytest.raises(KeyboardInterrupt):
            LanguageModel.train([train], interrupted, tokenizer="char", epochs=1, **TINY)
    assert (interrupted / "config.json").is_file()  # Ctrl-C: kept for --resume


def test_a_run_stopped_as_it_started_says_so(tmp_path, small_corpus, monkeypatch):
    """Stopped between its settings and its tokenizer (a kill), a run has nothing to resume:
    both a new run there and --resume say so and what to do, and clear nothing themselves."""
    train, _ = small_corpus
    out = tmp_path / "m"
    with monkeypatch.context() as patch:

        def killed(self, path):
            raise KeyboardInterrupt

        patch.setattr(Tokenizer, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            LanguageModel.train([train], out, tokenizer="char", epochs=0.2, **TINY)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    for resume in (False, True):
        with pytest.raises(RnnembedError, match="stopped as it started.*delete the folder"):
            LanguageModel.train([train], out, resume=resume, tokenizer="char", epochs=0.2)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    shutil.rmtree(out)
    lm = LanguageModel.train([train], out, tokenizer="char", epochs=0.2, **TINY)
    assert lm.last_result.steps > 0


def test_killed_and_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, small_corpus):
    train, _ = small_corpus
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train_command(train, tmp_path / "whole"), check=True, env=env)

    killed = tmp_path / "killed"
    kill_at_first_checkpoint(train_command(train, killed), killed, env)
    subprocess.run(train_command(train, killed, "--resume"), check=True, env=env)

    whole, resumed = load_file(tmp_path / "whole" / CHECKPOINT), load_file(killed / CHECKPOINT)
    assert set(whole) == set(resumed)
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], atol=1e-5, rtol=0)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").open()]
    assert steps == [
        json.loads(line)["step"] for line in (tmp_path / "whole" / "metrics.jsonl").open()
    ]


def test_a_damaged_checkpoint_names_the_way_out_and_that_way_works(tmp_path, small_corpus):
    train, _ = small_corpus
    out = tmp_path / "run"
    LanguageModel.train([train], out, tokenizer="char", epochs=0.2, **TINY)
    metrics = out / "metrics.jsonl"
    unfinished = [line for line in metrics.open() if '"final"' not in line]
    metrics.write_text("".join(unfinished), encoding="utf-8")  # as if killed before its end
    checkpoint = out / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(RnnembedError, match="damaged checkpoint .*delete it and pass --resume"):
        LanguageModel.train([train], out, resume=True)
    checkpoint.unlink()
    lm = LanguageModel.train([train], out, resume=True)
    assert lm.last_result.steps > 0 and checkpoint.is_file()


def test_resume_finishes_a_run_stopped_between_its_final_evaluation_and_its_end(
    tmp_path, small_corpus
):
    """Killed after the final record, before the sif statistics were fitted and saved: a
    resume fits and saves them instead of taking the model as finished."""
    train, _ = small_corpus
    out = tmp_path / "run"
    LanguageModel.train([train], out, tokenizer="char", epochs=0.2, **TINY)
    done = LanguageModel.load(out).encode(["the cat sat"])
    weights = load_file(out / "model.safetensors")
    unfitted = {
        k: torch.zeros_like(v) if k.startswith("stats.") and k != "stats.frequencies" else v
        for k, v in weights.items()
    }
    save_file(unfitted, out / "model.safetensors", metadata={"format": "rnnembed"})
    (out / "training_curve.png").unlink()
    with pytest.raises(RnnembedError, match="no corpus statistics for the sif pooling"):
        LanguageModel.load(out).encode(["the cat sat"])
    LanguageModel.train([train], out, resume=True)
    np.testing.assert_allclose(LanguageModel.load(out).encode(["the cat sat"]), done, atol=1e-6)
    assert (out / "training_curve.png").is_file()


def test_resume_takes_the_vocabulary_cap_the_run_was_started_with(tmp_path, small_corpus):
    train, _ = small_corpus
    out = tmp_path / "run"
    lm = LanguageModel.train([train], out, tokenizer="char", vocab_size=2000, epochs=0.2, **TINY)
    assert lm.tokenizer.vocab_size < 2000  # the corpus has fewer characters than the cap
    LanguageModel.train([train], out, resume=True, vocab_size=np.int64(2000))  # numpy's too
    with pytest.raises(RnnembedError, match=r"vocab_size 1000 \(the run's: 2000\)"):
        LanguageModel.train([train], out, resume=True, vocab_size=1000)


def test_resume_refuses_another_corpus(tmp_path, small_corpus):
    train, valid = small_corpus
    out = tmp_path / "run"
    LanguageModel.train([train], out, tokenizer="char", epochs=0.2, **TINY)
    with pytest.raises(RnnembedError, match="corpus differs"):
        LanguageModel.train([valid], out, resume=True)


def test_resume_refuses_changed_settings_and_reads_a_metrics_line_cut_short(tmp_path, small_corpus):
    train, _ = small_corpus
    out = tmp_path / "run"
    LanguageModel.train([train], out, tokenizer="char", epochs=0.2, **TINY)
    with pytest.raises(RnnembedError, match=r"would change: hidden 64 \(the run's: 32\)"):
        LanguageModel.train([train], out, resume=True, hidden=64)
    with pytest.raises(RnnembedError, match=r"would change: layers 0 \(the run's: 1\)"):
        LanguageModel.train([train], out, resume=True, layers=0)  # 0 chose for a new run only
    with pytest.raises(RnnembedError, match=r"tokenizer 'bpe' \(the run's: 'char'\)"):
        LanguageModel.train([train], out, resume=True, tokenizer="bpe")
    with pytest.raises(RnnembedError, match=r"vocab_size 50 \(the run's: 0\)"):  # the default
        LanguageModel.train([train], out, resume=True, vocab_size=50)
    LanguageModel.train([train], out, resume=True, hidden=32, tokenizer="char", vocab_size=0)
    LanguageModel.train([train], out, resume=True, device="cpu")  # where it runs is free
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    saved["train"]["device"] = "cuda:99"  # started on a machine with more GPUs
    (out / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    with pytest.raises(RnnembedError, match="started on device 'cuda:99', which this machine"):
        LanguageModel.train([train], out, resume=True)
    LanguageModel.train([train], out, resume=True, device="auto")
    saved["train"]["device"] = "auto"
    (out / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    with pytest.raises(RnnembedError, match="unknown device 'gpu0'"):
        LanguageModel.train([train], out, resume=True, device="gpu0")
    metrics = out / "metrics.jsonl"
    with metrics.open("a", encoding="utf-8") as f:
        f.write('{"step": 9')  # a run killed as it wrote its last line
    LanguageModel.train([train], out, resume=True)
    metrics.write_text("{bad\n" + metrics.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(RnnembedError, match=r"metrics.jsonl:1: not a JSON record"):
        LanguageModel.train([train], out, resume=True)
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    saved["train"]["optimizer"] = "lion"  # a damaged config is refused, not trained as adamw
    (out / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    with pytest.raises(RnnembedError, match="unknown optimizer 'lion'"):
        LanguageModel.train([train], out, resume=True)
