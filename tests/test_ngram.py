import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_file
from rnnembed import RnnembedError, Tokenizer
from rnnembed.ngram import FALLBACK_DISCOUNTS, KneserNeyLM

EOS = 0


def _next_probs(model: KneserNeyLM, prefix: list[int]) -> np.ndarray:
    """p(w | prefix) for every id w."""
    return np.exp([model.log_probs([*prefix, w])[-1] for w in range(model.vocab_size)])


def _markov_stream(n_tokens: int, vocab_size: int, seed: int) -> list[int]:
    """Whole sentences (at least ``n_tokens`` ids) from a sparse random bigram source, the same
    for every seed of one ``vocab_size``: each word has three likely successors."""
    successors = np.random.default_rng(vocab_size).integers(1, vocab_size, size=(vocab_size, 3))
    rng = np.random.default_rng(seed)
    stream, word = [], EOS
    while len(stream) < n_tokens or word != EOS:
        word = EOS if rng.random() < 0.1 else int(rng.choice(successors[word]))
        stream.append(word)
    return stream


def _sentences(stream: list[int]) -> list[list[int]]:
    out, current = [], []
    for w in stream:
        current.append(w)
        if w == EOS:
            out.append(current)
            current = []
    return out + ([current] if current else [])


def _reference_log_probs(train, test, vocab_size, order):
    """Chen & Goodman's interpolated modified KN written out with dicts and tuples, with an
    explicit <s> (None) that starts every sentence."""
    raw = Counter()
    history = [None]
    for w in train:
        for k in range(1, min(order, len(history) + 1) + 1):
            raw[(*history[len(history) - k + 1 :], w)] += 1
        history = [None] if w == EOS else [*history, w]
    left = Counter(g[1:] for g in raw)
    count = {g: n if len(g) == order or g[0] is None else left[g] for g, n in raw.items()}

    discounts, totals = {}, defaultdict(lambda: [0, 0.0])
    for k in range(1, order + 1):
        n = Counter(c for g, c in count.items() if len(g) == k)
        try:
            y = n[1] / (n[1] + 2 * n[2])
            d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
            valid = all(0 < d_i < i for i, d_i in enumerate(d, start=1))
        except ZeroDivisionError:
            valid = False
        discounts[k] = d if valid else FALLBACK_DISCOUNTS
    for g, c in count.items():
        totals[g[:-1]][0] += c
        totals[g[:-1]][1] += discounts[len(g)][min(c, 3) - 1]

    def prob(w, h):
        lower = prob(w, h[1:]) if h else 1 / vocab_size
        if h not in totals:
            return lower
        total, discount_mass = totals[h]
        c = count.get((*h, w), 0)
        own = c - discounts[len(h) + 1][min(c, 3) - 1] if c else 0.0
        return (own + discount_mass * lower) / total

    out, history = [], [None]
    for w in test:
        out.append(math.log(prob(w, tuple(history[max(0, len(history) - order + 1) :]))))
        history = [None] if w == EOS else [*history, w]
    return np.array(out)


def test_bigram_matches_hand_computed_values():
    # ids: 0 eos, 1 a, 2 b, 3 c, 4 d (never seen). Sentences: "a b", "a b", "a c", "b".
    model = KneserNeyLM.train([1, 2, 0, 1, 2, 0, 1, 3, 0, 2, 0], 5, EOS, order=2)
    # bigram counts (<s> a)=3 (a b)=2 (b </s>)=3 (a c)=1 (c </s>)=1 (<s> b)=1: n1..n4 = 3,1,2,0
    # gives D2 < 0; continuation counts a=1 b=2 c=1 </s>=2: n1..n4 = 2,2,0,0 gives D2 = 2.
    # Both orders fall back to D = 0.5, 1, 1.5.
    assert model.discounts == [FALLBACK_DISCOUNTS, FALLBACK_DISCOUNTS]
    # p1(w) = (N1+(. w) - D) / 6 + gamma / 5 with gamma = (0.5 + 1 + 0.5 + 1) / 6 = 1/2
    p1 = {"a": 0.5 / 6 + 0.1, "b": 1 / 6 + 0.1, "c": 0.5 / 6 + 0.1, "eos": 1 / 6 + 0.1, "d": 0.1}
    assert sum(p1.values()) == pytest.approx(1)
    expected = [
        1.5 / 4 + (2 / 4) * p1["a"],  # a | <s>: c(<s> .) = 4, gamma = (1.5 + 0.5) / 4
        1 / 3 + (1.5 / 3) * p1["b"],  # b | a: c(a .) = 3, gamma = (1 + 0.5) / 3
        1.5 / 3 + (1.5 / 3) * p1["eos"],  # </s> | b
        (2 / 4) * p1["d"],  # d | <s>: unseen bigram
        p1["c"],  # c | d: unseen context
        0.5 / 1 + (0.5 / 1) * p1["eos"],  # </s> | c
    ]
    got = np.exp(model.log_probs([1, 2, 0, 4, 3, 0]))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert model.evaluate([1, 2, 0, 4, 3, 0]) == (6, pytest.approx(-np.log(expected).sum()))


def test_order_one_is_the_unigram_interpolated_with_uniform():
    # counts: 1,2,3,4 once each, 5,6 twice, 7 three times, eos four times: n1..n4 = 4,2,1,1
    stream = [1, 2, 3, 4, 5, 5, 6, 6, 7, 7, 7, 0, 0, 0, 0]
    model = KneserNeyLM.train(stream, 10, EOS, order=1)
    # Y = 4/8: D1 = 1 - 2(1/2)(2/4) = 1/2, D2 = 2 - 3(1/2)(1/2) = 5/4, D3+ = 3 - 4(1/2)(1/1) = 1
    assert model.discounts == [pytest.approx((0.5, 1.25, 1.0))]
    counts = np.bincount(stream, minlength=10)
    d = np.array([0, 0.5, 1.25, 1.0])[np.minimum(counts, 3)]
    expected = (counts - d) / 15 + d.sum() / 15 / 10
    for prefix in ([], [1, 2], [7, 7, 7, 0, 9]):
        np.testing.assert_allclose(_next_probs(model, prefix), expected, rtol=1e-12)
    assert expected[8] == expected[9] > 0


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_matches_a_plain_dictionary_implementation(order):
    train = _markov_stream(3000, 15, seed=1)
    test = _markov_stream(400, 15, seed=2)[:-1] + [14, 13, 14]  # some unseen n-grams, no final eos
    model = KneserNeyLM.train(train, 15, EOS, order=order)
    reference = _reference_log_probs(train, test, 15, order)
    np.testing.assert_allclose(model.log_probs(test), reference, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    train=st.lists(st.integers(0, 5), min_size=1, max_size=40),
    prefix=st.lists(st.integers(0, 7), max_size=5),
    order=st.integers(1, 5),
)
def test_every_next_token_distribution_sums_to_one(train, prefix, order):
    model = KneserNeyLM.train(train, 8, EOS, order=order)  # ids 6 and 7 are never seen
    probs = _next_probs(model, prefix)
    assert probs.sum() == pytest.approx(1, abs=1e-12)
    assert probs.min() > 0


def test_kneser_ney_beats_the_unigram_on_held_out_text():
    train, held_out = _markov_stream(20_000, 40, seed=3), _markov_stream(2_000, 40, seed=4)
    ppl = {}
    for order in (1, 2, 3):
        n, nll = KneserNeyLM.train(train, 40, EOS, order=order).evaluate(held_out)
        ppl[order] = math.exp(nll / n)
    assert ppl[3] < ppl[1] / 2
    assert ppl[2] < ppl[1] / 2


def test_contexts_never_cross_eos():
    stream = _markov_stream(2_000, 12, seed=5)
    sentences = _sentences(stream)
    forward = KneserNeyLM.train(stream, 12, EOS, order=4)
    backward = KneserNeyLM.train(sum(reversed(sentences), []), 12, EOS, order=4)
    test = _markov_stream(300, 12, seed=6)
    # Training: the order of the sentences does not matter.
    np.testing.assert_allclose(forward.log_probs(test), backward.log_probs(test), rtol=1e-12)
    # Scoring: each sentence is scored as if it started the stream.
    pieces = [forward.log_probs(s) for s in _sentences(test)]
    np.testing.assert_allclose(forward.log_probs(test), np.concatenate(pieces), rtol=1e-12)


def test_what_crossing_contexts_would_learn_is_not_learned():
    # Sentences "1 2", "3 4", "5 3", 20 times: 3 always comes right after "2 eos", yet a
    # sentence starts with 3 only a third of the time.
    model = KneserNeyLM.train([1, 2, 0, 3, 4, 0, 5, 3, 0] * 20, 6, EOS, order=3)
    after_2 = model.log_probs([1, 2, 0, 3])[-1]
    assert after_2 == model.log_probs([3])[0]
    assert after_2 < math.log(0.4)


@pytest.mark.parametrize("order", [0, 6, 2.0])
def test_order_outside_one_to_five_is_refused(order):
    with pytest.raises(RnnembedError, match="order"):
        KneserNeyLM.train([1, 2, 0], 3, EOS, order=order)


def test_user_errors_are_clear():
    with pytest.raises(RnnembedError, match="no tokens"):
        KneserNeyLM.train([], 3, EOS)
    with pytest.raises(RnnembedError, match="0..2"):
        KneserNeyLM.train([1, 3, 0], 3, EOS)
    for vocab_size in (4.0, "4", 0, 10**12):  # 10**12 asked for 931 GiB
        with pytest.raises(RnnembedError, match="vocab_size must be a whole number from 1"):
            KneserNeyLM.train([1, 2, 0], vocab_size, EOS)
    for eos in (0.5, None, 3):
        with pytest.raises(RnnembedError, match="must be an id of the vocabulary"):
            KneserNeyLM.train([1, 2, 0], 3, eos)
    model = KneserNeyLM.train([1, 2, 0], 3, EOS)
    with pytest.raises(RnnembedError, match="tokenizer"):
        model.log_probs([-1])
    with pytest.raises(RnnembedError, match="flat"):
        model.log_probs([[1, 2]])
    assert model.log_probs([]).shape == (0,)
    assert model.evaluate([]) == (0, 0.0)


def test_ptb_kn5_valid_perplexity_is_the_published_kind():
    train_path = shared_file("ptb/ptb.train.txt")
    valid_path = shared_file("ptb/ptb.valid.txt")

    def lines(path):
        return [line.rstrip("\n") for line in open(path, encoding="utf-8")]

    tok = Tokenizer.train(lines(train_path), kind="word")
    train = [i for line in tok.encode_lines(lines(train_path)) for i in line]
    valid = [i for line in tok.encode_lines(lines(valid_path)) for i in line]
    ppl = {}
    for order in (2, 3, 5):
        model = KneserNeyLM.train(train, tok.vocab_size, tok.eos_id, order=order)
        n, nll = model.evaluate(valid)
        ppl[order] = math.exp(nll / n)
    assert 135 <= ppl[5] <= 160
    assert ppl[5] < ppl[3] < ppl[2]
