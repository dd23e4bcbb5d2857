import json
import logging
import os
import tracemalloc

import pytest

from conftest import shared_file
from rnnembed import RnnembedError, Tokenizer
from rnnembed.corpus import corpus_files, iter_texts, read_corpus


def test_text_files_give_one_record_per_line_with_sources(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"first line\r\nsecond line\n\nlast")
    records = list(read_corpus([path]))
    assert [r.text for r in records] == ["first line", "second line", "", "last"]
    assert [r.source for r in records] == [f"{path}:{n}" for n in (1, 2, 3, 4)]


def test_folders_are_read_recursively_in_order_skipping_hidden(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "b.txt").write_text("b\n", encoding="utf-8")
    (tmp_path / "sub" / "a.md").write_text("a\n", encoding="utf-8")
    (tmp_path / "sub" / "deeper" / "c.txt").write_text("c\n", encoding="utf-8")
    (tmp_path / ".git" / "config.txt").write_text("hidden\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\0\0")
    assert list(iter_texts([tmp_path])) == ["b", "a", "c"]
    assert [p.name for p in corpus_files([tmp_path])] == ["b.txt", "a.md", "c.txt"]


def test_model_folders_inside_a_corpus_folder_are_not_read_as_text(tmp_path, caplog):
    (tmp_path / "notes.txt").write_text("a note\n", encoding="utf-8")
    model = tmp_path / "model"  # `rnnembed train corpus --out corpus/model`
    (model / "backward").mkdir(parents=True)
    (model / "config.json").write_text('{"rnnembed_version": "0.1.0"}', encoding="utf-8")
    (model / "tokenizer.json").write_text("{}", encoding="utf-8")
    for folder in (model, model / "backward"):
        (folder / "metrics.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    other = tmp_path / "bert-base"  # another library's model folder, with its own notes
    other.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (other / name).write_text("{}", encoding="utf-8")
    (other / "README.md").write_text("a model card\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="rnnembed.corpus"):
        assert list(iter_texts([tmp_path])) == ["a model card", "a note"]
        list(iter_texts([tmp_path]))
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping {model}: an rnnembed model folder, not text"  # said once, not at each read
    ]
    with pytest.raises(RnnembedError, match="no text in .*model; .*model folders are skipped"):
        list(read_corpus([model]))


def test_jsonl_field_and_csv_column(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(d) for d in [{"body": "one", "id": 1}, {"body": "two"}]) + "\n\n",
        encoding="utf-8",
    )
    assert list(iter_texts([jsonl], field="body")) == ["one", "two"]
    with pytest.raises(RnnembedError, match=r"docs.jsonl:1: no text field 'text'.*--field"):
        list(iter_texts([jsonl]))
    table = tmp_path / "rows.csv"
    table.write_text('id,content\n1,"hello, world"\n2,"two\nlines"\n3,three\n', encoding="utf-8")
    records = list(read_corpus([table], column="content"))
    assert [r.text for r in records] == ["hello, world", "two\nlines", "three"]
    assert [r.line for r in records] == [2, 3, 5]
    tsv = tmp_path / "rows.tsv"
    tsv.write_text('text\tlabel\nsome words\t1\n"Hi," she said\t2\n"open\t3\n', encoding="utf-8")
    assert list(iter_texts([tsv])) == ["some words", '"Hi," she said', '"open']  # quotes are text
    with pytest.raises(RnnembedError, match="no column 'text'.*--column"):
        list(iter_texts([table]))
    short = tmp_path / "short.csv"
    short.write_text("id,text\n1,hello\n\n2\n3,world\n", encoding="utf-8")
    with pytest.raises(RnnembedError, match=r"short.csv:4: 1 column\(s\), so no 'text'"):
        list(iter_texts([short]))  # a short row is an error, not a record silently left out
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('text,n\nfine,1\n"open,2\nmore,3\n', encoding="utf-8")
    with pytest.raises(RnnembedError, match=r"unclosed.csv:3: a quote .* never closed"):
        list(iter_texts([unclosed]))  # Python's csv read the rest of the file as one text
    for name, content, line in [
        ("loose.csv", 'text,n\n"a" b,"1\nmore,3\n', 2),  # loose quoting before the open one
        ("header.csv", 'text,"n\nhello,1\n', 1),
    ]:
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(RnnembedError, match=rf"{name}:{line}: a quote .* never closed"):
            list(iter_texts([tmp_path / name]))
    carriage = tmp_path / "carriage.csv"
    carriage.write_bytes(b"text\ra\rb\r")
    with pytest.raises(RnnembedError, match=r"carriage.csv:1: not valid CSV .*line endings"):
        list(iter_texts([carriage]))
    sloppy = tmp_path / "sloppy.csv"
    sloppy.write_text('text\n"a ""b"""\n"two\nlines" and more\n', encoding="utf-8")
    assert list(iter_texts([sloppy])) == ['a "b"', "two\nlines and more"]  # loose, but closed
    numeric = tmp_path / "numeric.jsonl"
    numeric.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(RnnembedError, match="numeric.jsonl:1: field 'text' holds 5, not a string"):
        list(iter_texts([numeric]))


def test_wrong_encoding_names_file_offset_and_fix(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"plain ascii line\nsmart \x93quotes\x94\n")
    with pytest.raises(RnnembedError) as info:
        list(read_corpus([path]))
    message = str(info.value)
    assert str(path) in message and "byte 23" in message and "--encoding cp1252" in message
    assert list(iter_texts([path], encoding="cp1252"))[1] == "smart \u201cquotes\u201d"


def test_rt_polarity_needs_cp1252():
    path = shared_file("senteval/rt-polarity.all")
    with pytest.raises(RnnembedError, match=r"rt-polarity.all: byte \d+ .*--encoding cp1252"):
        list(read_corpus([path]))
    lines = list(iter_texts([path], encoding="cp1252"))
    assert len(lines) == 10_662
    assert all(line[:2] in ("0 ", "1 ") for line in lines)


def test_binary_and_empty_corpora_are_refused(tmp_path):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"header\n\x00\x01\x02")
    with pytest.raises(RnnembedError, match="blob.txt: byte 7 is a NUL byte.*binary"):
        list(read_corpus([binary]))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    with pytest.raises(RnnembedError, match="no text in"):
        list(read_corpus([empty]))
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(RnnembedError, match="no text in"):
        list(read_corpus([folder]))
    many = [empty] * 5
    with pytest.raises(RnnembedError, match=r"empty.txt and 2 more;"):
        list(read_corpus(many))
    with pytest.raises(RnnembedError, match="no such file"):
        list(read_corpus([tmp_path / "missing.txt"]))
    for one in ("empty.txt", empty, None):  # a str is iterable: "/data" would read "/", "d", ...
        with pytest.raises(RnnembedError, match="must be a list of files or folders"):
            list(read_corpus(one))
    with pytest.raises(RnnembedError, match="path 1 of the corpus is NoneType"):
        list(read_corpus([empty, None]))
    with pytest.raises(RnnembedError, match="unknown encoding"):
        list(read_corpus([empty], encoding="klingon"))
    with pytest.raises(RnnembedError, match="not supported"):
        list(read_corpus([empty], encoding="utf-16"))
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfhello\nworld\n")  # utf-8-sig's line breaks are single bytes
    assert [r.text for r in read_corpus([bom], encoding="utf-8-sig")] == ["hello", "world"]


def test_a_link_loop_or_a_pipe_is_not_a_missing_file(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    os.mkfifo(tmp_path / "pipe")
    for odd in ("a", "pipe"):
        with pytest.raises(RnnembedError, match=f"{odd}: not a regular file or folder"):
            list(read_corpus([tmp_path / odd]))


def test_a_big_corpus_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "big.txt"
    line = "the quick brown fox jumps over the lazy dog again and again\n"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(300_000):  # about 18 MB
            f.write(line)
    tok = Tokenizer.train([line], kind="word")
    tracemalloc.start()
    tokens = sum(len(ids) for ids in tok.encode_lines(iter_texts([path])))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tokens == 300_000 * 13
    assert peak < 2_000_000  # a few MB at most, for an 18 MB file
