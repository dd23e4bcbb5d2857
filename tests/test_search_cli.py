import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from rnnembed import cli
from rnnembed.chunking import read_chunks
from rnnembed.cli import main
from rnnembed.language_model import LanguageModel


def run(capsys, *argv):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def model(tiny_model_folder):
    return tiny_model_folder


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    """A folder with docs/a.txt (120 lines, a blank line among them) and notes/b.md (3 lines)."""
    train, _ = small_corpus
    folder = tmp_path_factory.mktemp("files")
    (folder / "docs").mkdir()
    (folder / "notes").mkdir()
    lines = train.read_text(encoding="utf-8").splitlines()[:120]
    (folder / "docs" / "a.txt").write_text(
        "\n".join(lines[:60] + [""] + lines[60:]) + "\n", encoding="utf-8"
    )
    (folder / "notes" / "b.md").write_text(
        "Remember the zeppelin tickets.\nCall the plumber. Then the bank.\nDone.\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture(scope="module")
def db(model, corpus, tmp_path_factory):
    """A database with the corpus indexed by lines."""
    path = tmp_path_factory.mktemp("db") / "search.db"
    with pytest.raises(SystemExit) as exit_info:
        main(["index", str(model), str(corpus), "--db", str(path), "--quiet"])
    assert exit_info.value.code == 0
    return path


def test_help_lists_the_search_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(c in out for c in ("embed", "index", "search"))


@pytest.mark.parametrize("backend", ["milvus-lite", "milvus-server"])
def test_indexing_again_adds_nothing_and_prune_drops_what_the_files_no_longer_hold(
    capsys, request, model, corpus, tmp_path, backend
):
    files = tmp_path / "files"
    shutil.copytree(corpus, files)
    if backend == "milvus-lite":
        where = ["--db", tmp_path / "again.db"]
    else:  # a Milvus server by URI: the same commands, each process opening it anew
        where = ["--db", request.getfixturevalue("milvus_server"), "--collection", "again"]

    def index(*options):
        code, out, err = run(capsys, "index", model, files, *where, "--json", *options)
        assert code == 0 and "Traceback" not in err, err
        return json.loads(out)

    lines = len(list(read_chunks([files])))
    summary = index(files / "docs")  # named again: its files are read once
    assert summary["chunks"] == summary["added"] == summary["rows"] == lines == 123
    assert summary["already_present"] == 0 and "removed" not in summary
    summary = index("--prune")
    assert summary["added"] == summary["removed"] == 0 and summary["already_present"] == lines
    hits = search(capsys, model, where[1], "zeppelin", "--mode", "bm25", *where[2:])
    assert [h["text"] for h in hits] == ["Remember the zeppelin tickets."]

    a = files / "docs" / "a.txt"
    text = a.read_text(encoding="utf-8").splitlines()
    a.write_text("\n".join(["A new first line about walruses.", *text[1:]]) + "\n", "utf-8")
    (files / "notes" / "b.md").unlink()  # deleted from the folder: its 3 chunks go
    summary = index()  # without --prune, the old chunks stay
    assert (summary["added"], summary["rows"]) == (1, lines + 1)
    summary = index("--prune")
    assert (summary["added"], summary["removed"], summary["rows"]) == (0, 4, lines - 3)
    assert search(capsys, model, where[1], "zeppelin", "--mode", "bm25", *where[2:]) == []
    hits = search(capsys, model, where[1], "walruses", "--mode", "bm25", *where[2:])
    assert [h["text"] for h in hits] == ["A new first line about walruses."]


def test_prune_works_on_the_current_folder(capsys, model, corpus, tmp_path, monkeypatch):
    shutil.copytree(corpus / "notes", tmp_path / "here")
    (tmp_path / "here" / "kept.txt").write_text("A line that stays.\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "here")  # its files are recorded as "b.md:1", no "./" prefix
    where = ["--db", str(tmp_path / "here.db"), "--json"]
    code, out, err = run(capsys, "index", model, ".", *where)
    assert code == 0 and json.loads(out)["rows"] == 4, err
    Path("b.md").unlink()
    code, out, _ = run(capsys, "index", model, ".", *where, "--prune")
    assert code == 0 and (json.loads(out)["removed"], json.loads(out)["rows"]) == (3, 1)


def test_index_prints_a_readable_summary(capsys, model, corpus, db):
    code, out, _ = run(capsys, "index", model, corpus / "notes", "--db", db)
    assert code == 0 and "already_present" in out and "3" in out


@pytest.mark.parametrize("chunk", ["paragraphs", "sentences"])
def test_index_by_paragraphs_or_sentences(capsys, model, corpus, tmp_path, chunk):
    notes = corpus / "notes"
    code, out, err = run(
        capsys, "index", model, notes, "--db", tmp_path / "x.db", "--chunk", chunk, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["added"] == {"paragraphs": 1, "sentences": 4}[chunk]


def search(capsys, model, db, query, *options):
    code, out, err = run(capsys, "search", model, query, "--db", db, "--json", *options)
    assert code == 0, err
    result = json.loads(out)
    assert result["query"] == query
    return result["hits"]


def test_search_in_every_mode(capsys, model, db):
    hits = search(capsys, model, db, "Remember the zeppelin tickets.", "-k", "3")
    assert len(hits) == 3 and hits[0]["text"] == "Remember the zeppelin tickets."
    assert set(hits[0]) == {"id", "text", "score", "source", "metadata"}
    assert hits[0]["source"].endswith("b.md:1")
    hits = search(capsys, model, db, "zeppelin", "--mode", "bm25")
    assert [h["text"] for h in hits] == ["Remember the zeppelin tickets."]
    hits = search(capsys, model, db, "zeppelin", "--mode", "hybrid", "-k", "5")
    assert len(hits) == 5 and hits[0]["text"] == "Remember the zeppelin tickets."
    hits = search(capsys, model, db, "zeppelin", "--filter", 'source like "%a.txt:%"')
    assert hits and all("a.txt:" in h["source"] for h in hits)


def test_search_prints_a_table_that_fits_the_terminal(capsys, monkeypatch, model, db):
    monkeypatch.setattr(cli.console, "width", 80)
    query = ["search", model, "plumber bank", "--db", db, "--mode", "bm25", "-k", "1"]
    code, out, _ = run(capsys, *query)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    header, *rows = [re.split("[┃│]", line)[1:-1] for line in out.splitlines() if line[0] in "┃│"]
    assert [cell.strip() for cell in header] == ["#", "score", "source", "text"]
    rank, score, source = ("".join(row[i].strip() for row in rows) for i in range(3))
    assert rank == "1" and float(score) > 0 and source.endswith("notes/b.md:2")  # folded
    assert " ".join(row[3].strip() for row in rows).strip() == "Call the plumber. Then the bank."


def test_embed_writes_one_vector_per_line(capsys, model, corpus, tmp_path):
    out_file = tmp_path / "vectors.npy"
    dim = LanguageModel.load(model).dim()  # the default (sif) pooling: states + word vectors
    code, out, err = run(capsys, "embed", model, corpus, "--out", out_file, "--json")
    assert code == 0, err
    assert json.loads(out)["shape"] == [123, dim]
    vectors = np.load(out_file)
    assert vectors.shape == (123, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    lines = [chunk.text for chunk in read_chunks([corpus], "lines")]
    np.testing.assert_allclose(vectors, LanguageModel.load(model).encode(lines), atol=1e-5)
    code, out, _ = run(capsys, "embed", model, corpus / "notes", "--out", out_file)
    assert code == 0 and f"3 × {dim}" in out and np.load(out_file).shape == (3, dim)
    code, out, _ = run(
        capsys, "embed", model, corpus / "notes", "--out", out_file, "--pooling", "mean"
    )
    assert code == 0 and np.load(out_file).shape == (3, 32)


def test_an_index_keeps_the_pooling_it_was_built_with(capsys, model, corpus, tmp_path):
    db = str(tmp_path / "mean.db")
    code, _, err = run(capsys, "index", model, corpus / "notes", "--db", db, "--pooling", "mean")
    assert code == 0, err
    code, out, err = run(capsys, "search", model, "plumber", "--db", db, "-k", "1", "--json")
    assert code == 0, err  # no --pooling: the index's own (mean), not sif
    assert len(json.loads(out)["hits"]) == 1


def test_embed_writes_block_by_block_and_inputs_that_change_are_noticed(
    capsys, model, corpus, tmp_path, monkeypatch
):
    out_file = tmp_path / "vectors.npy"
    code, _, err = run(capsys, "embed", model, corpus, "--out", out_file, "--quiet")
    assert code == 0, err
    whole = np.load(out_file)
    monkeypatch.setattr("rnnembed.embedding.ENCODE_BLOCK", 10)  # 13 blocks, the last of 3
    code, _, err = run(capsys, "embed", model, corpus, "--out", out_file, "--quiet")
    assert code == 0, err
    blocked = np.load(out_file)
    np.testing.assert_allclose(blocked, whole, atol=1e-5)
    passes = []

    def growing(paths, chunk, **read):  # each pass over the inputs finds one line more
        passes.append(chunk)
        return list(read_chunks(paths, chunk, **read))[: 20 + len(passes)]

    monkeypatch.setattr("rnnembed.chunking.read_chunks", growing)
    code, _, err = run(capsys, "embed", model, corpus, "--out", out_file, "--quiet")
    assert code == 1 and "the inputs changed while they were being read; run again" in err
    np.testing.assert_array_equal(np.load(out_file), blocked)  # the earlier file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.npy"]  # no temporary file left
    code, _, err = run(capsys, "index", model, corpus, "--db", tmp_path / "x.db", "--quiet")
    assert code == 1 and "the inputs changed while they were being read" in err


def test_sigterm_unwinds_embed_as_ctrl_c_does(capsys, model, corpus, tmp_path, monkeypatch):
    out_file = tmp_path / "vectors.npy"
    out_file.write_bytes(b"an earlier file")
    monkeypatch.setattr("rnnembed.embedding.ENCODE_BLOCK", 10)
    encode, calls = LanguageModel.encode, []

    def terminated_midway(self, texts, **options):
        calls.append(len(texts))
        if len(calls) == 2:  # `kill PID` arrives while the second block is encoded
            os.kill(os.getpid(), signal.SIGTERM)
        return encode(self, texts, **options)

    monkeypatch.setattr(LanguageModel, "encode", terminated_midway)
    before = signal.getsignal(signal.SIGTERM)
    code, _, _ = run(capsys, "embed", model, corpus, "--out", out_file, "--quiet")
    assert code == 128 + signal.SIGTERM and len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.npy"]  # no temporary file left
    assert out_file.read_bytes() == b"an earlier file"
    assert signal.getsignal(signal.SIGTERM) is before  # main's handler lasts as long as main


def test_a_full_disk_is_a_clear_error_before_the_vectors_are_written(
    capsys, model, corpus, tmp_path, monkeypatch
):
    out_file = tmp_path / "vectors.npy"
    out_file.write_bytes(b"an earlier file")
    sizes = []

    def full(fd, offset, length):  # as posix_fallocate fails on a full disk
        sizes.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    code, _, err = run(capsys, "embed", model, corpus, "--out", out_file, "--quiet")
    assert code == 1 and "No space left on device: free some space, or write the out" in err
    assert sizes and sizes[0] > 128  # the whole file: the header and every vector
    assert "Traceback" not in err and out_file.read_bytes() == b"an earlier file"
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.npy"]  # no temporary file left

    def unsupported(fd, offset, length):  # a file system that cannot reserve: written as before
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    code, _, err = run(capsys, "embed", model, corpus, "--out", out_file, "--quiet")
    assert code == 0, err
    assert np.load(out_file).shape[0] == len(list(read_chunks([corpus], "lines")))


def test_a_weights_file_the_disk_cannot_hold_is_an_oserror(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from rnnembed.atomic import save_tensors

    def full(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space left (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    with pytest.raises(OSError, match="cannot write .*w.safetensors.*os error 28") as raised:
        save_tensors(tmp_path / "w.safetensors", {}, metadata={})
    assert raised.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_a_file_name_that_is_not_utf8_is_refused_before_a_database_is_made(
    capsys, model, corpus, tmp_path
):
    files = tmp_path / "files"
    shutil.copytree(corpus, files)
    (files / os.fsdecode(b"z\xffname.txt")).write_text("A line of text.\n", encoding="utf-8")
    code, out, err = run(capsys, "index", model, files, "--db", tmp_path / "n.db")
    assert code == 1 and "the file's name is not UTF-8 text" in err and "rename" in err
    assert "Traceback" not in out + err and not (tmp_path / "n.db").exists()


def test_an_output_that_cannot_be_created_is_named_as_given(capsys, model, corpus, tmp_path):
    code, _, err = run(capsys, "embed", model, corpus, "--out", "/proc/vectors.npy")
    assert code == 1 and "cannot write /proc/vectors.npy" in err and ".tmp" not in err


def test_user_errors_print_one_line_not_a_traceback(capsys, model, corpus, db, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (("search", model, "x", "--db", tmp_path / "missing.db"), "no such database"),
        (("search", model, "x", "--db", db, "--mode", "fuzzy"), "unknown search mode"),
        (("search", model, "x", "--db", db, "-k", "0"), "k must be"),
        (("search", model, " ", "--db", db), "empty query"),
        (("search", model, "x", "--db", db, "--filter", "source =="), "filter expression"),
        (("search", model, "x", "--db", db, "--pooling", "mean+max"), "rebuild the index"),
        (("search", model, "x", "--db", db, "--collection", "nope"), "no collection 'nope'"),
        (("search", model, "x", "--db", "index.sqlite"), "neither a Milvus Lite"),
        (("search", model, "x", "--db", "http://localhost:1953O"), "not a valid server URI"),
        (("index", model, corpus, "--db", "http://[bad"), "not a valid server URI"),
        (("index", model, corpus, "--db", db, "--collection", "../etc"), "collection name"),
        (("search", model, "x", "--db", db, "--collection", "x" * 300), "collection name"),
        (("index", model, corpus, "--db", db, "--chunk", "words"), "unknown chunk"),
        (("index", tmp_path / "no-model", corpus, "--db", db), "no such model folder"),
        (("embed", model, tmp_path / "nothing.txt", "--out", tmp_path / "v.npy"), "no such file"),
        (("index", model, tmp_path / "empty", "--db", db), "no text in " + str(tmp_path / "empty")),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert "error:" in err and message in err, (argv, err)
        assert "Traceback" not in out + err, argv
    assert not (tmp_path / "v.npy").exists()
