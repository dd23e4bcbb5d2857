"""Tokenizers: characters, words or byte-level BPE behind one class, saved as one JSON file.

Every kind maps a line break to ``<eos>`` (PTB's convention: one ``<eos>`` per line), so a
stream of lines and a text with newlines give the same ids, and decode turns ``<eos>`` back
into a newline.

- ``char``: one id per character seen in training; any other character is spelled as its
  UTF-8 bytes (``<0x..>`` tokens), so every text round-trips.
- ``word``: whitespace-separated words; words under ``min_freq`` or beyond ``vocab_size``
  become ``<unk>``.
- ``bpe``: byte-level BPE trained with Hugging Face ``tokenizers``; every Unicode text,
  Chinese included, round-trips.
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, KeysView, Set
from itertools import chain, islice
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from rnnembed.atomic import atomic_write, check_path, check_writable
from rnnembed.config import is_whole
from rnnembed.corpus import MODEL_FILES
from rnnembed.errors import RnnembedError

TokenizerKind = Literal["char", "word", "bpe"]
KINDS: tuple[str, ...] = ("char", "word", "bpe")
EOS = "<eos>"
UNK = "<unk>"
SPECIALS = (EOS, UNK)
FORMAT = "rnnembed-tokenizer"
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
DEFAULT_BPE_VOCAB = 8000
# the BPE trainer allocates ~70 bytes per vocabulary slot up front (1e9 slots: an abort for
# 70 GB); a million ids is far beyond what a corpus here fills
MAX_VOCAB = 1_000_000
_BATCH_LINES = 1024


class Tokenizer:
    """Text <-> token ids. Build one with :meth:`train` or :meth:`load`."""

    def __init__(self, kind: TokenizerKind, vocab: list[str] | None = None, hf=None):
        _check_kind(kind)
        self.kind = kind
        self._hf: HFTokenizer | None = hf
        if hf is not None:
            hf.encode_special_tokens = True  # a literal "<eos>" in the text is text, not a token
            vocab = [hf.id_to_token(i) for i in range(hf.get_vocab_size())]
        self._vocab: list[str] = list(vocab or [])
        self._index = {token: i for i, token in enumerate(self._vocab)}
        missing = [s for s in SPECIALS if s not in self._index]
        if missing:
            raise RnnembedError(f"tokenizer vocabulary lacks {missing}; retrain the tokenizer")
        self.eos_id = self._index[EOS]
        self.unk_id = self._index[UNK]
        self._byte_ids = [self._index.get(t, -1) for t in BYTE_TOKENS] if kind == "char" else []

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        kind: TokenizerKind = "bpe",
        vocab_size: int | None = None,
        min_freq: int = 1,
    ) -> Tokenizer:
        """Learn a vocabulary from ``texts`` (streamed once; lines or whole documents).

        ``vocab_size`` caps the vocabulary, special tokens included (``bpe`` defaults to
        8,000; ``char`` and ``word`` keep every symbol seen ``min_freq`` times or more).
        """
        _check_kind(kind)
        fixed = len(SPECIALS) + (len(BYTE_TOKENS) if kind != "word" else 0)
        if vocab_size is not None and (
            not is_whole(vocab_size)
            or vocab_size < 0
            or 0 < vocab_size <= fixed
            or vocab_size > MAX_VOCAB
        ):
            raise RnnembedError(
                f"vocab_size must be 0 (the default) or a whole number above {fixed} (a {kind} "
                f"tokenizer's {fixed} fixed tokens and at least one learned) and at most "
                f"{MAX_VOCAB:,}, not {vocab_size!r}"
            )
        if not is_whole(min_freq) or min_freq < 1:
            raise RnnembedError(f"min_freq must be a whole number of at least 1, not {min_freq!r}")
        check_many(texts, "training text", ordered=False)
        lines = _lines(texts)
        if kind == "bpe":
            return cls("bpe", hf=_train_bpe(lines, vocab_size or DEFAULT_BPE_VOCAB, min_freq))
        counts: Counter[str] = Counter()
        for line in lines:
            counts.update(line if kind == "char" else line.split())
        fixed = list(SPECIALS) + (list(BYTE_TOKENS) if kind == "char" else [])
        ranked = sorted(
            (t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        room = max(vocab_size - len(fixed), 0) if vocab_size else None
        if not counts:
            raise RnnembedError("cannot train a tokenizer on an empty corpus; give it some text")
        return cls(kind, vocab=fixed + ranked[:room])

    # -- encoding -----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of distinct ids, special tokens included."""
        return len(self._vocab)

    def id_to_token(self, token_id: int) -> str:
        return self._vocab[self.check_ids([token_id])[0]]

    def token_to_id(self, token: str) -> int | None:
        return self._index.get(token)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; each newline becomes ``<eos>``."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """:meth:`encode` for many texts at once (one call into the Rust tokenizer for bpe)."""
        texts = check_texts(texts)
        lines = [line for text in texts for line in text.split("\n")]
        encoded = self._encode_lines(lines)
        out, pos = [], 0
        for text in texts:
            n = text.count("\n") + 1
            ids = encoded[pos]
            for line_ids in encoded[pos + 1 : pos + n]:
                ids.append(self.eos_id)
                ids.extend(line_ids)
            out.append(ids)
            pos += n
        return out

    def encode_lines(self, lines: Iterable[str]) -> Iterator[list[int]]:
        """Stream: the ids of each line (or text) followed by ``<eos>``, in bounded memory."""
        it = iter(lines)
        while chunk := list(islice(it, _BATCH_LINES)):
            for ids in self.encode_batch(chunk):
                ids.append(self.eos_id)
                yield ids

    def encode_stream(self, texts: Iterable[str]) -> tuple[np.ndarray, int]:
        """The whole id stream of ``texts`` (an ``<eos>`` after each) as an int64 array, and
        the number of characters it covers (newlines included)."""
        check_many(texts)
        chars = 0

        def counted() -> Iterator[str]:
            nonlocal chars
            for i, text in enumerate(texts):
                check_text(text, i)
                chars += len(text) + 1
                yield text

        ids = np.fromiter(chain.from_iterable(self.encode_lines(counted())), dtype=np.int64)
        return ids, chars

    def split_final(self, text: str) -> tuple[str, str]:
        """(final, pending): a prefix whose ids cannot change when more text is appended, and
        the rest. encode(final) + encode(pending + more) == encode(text + more). For BPE the
        last two pre-tokenizer pieces wait: appended letters can join the last one, and an
        apostrophe piece with the letters after it (we' + ll: the contraction 'll)."""
        if self.kind == "char":
            return text, ""
        line_start = text.rfind("\n") + 1
        if self.kind == "word":
            cut = max(line_start, *(text.rfind(c) + 1 for c in " \t\r\f\v"))
        else:
            pieces = self._hf.pre_tokenizer.pre_tokenize_str(text[line_start:])
            cut = line_start + (pieces[-2:][0][1][0] if pieces else 0)
        return text[:cut], text[cut:]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; ``<eos>`` becomes a newline."""
        segments: list[list[int]] = [[]]
        for i in self.check_ids(ids):
            if i == self.eos_id:
                segments.append([])
            else:
                segments[-1].append(i)
        return "\n".join(self._decode_line(seg) for seg in segments)

    def decode_pieces(self, ids: Iterable[int]) -> Iterator[str]:
        """:meth:`decode` of ``ids`` in pieces, each as soon as its characters are whole (a
        character spelled in several byte tokens waits for its last): for text that appears
        as ids are drawn one by one. ``"".join(decode_pieces(ids)) == decode(ids)``."""
        return self._pieces(_id_items(ids))

    def _pieces(self, ids: Iterable[object]) -> Iterator[str]:
        # ids wait only for characters spelled in bytes, so never a word tokenizer's, whose
        # next word in a line follows a space
        pending: list[int] = []
        spaced = False
        for i in ids:
            i = self._checked_id(i)
            if i == self.eos_id:  # the line ends: what waits is all it will be
                if pending:
                    yield self._decode_line(pending)
                pending, spaced = [], False
                yield "\n"
                continue
            pending.append(i)
            text = self._decode_line(pending)
            if text.endswith("\ufffd") and self.kind != "word":  # maybe a character not whole
                if len(pending) > 8:  # bytes that spell nothing: what is final goes out
                    pending = yield from self._final_part(pending, text)
                continue
            yield (" " if spaced else "") + text
            pending, spaced = [], self.kind == "word"
        if pending:
            yield self._decode_line(pending)

    def _final_part(self, pending: list[int], text: str) -> Iterator[str]:
        """Yield the decoded head of ``pending`` (whose text is ``text``) that no later id can
        change, and return the rest: a character has at most 4 bytes, each id gives at least
        one, so one of 4 cuts before the last 3 ids falls between characters, where the two
        parts decode to the whole. Keeps the ids a run of unfinished bytes waits on few."""
        for cut in range(len(pending) - 3, len(pending) - 7, -1):
            head = self._decode_line(pending[:cut])
            if head + self._decode_line(pending[cut:]) == text:
                yield head
                return pending[cut:]
        return pending

    def check_ids(self, ids: Iterable[int]) -> list[int]:
        """``ids`` (a list, an array, a tensor) as ints, or RnnembedError if one is not an id
        of this tokenizer (a negative one would index from the end)."""
        return [self._checked_id(i) for i in _id_items(ids)]

    def _checked_id(self, i: object) -> int:
        try:  # an int, numpy's or a one-value tensor; not a float, nor a bool
            value = operator.index(i) if not isinstance(i, bool) else -1
        except TypeError:
            value = -1
        if not 0 <= value < self.vocab_size:
            raise RnnembedError(
                f"{i!r} is not a token id of this tokenizer: ids are whole numbers from 0 to "
                f"{self.vocab_size - 1}"
            )
        return value

    def _encode_lines(self, lines: list[str]) -> list[list[int]]:
        """Ids of each newline-free line; a line that is not Unicode text is a clear error."""
        try:
            return self._encode_unicode_lines(lines)
        except (TypeError, UnicodeEncodeError):  # what the Rust tokenizer and UTF-8 raise
            for line in lines:
                check_unicode(line)
            raise

    def _encode_unicode_lines(self, lines: list[str]) -> list[list[int]]:
        if self._hf is not None:  # in slices: an Encoding holds far more than its ids
            # the fast batch skips the character offsets, which nothing here reads
            return [
                enc.ids
                for first in range(0, len(lines), _BATCH_LINES)
                for enc in self._hf.encode_batch_fast(
                    lines[first : first + _BATCH_LINES], add_special_tokens=False
                )
            ]
        if self.kind == "word":
            index, unk = self._index, self.unk_id
            return [[index.get(w, unk) for w in line.split()] for line in lines]
        return [self._encode_chars(line) for line in lines]

    def _encode_chars(self, line: str) -> list[int]:
        index, ids = self._index, []
        for ch in line:
            i = index.get(ch)
            if i is None:
                ids.extend(self._byte_ids[b] for b in ch.encode("utf-8"))
            else:
                ids.append(i)
        return ids

    def _decode_line(self, ids: list[int]) -> str:
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=False)
        if self.kind == "word":
            return " ".join(self._vocab[i] for i in ids)
        out, pending = [], bytearray()
        for i in ids:
            token = self._vocab[i]
            if token in _BYTE_VALUE:
                pending.append(_BYTE_VALUE[token])
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            out.append(token)
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    # -- files --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        data: dict = {"format": FORMAT, "version": 1, "kind": self.kind}
        if self._hf is not None:
            data["hf_tokenizer"] = json.loads(self._hf.to_str())
        else:
            data["vocab"] = self._vocab
        return data

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as one JSON file (atomically)."""
        check_writable(path)
        atomic_write(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer written by :meth:`save`."""
        check_path(path, "a tokenizer file")
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RnnembedError(f"{path}: no tokenizer file here; train one first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RnnembedError(
                f"{path}: not a readable tokenizer file ({exc}); restore it or retrain"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RnnembedError(f"{path}: not an rnnembed tokenizer file; restore it or retrain")
        try:
            if data["kind"] == "bpe":
                return cls("bpe", hf=HFTokenizer.from_str(json.dumps(data["hf_tokenizer"])))
            return cls(data["kind"], vocab=list(data["vocab"]))
        except RnnembedError:
            raise
        except Exception as exc:  # the Rust tokenizer raises plain Exception
            raise RnnembedError(
                f"{path}: damaged tokenizer file ({exc!r}); restore it or retrain"
            ) from None

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


_BYTE_VALUE = {token: b for b, token in enumerate(BYTE_TOKENS)}


def tokenizer_for(
    spec: str, texts: Callable[[], Iterable[str]], vocab_size: int | None = None
) -> Tokenizer:
    """``spec`` as a tokenizer: a kind (char, word, bpe) trained on ``texts()``, capped at
    ``vocab_size``, or one made already (:func:`tokenizer_file`), which has its own size."""
    file = tokenizer_file(spec)
    if file is None:
        return Tokenizer.train(texts(), kind=spec, vocab_size=vocab_size)
    if vocab_size:
        raise RnnembedError(
            f"vocab_size (--vocab-size) caps a tokenizer trained here; {spec} is one made "
            "already: leave it out"
        )
    return Tokenizer.load(file)


def tokenizer_file(spec: str) -> Path | None:
    """The file of a tokenizer ``spec`` names, or None for a kind (char, word, bpe, which a
    folder of that name does not hide): a model folder's tokenizer.json, or a tokenizer file
    that `rnnembed tokenize` wrote (.json); RnnembedError for anything else."""
    if spec in KINDS:
        return None
    path = Path(spec)
    if path.is_dir():
        return path / MODEL_FILES[1]  # its tokenizer.json
    if path.suffix.lower() == ".json":
        return path
    raise RnnembedError(
        f"{spec!r} is no tokenizer kind ({', '.join(KINDS)}), model folder or .json file; "
        "give a kind, a model DIR or a tokenizer FILE.json (check the path)"
    )


def check_texts(texts: Iterable[str], name: str = "text", ordered: bool = True) -> list[str]:
    """``texts`` as a list, or RnnembedError if it is one string or holds anything but strings
    (a string is iterable: taken for a list, it would be read one character per text), or,
    where results follow the texts' order, a set."""
    check_many(texts, name, ordered)
    texts = list(texts)
    for i, text in enumerate(texts):
        check_text(text, i, name)
    return texts


def check_many(texts: object, name: str = "text", ordered: bool = True) -> None:
    """RnnembedError unless ``texts`` is an iterable of them, not one string (or bytes), and,
    if ``ordered``, not a set, whose order says nothing (a dict's keys keep theirs)."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Iterable):
        raise RnnembedError(
            f"{name}s must be a list of strings, not {type(texts).__name__}; wrap a single "
            f"{name} in a list"
        )
    if ordered and isinstance(texts, Set) and not isinstance(texts, KeysView):
        raise RnnembedError(
            f"{name}s must come in an order, not as a {type(texts).__name__}, whose order is "
            "arbitrary (the results could not be matched to them); pass a list"
        )


def check_text(text: object, i: int, name: str = "text") -> None:
    """RnnembedError unless ``text`` (the ``i``-th ``name``) is a string."""
    if not isinstance(text, str):
        raise RnnembedError(
            f"{name} {i} is {type(text).__name__}, not a string; give each {name} as str "
            "(decode bytes first)"
        )


def check_unicode(text: str, what: str = "a text") -> None:
    """Refuse a text that is not Unicode: one holding a lone surrogate (JSON's "\\ud800", or a
    byte that is not UTF-8 in a command-line argument or file name), which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RnnembedError(
            f"{what} holds {text[exc.start : exc.end]!r}, a lone surrogate, not Unicode text (at "
            f"character {exc.start} of {text[:40]!r}); send valid Unicode (UTF-8) text"
        ) from None


def _id_items(ids: Iterable[int]) -> Iterable[object]:
    """The items of ``ids`` (a list, an array, a tensor, any iterable), or RnnembedError if
    it is not a sequence of ids at all."""
    items = ids.tolist() if hasattr(ids, "tolist") else ids  # a 0-d array gives one number
    if isinstance(ids, str | bytes) or not isinstance(items, Iterable):
        raise RnnembedError(f"token ids come as a list of ints, not {type(ids).__name__}")
    return items


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RnnembedError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")


def _lines(texts: Iterable[str]) -> Iterator[str]:
    for i, text in enumerate(texts):
        check_text(text, i, "training text")
        yield from text.split("\n")


def _train_bpe(lines: Iterator[str], vocab_size: int, min_freq: int) -> HFTokenizer:
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=max(min_freq, 2),
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = False

    def batches() -> Iterator[list[str]]:
        nonlocal seen
        while chunk := list(islice(lines, _BATCH_LINES)):
            seen = seen or any(line.strip() for line in chunk)
            yield chunk

    hf.train_from_iterator(batches(), trainer)
    if not seen:
        raise RnnembedError("cannot train a tokenizer on an empty corpus; give it some text")
    return hf
