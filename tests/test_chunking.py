import json

import pytest

from rnnembed.chunking import read_chunks, split_sentences
from rnnembed.errors import RnnembedError

TEXT = (
    "First paragraph, line one.\n"
    "  Line two of it. Mr. Smith met Dr. Jones.\n"
    "\n"
    "\n"
    "Second paragraph? Yes! It ends here.\n"
    "   \n"
    "我爱北京。今天天气很好！你好吗？\n"
)


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def chunks(paths, chunk):
    return [(c.text, c.source) for c in read_chunks(paths, chunk)]


def test_lines_are_the_non_blank_lines_with_their_line_numbers(notes):
    assert chunks([notes], "lines") == [
        ("First paragraph, line one.", f"{notes}:1"),
        ("Line two of it. Mr. Smith met Dr. Jones.", f"{notes}:2"),
        ("Second paragraph? Yes! It ends here.", f"{notes}:5"),
        ("我爱北京。今天天气很好！你好吗？", f"{notes}:7"),
    ]


def test_paragraphs_join_runs_of_lines_and_start_at_their_first_line(notes):
    assert chunks([notes], "paragraphs") == [
        ("First paragraph, line one.\nLine two of it. Mr. Smith met Dr. Jones.", f"{notes}:1"),
        ("Second paragraph? Yes! It ends here.", f"{notes}:5"),
        ("我爱北京。今天天气很好！你好吗？", f"{notes}:7"),
    ]


def test_sentences_keep_their_paragraphs_source(notes):
    assert chunks([notes], "sentences") == [
        ("First paragraph, line one.", f"{notes}:1"),
        ("Line two of it.", f"{notes}:1"),
        ("Mr. Smith met Dr. Jones.", f"{notes}:1"),
        ("Second paragraph?", f"{notes}:5"),
        ("Yes!", f"{notes}:5"),
        ("It ends here.", f"{notes}:5"),
        ("我爱北京。", f"{notes}:7"),
        ("今天天气很好！", f"{notes}:7"),
        ("你好吗？", f"{notes}:7"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("See e.g. the manual. It helps.", ["See e.g. the manual.", "It helps."]),
        ("J. R. R. Tolkien wrote it. Fine.", ["J. R. R. Tolkien wrote it.", "Fine."]),
        ("Pi is 3.14 here. Next.", ["Pi is 3.14 here.", "Next."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("wrapped\nline. And more", ["wrapped line.", "And more"]),
        ("no end", ["no end"]),
        ("He said no. She said yes.", ["He said no.", "She said yes."]),
        ("See No. 5 here. Then go.", ["See No. 5 here.", "Then go."]),
        ("价格是３．５元。好", ["价格是３．５元。", "好"]),  # ． between digits: a number
        ("오늘은 날씨가\n좋습니다.", ["오늘은 날씨가 좋습니다."]),  # Hangul keeps its spaces
        ("好的．走吧", ["好的．", "走吧"]),  # the full-width stop of older Chinese texts
        ("你好?我很好!谢谢。", ["你好?", "我很好!", "谢谢。"]),
        ("今天天气\n很好。", ["今天天气很好。"]),  # a wrapped Chinese line joins without a space
        ("Steps:\n1. Install.\n2. Run it. Done.", ["Steps:", "1. Install.", "2. Run it.", "Done."]),
        ("Buy:\n- apples\n* pears", ["Buy:", "- apples", "* pears"]),  # a list item's line
        ("1. Install. 2. Run.", ["1. Install.", "2. Run."]),  # a list item's number
        ("It cost 5. Then we left.", ["It cost 5.", "Then we left."]),
    ],
)
def test_sentence_splitting_is_sane_about_abbreviations_and_numbers(text, expected):
    assert split_sentences(text) == expected


def test_paragraphs_do_not_run_across_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one\ntwo", encoding="utf-8")
    b.write_text("three\n", encoding="utf-8")
    assert chunks([a, b], "paragraphs") == [("one\ntwo", f"{a}:1"), ("three", f"{b}:1")]


def test_records_of_jsonl_and_csv_are_chunks_and_split_at_blank_lines(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    rows = [{"text": "Alpha one.\n\nAlpha two."}, {"text": "   "}, {"text": "Beta."}]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    table = tmp_path / "t.csv"
    table.write_text('id,text\n1,"Gamma. Delta."\n', encoding="utf-8")
    assert chunks([jsonl, table], "lines") == [
        ("Alpha one.\n\nAlpha two.", f"{jsonl}:1"),
        ("Beta.", f"{jsonl}:3"),
        ("Gamma. Delta.", f"{table}:2"),
    ]
    assert chunks([jsonl], "paragraphs") == [
        ("Alpha one.", f"{jsonl}:1"),
        ("Alpha two.", f"{jsonl}:1"),
        ("Beta.", f"{jsonl}:3"),
    ]
    assert chunks([table], "sentences") == [("Gamma.", f"{table}:2"), ("Delta.", f"{table}:2")]


def test_unknown_chunk_and_empty_corpus_are_clear_errors(tmp_path, notes):
    with pytest.raises(RnnembedError, match="unknown chunk 'words'"):
        read_chunks([notes], "words")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(RnnembedError, match="empty"):
        list(read_chunks([empty], "sentences"))
