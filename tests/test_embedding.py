import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from rnnembed import RnnembedError, embedding
from rnnembed.chunking import split_sentences
from rnnembed.embedding import POOLINGS
from rnnembed.language_model import LanguageModel

TINY = {"layers": 1, "hidden": 32, "batch_size": 8, "bptt": 16, "lr": 1e-2, "epochs": 0.5}
TEXTS = [
    "The for statement iterates over the items of any sequence.",
    "a",
    "",
    "Exceptions are raised with the raise statement.\nA second line follows it",
    "x " * 700,  # longer than one window of 512 tokens
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, small_corpus):
    train, valid = small_corpus
    folder = tmp_path_factory.mktemp("embedding-models")
    return {
        kind: LanguageModel.train(
            [train],
            folder / kind,
            valid=[valid],
            tokenizer=kind,
            vocab_size=300 if kind == "bpe" else None,
            **TINY,
        )
        for kind in ("bpe", "word", "char")
    }


@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_text_gets_the_same_vector_alone_or_in_any_batch(models, pooling):
    lm = models["bpe"]
    batch = lm.encode(TEXTS, pooling=pooling)
    assert batch.shape == (len(TEXTS), lm.dim(pooling)) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(lm.encode([text], pooling=pooling)[0], batch[i], atol=1e-5)
    shuffled = lm.encode(TEXTS[::-1] + ["filler text", "more filler"], pooling=pooling)
    np.testing.assert_allclose(shuffled[: len(TEXTS)][::-1], batch, atol=1e-5)


def test_the_recurrence_runs_without_tf32_and_the_setting_comes_back(models, monkeypatch):
    lm = models["bpe"]
    seen, forward = [], lm.model.forward

    def recording(*args, **kwargs):
        seen.append(torch.backends.cudnn.allow_tf32)
        return forward(*args, **kwargs)

    monkeypatch.setattr(lm.model, "forward", recording)
    before = torch.backends.cudnn.allow_tf32
    lm.encode(TEXTS)
    assert seen and not any(seen)  # cuDNN's TF32 would make batches differ on a GPU
    assert torch.backends.cudnn.allow_tf32 == before
    with embedding.ieee_float32:
        with embedding.ieee_float32:  # as another thread would, while the first is inside
            pass
        assert not torch.backends.cudnn.allow_tf32  # still inside: still off
    assert torch.backends.cudnn.allow_tf32 == before


def test_pooling_ignores_padding_exactly_as_the_definition_says(models):
    lm = models["word"]
    text = "the statement is a loop"
    ids = [lm.tokenizer.eos_id, *lm.tokenizer.encode(text), lm.tokenizer.eos_id]
    with torch.no_grad():  # the states after the opening eos
        hidden = lm.model(torch.tensor([ids], device=lm.device), logits=False).hidden[0, 1:]
    hidden = hidden.cpu()
    np.testing.assert_allclose(
        lm.encode([text], pooling="mean", normalize=False)[0], hidden.mean(0).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        lm.encode([text], pooling="last", normalize=False)[0], hidden[-1].numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        lm.encode([text], pooling="max", normalize=False)[0], hidden.amax(0).numpy(), atol=1e-5
    )


def test_sif_weighs_the_state_block_and_the_fingerprint_follows(models, monkeypatch):
    lm = models["bpe"]
    states = lm.model.hidden_size
    vector = lm.encode(TEXTS[:1], pooling="sif", normalize=False)[0]
    ratio = np.linalg.norm(vector[:states]) / np.linalg.norm(vector[states:])
    assert ratio == pytest.approx(embedding.SIF_STATE_WEIGHT, rel=1e-5)
    before = embedding.fingerprint(lm, "sif"), embedding.fingerprint(lm, "mean")
    monkeypatch.setattr(embedding, "SIF_STATE_WEIGHT", embedding.SIF_STATE_WEIGHT / 2)
    assert embedding.fingerprint(lm, "sif") != before[0]
    assert embedding.fingerprint(lm, "mean") == before[1]


def _sif_blocks(model, tokenizer, texts: list[str], backward: bool) -> list[torch.Tensor]:
    """The raw (state, word) sif averages of texts, as encode reads them."""
    eos = tokenizer.eos_id
    sequences = embedding.reading_order(tokenizer.encode_batch(texts), eos, backward)
    device = next(model.parameters()).device
    order, blocks = [], []
    start = embedding.start_state(model, eos, device)
    with torch.no_grad():
        for chosen, pool in embedding.pooled_batches(model, sequences, start, "sif", 64, device):
            order += chosen
            blocks.append([block.cpu() for block in pool.sif_blocks()])
    back = np.argsort(order)
    return [torch.cat(block).double()[back] for block in zip(*blocks, strict=True)]


@pytest.mark.parametrize("backward", [False, True])
def test_sif_whitens_the_sentences_it_was_fitted_on(models, small_corpus, backward):
    lm = models["bpe"]
    tokenizer, model = lm.tokenizer, copy.deepcopy(lm.model).cpu()
    lines = small_corpus[0].read_text(encoding="utf-8").splitlines()[:200]
    # each line after a space, as WikiText-2 has them; a backward model trains on the reversal
    eos = tokenizer.eos_id
    spaced = [[*tokenizer.encode(" " + line), eos] for line in lines]
    stream = torch.tensor([eos, *(i for line in spaced for i in line)])
    embedding.fit_corpus_stats(model, stream.flip(0) if backward else stream, tokenizer, backward)
    sentences = [sentence for line in lines for sentence in split_sentences(line)]
    assert len(sentences) > len(lines)
    texts = [text for text in sentences if len(tokenizer.encode(text)) in embedding.FIT_TOKENS]
    stats = model.stats
    raw_blocks = _sif_blocks(model, tokenizer, texts, backward)
    buffers = ((stats.hidden_mean, stats.hidden_whitening), (stats.word_mean, stats.word_whitening))
    for raw, (mean, whitening) in zip(raw_blocks, buffers, strict=True):
        white = ((raw - mean.double()) @ whitening.double()).numpy()
        covariance = np.cov(white.T)
        np.testing.assert_allclose(white.mean(0), 0, atol=1e-4)  # centred
        np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0, atol=1e-4)
        variances = np.linalg.eigvalsh(np.cov(raw.numpy().T))  # each axis: v / (v + floor)
        expected = variances / (variances + embedding.WHITEN_FLOOR * variances.mean())
        np.testing.assert_allclose(np.sort(np.diag(covariance)), np.sort(expected), atol=1e-4)


def test_encode_applies_the_whitening(models):
    lm = models["bpe"]
    raw_states, raw_words = _sif_blocks(lm.model, lm.tokenizer, TEXTS[:3], backward=False)
    stats = {name: t.cpu().double() for name, t in lm.model.stats.state_dict().items()}
    states = (raw_states - stats["hidden_mean"]) @ stats["hidden_whitening"]
    words = (raw_words - stats["word_mean"]) @ stats["word_whitening"]
    expected = torch.cat(
        [embedding.SIF_STATE_WEIGHT * F.normalize(states, dim=-1), F.normalize(words, dim=-1)], -1
    )
    got = lm.encode(TEXTS[:3], pooling="sif", normalize=False)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def _assert_same_stats(model, other) -> None:
    expected = other.stats.state_dict()
    for name, tensor in model.stats.state_dict().items():
        torch.testing.assert_close(tensor, expected[name])


def _adapted_stats_match(lm: LanguageModel, texts: list[str]) -> None:
    """Inside ``lm.adapted(texts)`` each direction has the statistics fit_text_stats gives."""
    for model in embedding.directions(lm):
        fitted = copy.deepcopy(model)
        embedding.fit_text_stats(fitted, texts, lm.tokenizer, backward=model is lm.backward)
        _assert_same_stats(model, fitted)


def test_adapted_refits_the_sif_statistics_on_the_texts_and_puts_them_back(models, small_corpus):
    lm = models["bpe"]
    texts = small_corpus[1].read_text(encoding="utf-8").splitlines()[:100]
    before, fingerprint = lm.encode(texts), lm.fingerprint()
    with lm.adapted(texts) as adapted:
        assert adapted is lm and lm.fingerprint() != fingerprint
        _adapted_stats_match(lm, texts)
        assert not np.allclose(lm.encode(texts), before, atol=1e-3)
    np.testing.assert_array_equal(lm.encode(texts), before)
    assert lm.fingerprint() == fingerprint
    with pytest.raises(KeyboardInterrupt), lm.adapted(texts):
        raise KeyboardInterrupt  # an interrupted evaluation leaves the model as it was
    np.testing.assert_array_equal(lm.encode(texts), before)
    with pytest.raises(RnnembedError, match="too few texts to adapt to"), lm.adapted(["a b c d"]):
        pass
    np.testing.assert_array_equal(lm.encode(texts), before)


def test_a_long_line_is_read_up_to_the_token_budget(models, monkeypatch):
    lm = models["bpe"]
    tokenizer = lm.tokenizer
    ids = tokenizer.encode(" ".join(f"Line {i} of a long document is here." for i in range(300)))
    monkeypatch.setattr(embedding, "FIT_READ_TOKENS", 200)
    model, expected = copy.deepcopy(lm.model).cpu(), copy.deepcopy(lm.model).cpu()
    embedding.fit_corpus_stats(model, torch.tensor([*ids, tokenizer.eos_id]), tokenizer)
    first = split_sentences(tokenizer.decode(ids[:200]))
    assert embedding.fit_text_stats(expected, first, tokenizer)
    _assert_same_stats(model, expected)


def test_too_few_lines_leave_the_model_without_sif_statistics(models):
    lm = models["bpe"]
    model = copy.deepcopy(lm.model).cpu()
    model.stats.hidden_whitening.zero_()
    one_line = torch.tensor([*lm.tokenizer.encode("a single line of text"), lm.tokenizer.eos_id])
    embedding.fit_corpus_stats(model, one_line, lm.tokenizer)
    assert not model.stats.fitted


def test_a_model_with_earlier_sif_statistics_is_refused(models, tmp_path):
    lm = models["bpe"]
    lm.save(tmp_path / "old")
    weights = tmp_path / "old" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["stats.hidden_components"] = tensors.pop("stats.hidden_whitening")[:1]
    save_file(tensors, str(weights))
    with pytest.raises(RnnembedError, match="earlier rnnembed.*retrain"):
        LanguageModel.load(tmp_path / "old")


@pytest.mark.parametrize("kind", ["bpe", "word", "char"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_the_stream_equals_batch_encoding(models, kind, pooling):
    lm = models[kind]
    text = TEXTS[3] + "  and then some more words, split anywhere"
    stream = lm.stream(pooling=pooling)
    for cut in range(0, len(text), 7):
        stream.feed(text[cut : cut + 7])
        so_far = text[: cut + 7]
        if cut % 21 == 0:  # check along the way too
            np.testing.assert_allclose(
                stream.vector(), lm.encode([so_far], pooling=pooling)[0], atol=1e-5
            )
    np.testing.assert_allclose(stream.vector(), lm.encode([text], pooling=pooling)[0], atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_stream_saves_and_continues(models, pooling):
    lm = models["bpe"]
    first = lm.stream(pooling=pooling)
    first.feed("Exceptions are raised with the ra")
    second = lm.stream(pooling=pooling).restore(first.state())
    first.feed("ise statement.")
    second.feed("ise statement.")
    np.testing.assert_allclose(second.vector(), first.vector(), atol=1e-6)
    np.testing.assert_allclose(
        second.vector(),
        lm.encode(["Exceptions are raised with the raise statement."], pooling=pooling)[0],
        atol=1e-5,
    )
    other = "mean" if pooling != "mean" else "sif"
    with pytest.raises(RnnembedError, match="another model or pooling"):
        lm.stream(pooling=other).restore(first.state())
    saved = first.state()  # one saved state, continued twice: each branch has its own copy
    branch, again = lm.stream(pooling=pooling).restore(saved), lm.stream(pooling=pooling)
    branch.feed(" And then a branch.")
    np.testing.assert_allclose(again.restore(saved).vector(), first.vector(), atol=1e-6)


def test_texts_encoded_in_blocks_get_the_vectors_they_get_together(models, monkeypatch):
    lm = models["bpe"]
    whole = lm.encode(TEXTS)
    monkeypatch.setattr(embedding, "ENCODE_BLOCK", 2)  # blocks of 2, 2 and 1 texts
    np.testing.assert_allclose(lm.encode(TEXTS), whole, atol=1e-5)


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_token_ids_get_the_vectors_of_their_texts(models, kind):
    lm = models[kind]
    ids = lm.tokenizer.encode_batch(TEXTS)
    np.testing.assert_allclose(lm.encode_ids(ids), lm.encode(TEXTS), atol=1e-6)
    arrays = [np.array(i, dtype=np.int64) for i in ids]  # any sequence of ints
    np.testing.assert_allclose(lm.encode_ids(arrays, pooling="mean"), lm.encode(TEXTS, "mean"))
    tensor = torch.tensor(ids[0])[None]  # a batch of one text as a 2-D tensor
    np.testing.assert_allclose(lm.encode_ids(tensor), lm.encode(TEXTS[:1]), atol=1e-6)
    assert lm.encode_ids([]).shape == (0, lm.dim())


def test_bad_token_ids_are_clear_errors(models):
    lm = models["bpe"]
    for one_text in ([5, 6], torch.tensor([5, 6]), np.array([5, 6]), [{5, 6}]):
        with pytest.raises(RnnembedError, match=r"token_ids\[0\] is \w+, not a list of ids.*wrap"):
            lm.encode_ids(one_text)
    with pytest.raises(RnnembedError, match=r"token_ids\[1\]: 300 is not a token id"):
        lm.encode_ids([[5], [6, lm.tokenizer.vocab_size]])
    for whole in ("ids", {(5,), (6,)}, {(5,): 1}, 7):
        with pytest.raises(RnnembedError, match="token_ids must be a list of id lists"):
            lm.encode_ids(whole)


def test_bad_arguments_are_clear_errors(models):
    lm = models["bpe"]
    with pytest.raises(RnnembedError, match="unknown pooling"):
        lm.encode(["x"], pooling="median")
    with pytest.raises(RnnembedError, match="texts must be a list of strings, not str"):
        lm.encode("just a string")
    for size in (0, 2.5):
        with pytest.raises(RnnembedError, match=f"batch_size must be a whole number.*not {size}"):
            lm.encode(["x"], batch_size=size)
    with pytest.raises(RnnembedError, match="text 1 is NoneType, not a string"):
        lm.encode(["x", None])
    assert lm.encode(t for t in ["a generator of texts"]).shape == (1, lm.dim())
    for unordered in ({"a", "b"}, frozenset(["a"])):  # rows could not be matched to texts
        with pytest.raises(RnnembedError, match="must come in an order.*pass a list"):
            lm.encode(unordered)
    assert lm.encode({"a": 1, "b": 2}.keys()).shape == (2, lm.dim())  # a dict keeps its order
    for flag in ("no", 0, None):
        with pytest.raises(RnnembedError, match=f"normalize must be True or False, not {flag!r}"):
            lm.encode(["x"], normalize=flag)
        with pytest.raises(RnnembedError, match="normalize must be True or False"):
            lm.stream(normalize=flag)
    with pytest.raises(RnnembedError, match="fed text 0 is bytes"):
        lm.stream().feed(b"bytes")


def test_a_damaged_stream_state_is_refused_and_changes_nothing(models):
    lm = models["bpe"]
    saved = lm.stream()
    saved.feed("Exceptions are raised with the ra")
    state = saved.state()
    layers = state["model_state"]
    for damaged in [
        None,
        {**state, "model_state": "garbage"},
        {**state, "model_state": layers[:-1]},
        {**state, "pool": [np.zeros((1, 3))] * len(state["pool"])},
        {**state, "model_state": [[np.full_like(t, np.nan) for t in layer] for layer in layers]},
        {**state, "model_state": [[np.full_like(t, np.inf) for t in layer] for layer in layers]},
        {**state, "pending": "ra\ud800"},  # not Unicode: the next feed could not tokenize it
        {**state, "tokens": "many"},
        {k: v for k, v in state.items() if k != "pool"},
    ]:
        stream = lm.stream()
        stream.feed("The for sta")
        before = (stream.pending, stream.tokens, stream.vector())
        with pytest.raises(RnnembedError, match="this stream state is damaged"):
            stream.restore(damaged)
        assert (stream.pending, stream.tokens) == before[:2]
        np.testing.assert_array_equal(stream.vector(), before[2])


def test_a_bidirectional_model_reads_both_ways(tmp_path, small_corpus, monkeypatch):
    train, valid = small_corpus
    out = tmp_path / "bi"
    lm = LanguageModel.train(
        [train], out, valid=[valid], tokenizer="bpe", vocab_size=300, bidirectional=True, **TINY
    )
    assert (out / "backward" / "model.safetensors").is_file() and len(lm.results) == 2
    again = LanguageModel.load(out)
    assert again.backward is not None and again.dim() == 2 * lm.model.hidden_size + 2 * 32
    texts = ["The for statement iterates.", "Exceptions are raised."]
    both = again.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(both, lm.encode(texts), atol=1e-5)
    ids = again.tokenizer.encode_batch(texts)
    np.testing.assert_allclose(again.encode_ids(ids), both, atol=1e-6)
    with monkeypatch.context() as patch:
        patch.setattr(embedding, "ENCODE_BLOCK", 1)  # each direction's columns, block by block
        np.testing.assert_allclose(again.encode(texts), both, atol=1e-5)
        np.testing.assert_allclose(again.encode_ids(ids), both, atol=1e-5)
    forward_only = LanguageModel(again.model, again.tokenizer)
    half = both.shape[1] // 2
    np.testing.assert_allclose(both[:, :half] * np.sqrt(2), forward_only.encode(texts), atol=1e-5)
    reversed_text = " ".join(reversed(texts[0].split()))
    assert not np.allclose(again.encode([reversed_text]), both[:1], atol=1e-3)
    with pytest.raises(RnnembedError, match="cannot stream"):
        again.stream()
    lines = valid.read_text(encoding="utf-8").splitlines()[:50]
    with again.adapted(lines):  # each direction fitted on the lines read its way
        _adapted_stats_match(again, lines)
    np.testing.assert_array_equal(again.encode(texts), both)  # both directions put back
    fit = embedding.fit_text_stats  # the forward half is fitted, the backward half fails

    def forward_only(model, texts, tokenizer, backward):
        return not backward and fit(model, texts, tokenizer, backward)

    monkeypatch.setattr(embedding, "fit_text_stats", forward_only)
    with pytest.raises(RnnembedError, match="too few"), again.adapted(lines):
        pass
    np.testing.assert_array_equal(again.encode(texts), both)
