import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rnnembed.cli import main


def run(capsys, *argv):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_help_lists_every_command_with_a_description(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("tokenize", "datasets", "train", "eval", "generate"):
        assert command in out


def test_tokenize_writes_a_tokenizer_and_reports(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat\nthe dog ran\n", encoding="utf-8")
    out_path = tmp_path / "tok.json"
    code, out, _ = run(
        capsys, "tokenize", str(corpus), "--kind", "word", "--out", str(out_path), "--json"
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["vocab_size"] == 7 and summary["tokens"] == 8
    assert out_path.is_file()


def test_a_tokenizer_file_serves_training_and_the_ngram(tmp_path, capsys, small_corpus):
    train = str(small_corpus[0])
    tok = str(tmp_path / "tok.json")
    assert run(capsys, "tokenize", train, "--kind", "word", "--out", tok)[0] in (0, None)
    model = tmp_path / "m"
    code, _, err = run(
        capsys, "train", train, "--out", str(model), "--tokenizer", tok, "--epochs", "0.05",
        "--hidden", "32", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code in (0, None), err
    assert (model / "tokenizer.json").read_text() == Path(tok).read_text()  # not retrained
    code, _, err = run(
        capsys, "train", train, "--out", str(model), "--tokenizer", tok, "--epochs", "0.05",
        "--hidden", "32", "--device", "cpu", "--quiet", "--resume",
    )  # fmt: skip
    assert code in (0, None), err  # the run's own command: the same tokenizer, no change
    for spec in (tok, str(model)):  # a tokenizer file, or a model folder's
        code, out, _ = run(
            capsys, "eval", train, train, "--ngram", "2", "--tokenizer", spec, "--json"
        )
        assert code in (0, None) and json.loads(out)["tokens"] > 0
    for argv, said in [
        (("eval", str(model), train, "--tokenizer", "char"), "--tokenizer applies with --ngram"),
        (("eval", train, train, "--ngram", "0"), "n-gram order must be 1 to 5, not 0"),
        (
            (
                "train",
                train,
                "--out",
                str(tmp_path / "m2"),
                "--tokenizer",
                tok,
                "--vocab-size",
                "500",
            ),
            "caps a tokenizer trained here",
        ),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 1 and said in err and "Traceback" not in err


def test_user_errors_print_a_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    code, out, err = run(capsys, "tokenize", str(bad), "--out", str(tmp_path / "t.json"))
    assert code == 1
    assert "error:" in err and "--encoding cp1252" in err and "Traceback" not in err + out
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("signal, code", [(KeyboardInterrupt, 130), (SystemExit(143), 143)])
def test_a_stopped_training_says_how_to_go_on(
    tmp_path, small_corpus, capsys, monkeypatch, signal, code
):
    """Ctrl-C, or SIGTERM (main's handler raises SystemExit(143))."""
    from rnnembed import training

    def stopped(self):
        raise signal

    monkeypatch.setattr(training.Trainer, "run", stopped)
    train, _ = small_corpus
    out = tmp_path / "[m]"  # printed as written, not read as markup
    argv = ["train", str(train), "--out", str(out), "--tokenizer", "char", "--hidden", "16"]
    exit_code, _, err = run(capsys, *argv)
    assert exit_code == code and "Traceback" not in err
    assert f"stopped: the run in {out} is kept; the same command with --resume goes on" in err


def test_train_eval_generate_from_the_command_line(tmp_path, small_corpus, capsys):
    train, valid = small_corpus
    out = tmp_path / "model"
    code, stdout, _ = run(
        capsys,
        "train",
        str(train),
        "--valid",
        str(valid),
        "--out",
        str(out),
        "--tokenizer",
        "char",
        "--layers",
        "1",
        "--hidden",
        "32",
        "--batch-size",
        "8",
        "--bptt",
        "16",
        "--epochs",
        "0.3",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["steps"] > 0 and summary["stopped"] == "budget"
    code, stdout, _ = run(capsys, "eval", str(out), str(valid), "--device", "cpu", "--json")
    scores = json.loads(stdout)
    assert code == 0 and set(scores) >= {"tokens", "loss", "perplexity", "bits_per_char"}
    # training scores its validation text in 16 rows side by side, evaluate a short one in one
    assert scores["loss"] == pytest.approx(summary["valid_loss"], rel=1e-3)
    code, first, _ = run(
        capsys, "generate", str(out), "--prompt", "The", "--max-tokens", "20", "--seed", "1"
    )
    code2, second, _ = run(
        capsys, "generate", str(out), "--prompt", "The", "--max-tokens", "20", "--seed", "1"
    )
    assert code == code2 == 0 and first == second and first.startswith("The")
    from rnnembed.language_model import LanguageModel  # printed piece by piece, as drawn

    assert first == LanguageModel.load(out).generate("The", max_tokens=20, seed=1) + "\n"
    for command in (["generate", str(out)], ["eval", "--ngram", "3", str(train), str(valid)]):
        code, _, err = run(capsys, *command, "--device", "gpu0")  # also where no model is loaded
        assert code == 1 and "unknown device 'gpu0'" in err and "Traceback" not in err


def test_ngram_baseline_from_the_command_line(tmp_path, small_corpus, capsys):
    train, valid = small_corpus
    code, stdout, _ = run(capsys, "eval", "--ngram", "3", str(train), str(valid), "--json")
    assert code == 0
    assert json.loads(stdout)["perplexity"] > 1


def test_eval_errors_are_one_clear_line(tmp_path, capsys):
    code, out, err = run(capsys, "eval", str(tmp_path / "no-model"), str(tmp_path / "x.txt"))
    assert code == 1 and "no such model folder" in err and "Traceback" not in err


def test_serve_refuses_bad_limits_before_it_starts(tmp_path, capsys, monkeypatch):
    code, out, err = run(capsys, "serve", str(tmp_path), "--max-queue", "0")
    assert code == 1 and "max_queue must be at least 1, not 0" in err
    assert "Traceback" not in err + out
    code, _, err = run(capsys, "serve", str(tmp_path), "--port", "70000")
    assert code == 2 and "--port" in err
    for key, problem in (("", "the API key is empty"), (" secret ", "holds a space")):
        code, out, err = run(capsys, "serve", str(tmp_path), "--api-key", key)
        assert code == 1 and problem in err and "Traceback" not in err + out
    monkeypatch.setenv("RNNEMBED_API_KEY", "")  # RNNEMBED_API_KEY=${SECRET}, the secret unset
    code, _, err = run(capsys, "serve", str(tmp_path))
    assert code == 1 and "the API key is empty" in err


def test_output_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat\n", encoding="utf-8")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"rnnembed_version": "0.1.0"}', encoding="utf-8")
    (model / "tokenizer.json").write_text("{}", encoding="utf-8")
    weights = model / "model.safetensors"
    weights.write_bytes(b"weights")
    settings = tmp_path / "settings.json"  # a user's JSON file, not a tokenizer
    settings.write_text('{"name": "mine"}', encoding="utf-8")
    cases = [
        (["tokenize", str(corpus), "--out", str(tmp_path / "folder")], "is a folder"),
        (["tokenize", str(corpus), "--out", str(corpus / "t.json")], "c.txt is a file"),
        (["embed", "no-model", str(corpus), "--out", str(corpus)], "is one of the inputs"),
        (["tokenize", str(corpus), "--out", str(corpus)], "is one of the inputs"),
        (["train", str(corpus), "--out", str(corpus / "m")], "c.txt is a file"),
        # a slip in --out must not write over a text or a model's weights
        (["tokenize", str(tmp_path), "--out", str(weights)], "does not end in .json"),
        (["embed", "no-model", str(corpus), "--out", str(weights)], "does not end in .npy"),
        (["tokenize", str(corpus), "--out", str(model / "tokenizer.json")], "is a model folder"),
        (["tokenize", str(corpus), "--out", str(settings)], "is not an rnnembed tokenizer"),
        (["train", str(corpus), "--out", str(settings)], "is a file; --out names the folder"),
        (
            ["train", str(corpus), "--out", str(tmp_path / "m"), "--tokenizer", "/nope/dir"],
            "'/nope/dir' is no tokenizer kind (char, word, bpe), model folder or .json file",
        ),
        (  # a model folder's name mistyped is not taken for an unknown kind
            ["train", str(corpus), "--out", str(tmp_path / "m"), "--tokenizer", "my-modl"],
            "'my-modl' is no tokenizer kind (char, word, bpe), model folder or .json file",
        ),
        (  # named as what it is: not the training corpus
            ["train", str(corpus), "--out", str(tmp_path / "m"), "--valid", str(blank)],
            f"no text in {blank}; give files",
        ),
        (
            ["train", str(corpus), "--out", str(tmp_path / "m"), "--epochs", "1e308"],
            "epochs must be above 0 and at most 1,000,000",
        ),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1 and message in err and "Traceback" not in err + out
    assert corpus.read_text(encoding="utf-8") == "the cat sat\n"
    assert weights.read_bytes() == b"weights"
    assert (model / "tokenizer.json").read_text(encoding="utf-8") == "{}"
    assert settings.read_text(encoding="utf-8") == '{"name": "mine"}'
    assert not (tmp_path / "m").exists()


def test_user_text_is_printed_as_written_not_read_as_markup(tmp_path, capsys):
    from rich.console import Console

    from rnnembed.cli import _hits_table
    from rnnembed.store import Hit

    code, _, err = run(capsys, "tokenize", str(tmp_path / "[/x].txt"), "--out", "t.json")
    assert code == 1 and "[/x].txt" in err  # rich would have raised on the stray closing tag
    hit = Hit(id="1", text="use list[int] and a[i] [/bold]", score=1.0, source="[red]a.txt:1")
    console = Console(width=200, record=True)
    console.print(_hits_table([hit]))
    shown = console.export_text()
    assert "use list[int] and a[i] [/bold]" in shown and "[red]a.txt:1" in shown


def test_serve_refuses_a_port_in_use_before_it_opens_a_store(tmp_path, capsys):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        db = tmp_path / "fresh.db"
        code, _, err = run(capsys, "serve", str(tmp_path), "--db", str(db), "--port", port)
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err and not db.exists()


def test_out_of_memory_is_one_line_and_other_errors_still_surface(capsys, monkeypatch):
    cpu = (
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 160000000000 bytes. Error code 12 (Cannot allocate memory)"
    )
    said = "(DefaultCPUAllocator: can't allocate memory: you tried to allocate 160000000000 bytes"
    for raised, detail in ((RuntimeError(cpu), said), (MemoryError(), "(MemoryError)")):

        def fail(*args, raised=raised):
            raise raised

        monkeypatch.setattr("rnnembed.datasets.find_dataset", fail)
        code, out, err = run(capsys, "datasets")
        assert code == 1 and "Traceback" not in out + err
        assert err.startswith(f"error: out of memory {detail}") and "--device cpu" in err

    def bug(*args):
        raise RuntimeError("expected all tensors to be on the same device")

    monkeypatch.setattr("rnnembed.datasets.find_dataset", bug)
    with pytest.raises(RuntimeError, match="same device"):  # not dressed up as a user error
        main(["datasets"])


def test_main_runs_in_a_thread_where_signals_cannot_be_set(capsys):
    codes = []

    def call():
        try:
            main(["datasets", "--json"])
        except SystemExit as done:
            codes.append(done.code)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert codes == [0] and json.loads(capsys.readouterr().out)["datasets"]


def test_jieba_loading_its_dictionary_stays_off_stderr():
    """Milvus Lite's Chinese analyzer imports jieba, whose import set its logger to DEBUG after
    the CLI had quieted it (a fresh process: jieba imported once, as in a command)."""
    code = (
        "from rnnembed import cli; cli._setup_logging(False); "
        "import jieba; jieba.Tokenizer().initialize()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert "prefix dict" not in done.stderr and "Loading model" not in done.stderr, done.stderr
