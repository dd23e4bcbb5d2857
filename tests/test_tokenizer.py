import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_file
from rnnembed import RnnembedError, Tokenizer, tokenizer
from rnnembed.tokenizer import EOS, UNK

TRAINING_TEXT = [
    "the cat sat on the mat\n",
    "the dog sat on the log",
    "贾宝玉笑道：林妹妹来了。",
    "naïve café — déjà vu",
]


@pytest.fixture(scope="module")
def char_tok():
    return Tokenizer.train(TRAINING_TEXT, kind="char")


@pytest.fixture(scope="module")
def bpe_tok():
    return Tokenizer.train(TRAINING_TEXT * 20, kind="bpe", vocab_size=400)


def test_bpe_encodes_many_lines_in_slices_as_one_by_one(bpe_tok, monkeypatch):
    lines = [text.strip() for text in TRAINING_TEXT] + ["", "last line"]
    one_by_one = [bpe_tok.encode(line) for line in lines]
    monkeypatch.setattr(tokenizer, "_BATCH_LINES", 2)  # slices of 2 lines into the Rust tokenizer
    assert bpe_tok.encode_batch(lines) == one_by_one


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_char_round_trips_any_unicode(char_tok, text):
    assert char_tok.decode(char_tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_unicode(bpe_tok, text):
    assert bpe_tok.decode(bpe_tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decoding_in_pieces_gives_the_whole_decode(char_tok, bpe_tok, data):
    """Any ids (byte tokens that spell no character, <eos>, <unk> among them) decode to the
    same text whole and in pieces; no piece ends in half a character unless decode does."""
    word = Tokenizer.train(TRAINING_TEXT, kind="word")
    for tok in (char_tok, bpe_tok, word):
        ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
        pieces = list(tok.decode_pieces(ids))
        assert "".join(pieces) == tok.decode(ids)
    text = "林妹妹 café\nthe cat"  # characters of several bytes, spelled in byte tokens
    for tok in (char_tok, bpe_tok):
        pieces = list(tok.decode_pieces(tok.encode(text + "叆")))  # 叆: bytes in both
        assert "".join(pieces) == text + "叆" and "\ufffd" not in "".join(pieces)


def test_newline_is_eos_for_every_kind(char_tok, bpe_tok):
    word = Tokenizer.train(TRAINING_TEXT, kind="word")
    for tok in (char_tok, bpe_tok, word):
        ids = tok.encode("the cat\nsat")
        assert ids.count(tok.eos_id) == 1
        assert list(tok.encode_lines(["the cat", "sat"])) == [
            tok.encode("the cat") + [tok.eos_id],
            tok.encode("sat") + [tok.eos_id],
        ]
        assert tok.encode_batch(["the cat\nsat", "mat"]) == [ids, tok.encode("mat")]


def test_word_maps_rare_and_unseen_words_to_unk():
    tok = Tokenizer.train(["a a a b b c"], kind="word", min_freq=2)
    assert tok.decode(tok.encode("a b c zebra")) == f"a b {UNK} {UNK}"
    capped = Tokenizer.train(["a a a b b c"], kind="word", vocab_size=3)
    assert capped.vocab_size == 3
    assert capped.decode(capped.encode("a b")) == f"a {UNK}"


def test_word_tokenizer_on_ptb_has_ten_thousand_entries():
    path = shared_file("ptb/ptb.train.txt")
    with open(path, encoding="utf-8") as f:
        tok = Tokenizer.train(f, kind="word")
    assert tok.vocab_size == 10_000
    assert tok.token_to_id(EOS) is not None and tok.token_to_id(UNK) is not None


def test_bpe_keeps_chinese_characters_whole():
    text = "贾宝玉笑道：林妹妹来了。" * 50
    tok = Tokenizer.train([text], kind="bpe", vocab_size=300)
    ids = tok.encode("林妹妹来了")
    # merges learned from Chinese text cover whole characters and words, not stray bytes
    assert len(ids) <= 2
    assert tok.decode(ids) == "林妹妹来了"


def test_save_and_load_round_trip(tmp_path, char_tok, bpe_tok):
    word = Tokenizer.train(TRAINING_TEXT, kind="word")
    for tok in (char_tok, bpe_tok, word):
        path = tmp_path / f"{tok.kind}.json"
        tok.save(path)
        again = Tokenizer.load(path)
        assert again.kind == tok.kind and again.vocab_size == tok.vocab_size
        sample = "the cat 林妹妹 sat\nunseen"
        assert again.encode(sample) == tok.encode(sample)
        assert (again.eos_id, again.unk_id) == (tok.eos_id, tok.unk_id)
        json.loads(path.read_text(encoding="utf-8"))  # one plain JSON file


def test_load_refuses_bad_files_clearly(tmp_path):
    for kind, size in (("word", 2), ("bpe", 10**9)):  # 1e9: the BPE trainer would abort
        with pytest.raises(RnnembedError, match=r"vocab_size must be 0 \(the default\) or a who"):
            Tokenizer.train(["some text"], kind=kind, vocab_size=size)
    with pytest.raises(RnnembedError, match="no tokenizer file"):
        Tokenizer.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(RnnembedError, match="not a readable tokenizer"):
        Tokenizer.load(broken)
    other = tmp_path / "other.json"
    other.write_text('{"model": {}}', encoding="utf-8")
    with pytest.raises(RnnembedError, match="not an rnnembed tokenizer"):
        Tokenizer.load(other)
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "rnnembed-tokenizer", "kind": "word"}', encoding="utf-8")
    with pytest.raises(RnnembedError, match="damaged"):
        Tokenizer.load(damaged)


def test_training_needs_text_and_a_known_kind():
    for kind in ("char", "word", "bpe"):
        with pytest.raises(RnnembedError, match="empty corpus"):
            Tokenizer.train([], kind=kind)
    with pytest.raises(RnnembedError, match="training texts must be a list of strings, not str"):
        Tokenizer.train("hello world hello there", kind="word")  # would learn letters as words
    with pytest.raises(RnnembedError, match="training text 1 is NoneType"):
        Tokenizer.train(["fine", None], kind="char")
    for kind, size in (("char", 200), ("bpe", 258), ("bpe", 2.5), ("word", "10")):
        with pytest.raises(RnnembedError, match=f"a whole number above .*not {size!r}"):
            Tokenizer.train(["some text"], kind=kind, vocab_size=size)  # 200: no character left
    with pytest.raises(RnnembedError, match="min_freq must be a whole number of at least 1"):
        Tokenizer.train(["some text"], kind="word", min_freq="2")
    with pytest.raises(RnnembedError, match="unknown tokenizer kind"):
        Tokenizer.train(["x"], kind="sentencepiece")


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_a_lone_surrogate_is_a_clear_error(kind):
    tok = Tokenizer.train(["plain text here"], kind=kind, vocab_size=300 if kind == "bpe" else None)
    with pytest.raises(RnnembedError, match=r"'\\udce9', a lone surrogate, not Unicode text"):
        tok.encode_batch(["fine", "caf\udce9"])  # a byte that is not UTF-8, in argv or JSON


def test_text_fed_in_pieces_gets_the_ids_of_the_whole():
    tok = Tokenizer.train(["we'll go, they're here, you'll see, I've seen"] * 50, vocab_size=300)
    assert len(tok.encode("'ll")) == 1  # the contraction is one token
    text = "we'll go and they're here; you'll see what I've seen"
    for cut in range(len(text) + 1):  # two chunks, cut anywhere (we'l + l: the 'll is whole)
        ids, pending = [], ""
        for chunk in (text[:cut], text[cut:]):
            final, pending = tok.split_final(pending + chunk)
            ids += tok.encode(final) if final else []
        assert ids + tok.encode(pending) == tok.encode(text), (text[:cut], text[cut:])


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_decode_refuses_what_is_not_an_id(kind):
    tok = Tokenizer.train(TRAINING_TEXT * 20, kind=kind, vocab_size=300 if kind == "bpe" else None)
    ids = tok.encode("the cat sat")
    assert tok.decode(np.array(ids)) == tok.decode(ids) == tok.decode(list(torch.tensor(ids)))
    assert tok.id_to_token(torch.tensor(ids[0])) == tok.id_to_token(np.int64(ids[0]))
    assert "".join(tok.decode_pieces(np.array(ids))) == tok.decode(ids)
    decoders = (tok.decode, lambda ids: "".join(tok.decode_pieces(ids)))
    for decode in decoders:
        for bad in ([-1], [tok.vocab_size], [1.5], [True]):  # -1 read the last token, 1.5 <unk>
            with pytest.raises(RnnembedError, match=f"{bad[0]!r} is not a token id.*0 to"):
                decode(ids + bad)
        for bad, name in (("the cat", "str"), (5, "int")):
            with pytest.raises(RnnembedError, match=f"come as a list of ints, not {name}"):
                decode(bad)
    with pytest.raises(RnnembedError, match="come as a list of ints"):
        tok.decode_pieces(5)  # when called, not first when read
    with pytest.raises(RnnembedError, match="not a token id"):
        tok.id_to_token(-1)


def test_a_kind_is_not_hidden_by_a_folder_of_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bpe").mkdir()  # e.g. a folder of BPE notes beside the corpus
    assert tokenizer.tokenizer_for("bpe", lambda: ["plain text here"] * 5, 300).kind == "bpe"
    Tokenizer.train(["plain text"], kind="word").save(tmp_path / "tok.json")
    assert tokenizer.tokenizer_for("tok.json", lambda: []).kind == "word"
