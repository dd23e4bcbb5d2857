import json

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
    for command in ("tokenize", "datasets"):
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


def test_user_errors_print_a_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    code, out, err = run(capsys, "tokenize", str(bad), "--out", str(tmp_path / "t.json"))
    assert code == 1
    assert "error:" in err and "--encoding cp1252" in err and "Traceback" not in err + out
    assert not (tmp_path / "t.json").exists()
