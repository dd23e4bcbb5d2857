import pytest

from rnnembed import RnnembedError, quickstart
from rnnembed.cli import main
from rnnembed.quickstart import MADE, MARKER, documentation_sections, prepare_folder


def test_the_corpus_is_pythons_own_documentation():
    sections = dict(documentation_sections())
    assert len(sections) > 1000
    assert "topic:for" in sections and 'The "for" statement' in sections["topic:for"]
    assert any(name.startswith("json") for name in sections)  # stdlib docstrings via ast


def test_only_a_quickstart_folder_is_cleared(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("do not delete")
    with pytest.raises(RnnembedError, match="not made by the quickstart"):
        prepare_folder(mine)
    assert (mine / "thesis.txt").read_text() == "do not delete"
    ours = tmp_path / "ours"
    prepare_folder(ours)
    (ours / "model").mkdir()  # an earlier run's
    (ours / "index.db").mkdir()
    prepare_folder(ours)
    assert sorted(p.name for p in ours.iterdir()) == [MARKER]
    (ours / "model").mkdir()
    (ours / "my-notes").mkdir()  # the user's own, beside the earlier run's
    (ours / "my-notes" / "n.txt").write_text("keep")
    with pytest.raises(RnnembedError, match=r"did not make \(my-notes\)"):
        prepare_folder(ours)
    assert (ours / "my-notes" / "n.txt").read_text() == "keep" and (ours / "model").is_dir()
    (ours / "my-notes" / "n.txt").unlink()
    (ours / "my-notes").rmdir()
    # inside the folders a run makes, the user's files are refused too; a run's own are not
    (ours / "corpus").mkdir()
    for name in ("train.txt", "my_notes.txt"):
        (ours / "corpus" / name).write_text("text")
    for name in ("config.json", ".model.safetensors.x1y2.tmp", "README-mine.md"):
        (ours / "model" / name).write_text("{}")
    (ours / "model" / "checkpoint").mkdir()
    (ours / "model" / "checkpoint" / "checkpoint.safetensors").write_text("")
    (ours / "model" / "checkpoint" / ".tmpJ6VQEJ").write_text("")  # safetensors' own, cut short
    (ours / "model" / ".tmpQ1w2E3").write_text("")  # and beside the weights
    (ours / "model" / "checkpoint" / "mine.txt").write_text("")
    (ours / "corpus" / ".tmpABC123").write_text("")  # no weights are written there
    (ours / "model" / ".thesis.tmp").mkdir()  # a folder, not a write cut short
    (ours / ".draft.tmp").write_text("")  # no run writes one at the top
    with pytest.raises(RnnembedError, match="did not make") as refused:
        prepare_folder(ours)
    names = ".draft.tmp, corpus/.tmpABC123, corpus/my_notes.txt, model/.thesis.tmp, "
    names += "model/README-mine.md, "
    assert f"({names}model/checkpoint/mine.txt)" in str(refused.value)
    assert (ours / "corpus" / "my_notes.txt").is_file() and (ours / MARKER).is_file()


def test_a_clear_that_fails_names_the_path_and_keeps_the_marker(tmp_path, monkeypatch):
    ours = tmp_path / "ours"
    prepare_folder(ours)
    (ours / "model").mkdir()
    (ours / "model" / "config.json").write_text("{}")

    def refuse(path):
        raise PermissionError(13, "Permission denied", "config.json")

    monkeypatch.setattr(quickstart.shutil, "rmtree", refuse)
    with pytest.raises(RnnembedError, match=r"cannot clear .*model for a new run \(Permission"):
        prepare_folder(ours)
    assert (ours / MARKER).is_file()  # so the next run, permissions fixed, may clear it
    monkeypatch.undo()
    prepare_folder(ours)
    assert sorted(p.name for p in ours.iterdir()) == [MARKER]


def test_a_budget_too_large_to_plan_is_refused_before_the_folder_is_cleared(tmp_path, capsys):
    ours = tmp_path / "ours"
    prepare_folder(ours)
    (ours / "model").mkdir()
    for minutes in ("1e308", "2e6"):
        with pytest.raises(SystemExit) as done:
            main(["quickstart", "--folder", str(ours), "--minutes", minutes])
        err = capsys.readouterr().err
        assert done.value.code == 1 and "minutes must be above 0 and at most 1,000,000" in err
        assert "Traceback" not in err and (ours / "model").is_dir()


def test_the_quickstart_runs_end_to_end(tmp_path, capsys, monkeypatch):
    # the whole path on a tenth of the documentation, to keep the suite fast
    every = list(documentation_sections())
    monkeypatch.setattr(quickstart, "documentation_sections", lambda: iter(every[::10]))
    with pytest.raises(SystemExit) as done:
        main(["quickstart", "--folder", str(tmp_path / "qs"), "--minutes", "0.05", "--quiet"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "held-out perplexity" in out and "sample" in out
    for query in ("read a file line by line", "sort a list in place"):
        assert query in out
    assert "rnnembed train my_docs/" in out
    assert (tmp_path / "qs" / "index.db").is_dir() and (tmp_path / "qs" / "model").is_dir()
    assert {p.name for p in (tmp_path / "qs").iterdir()} == MADE  # so a rerun may clear them
    assert quickstart._not_made(tmp_path / "qs") == []
