import copy
import math

import pytest
import torch

from rnnembed import RnnembedError
from rnnembed.nn import (
    BasicNN,
    Dense,
    FeedForward,
    SimpleRNN,
    fit,
    gelu,
    gelu_sigmoid,
    loss_value,
    manual_backward,
    neuron,
    relu,
)


def test_neuron_is_weighted_sum_plus_bias():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    w = torch.tensor([0.5, -1.0, 2.0])
    assert neuron(x, w, 0.25).tolist() == [1 * 0.5 - 2 + 6 + 0.25, 1.0 + 1.0 + 0.25]


def test_relu_and_exact_gelu():
    q = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert torch.equal(relu(q), torch.where(q > 0, q, torch.zeros_like(q)))
    torch.testing.assert_close(gelu(q), torch.nn.functional.gelu(q), atol=1e-12, rtol=0)
    phi = torch.tensor([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in q.tolist()], dtype=q.dtype)
    torch.testing.assert_close(gelu(q), q * phi, atol=1e-12, rtol=0)


def test_gelu_sigmoid_is_close_to_gelu_but_not_equal():
    q = torch.linspace(-8, 8, 160_001, dtype=torch.float64)
    gap = (gelu_sigmoid(q) - gelu(q)).abs().max().item()
    assert 0.01 < gap <= 0.025


def test_two_linear_dense_layers_collapse_into_one_linear_map():
    torch.manual_seed(0)
    first = Dense(6, 8, activation=None).double()
    second = Dense(8, 3, activation=None).double()
    x = torch.randn(50, 6, dtype=torch.float64)
    w = second.weight @ first.weight
    b = second.weight @ first.bias + second.bias
    torch.testing.assert_close(second(first(x)), x @ w.T + b, atol=1e-12, rtol=0)


def _affine_defect(f, x, y):
    """f(x + y) - f(x) - f(y) + f(0): zero for every affine map."""
    return (f(x + y) - f(x) - f(y) + f(torch.zeros_like(x))).abs().max().item()


def test_gelu_between_dense_layers_breaks_linearity():
    torch.manual_seed(0)
    x, y = torch.randn(2, 200, 6, dtype=torch.float64)
    linear = torch.nn.Sequential(Dense(6, 8, None), Dense(8, 3, None)).double()
    nonlinear = torch.nn.Sequential(Dense(6, 8, "gelu"), Dense(8, 3, "gelu")).double()
    assert _affine_defect(linear, x, y) < 1e-12
    assert _affine_defect(nonlinear, x, y) > 1e-2
    # and no single linear map fits it: least squares leaves a clear residual
    inputs = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], dim=1)
    target = nonlinear(x).detach()
    solution = torch.linalg.lstsq(inputs, target).solution
    assert (inputs @ solution - target).pow(2).mean().item() > 1e-4


def _one_hot_sentence(words, vocab):
    return torch.nn.functional.one_hot(torch.tensor([vocab[w] for w in words]), len(vocab)).double()


SENTENCES = [["let's", "eat", ",", "Charles"], ["let's", "eat", "Charles"]]
VOCAB = {w: i for i, w in enumerate(["let's", "eat", ",", "Charles", "grandma"])}


def _padded(sentences):
    seqs = [_one_hot_sentence(s, VOCAB) for s in sentences]
    lengths = torch.tensor([len(s) for s in seqs])
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


def test_simple_rnn_hears_the_comma():
    torch.manual_seed(0)
    rnn = SimpleRNN(len(VOCAB), 16, 4).double()
    xs, lengths = _padded(SENTENCES)
    _, hs = rnn.run(xs, lengths=lengths)
    final = hs[:, -1]
    assert (final[0] - final[1]).abs().max().item() > 1e-3


def test_simple_rnn_final_state_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    rnn = SimpleRNN(len(VOCAB), 16, 4).double()
    alone_x, alone_len = _padded([SENTENCES[1]])
    _, alone = rnn.run(alone_x, lengths=alone_len)
    others = [["grandma", "eat", ",", "let's", "eat", "Charles", ","], SENTENCES[0], SENTENCES[1]]
    batch_x, batch_len = _padded(others)
    _, batched = rnn.run(batch_x, lengths=batch_len)
    torch.testing.assert_close(batched[2, -1], alone[0, -1], atol=1e-12, rtol=0)


def test_simple_rnn_run_passes_h_back_and_applies_a_nonlinearity():
    torch.manual_seed(0)
    rnn = SimpleRNN(3, 5, 2).double()
    xs = 10 * torch.randn(2, 6, 3, dtype=torch.float64)
    ys, hs = rnn.run(xs)
    h = rnn.init_hidden(2).double()
    for t in range(6):
        y, h = rnn(xs[:, t], h)
        torch.testing.assert_close(ys[:, t], y)
        torch.testing.assert_close(hs[:, t], h)
    assert hs.abs().max().item() < 1.0  # tanh bounds the state
    _, h_fresh = rnn(xs[:, 5], rnn.init_hidden(2).double())
    assert (h_fresh - hs[:, 5]).abs().max().item() > 1e-3  # the past matters


@pytest.mark.parametrize("loss", ["l2", "cross_entropy"])
def test_manual_backward_equals_autograd(loss):
    torch.manual_seed(0)
    model = FeedForward(5, 7, 4).double()
    x = torch.randn(16, 5, dtype=torch.float64)
    target = torch.randn(16, 4, dtype=torch.float64) if loss == "l2" else torch.randint(0, 4, (16,))
    manual = manual_backward(model, x, target, loss=loss)
    model.zero_grad()
    loss_value(loss, model(x), target).backward()
    names = dict(model.named_parameters())
    assert set(manual) == set(names)
    for name, param in names.items():
        torch.testing.assert_close(manual[name], param.grad, atol=1e-6, rtol=0)


def _regression_batches():
    torch.manual_seed(1)
    x = torch.randn(512, 2)
    y = (torch.sin(2 * x[:, :1]) + 0.5 * x[:, 1:]).detach()
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]


def test_fit_cuts_regression_loss_by_ninety_percent():
    batches = _regression_batches()
    torch.manual_seed(0)
    model = BasicNN(2, 32, 1)
    with torch.no_grad():
        before = sum(loss_value("l2", model(x), y).item() for x, y in batches) / len(batches)
    fit(model, batches, loss="l2", optimizer="adam", lr=0.01, epochs=300, tol=0)
    with torch.no_grad():
        after = sum(loss_value("l2", model(x), y).item() for x, y in batches) / len(batches)
    assert after <= 0.1 * before


def test_fit_classifies_separable_data():
    torch.manual_seed(2)
    x = torch.randn(400, 2)
    labels = (x[:, 0] - 0.5 * x[:, 1] > 0).long()
    batches = [(x[i : i + 50], labels[i : i + 50]) for i in range(0, 400, 50)]
    torch.manual_seed(0)
    model = FeedForward(2, 16, 2)
    fit(model, batches, loss="cross_entropy", optimizer="sgd", lr=0.5, epochs=200, tol=0)
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == labels).float().mean().item()
    assert accuracy >= 0.95


def test_fit_stops_when_converged():
    torch.manual_seed(0)
    model = BasicNN(2, 8, 1)
    result = fit(
        model, _regression_batches(), loss="l2", optimizer="adam", lr=0.01, epochs=5000, tol=1e-3
    )
    assert result.converged
    assert len(result.losses) < 5000
    assert abs(result.losses[-1] - result.losses[-2]) < 1e-3


def test_fit_rejects_unknown_names():
    model = BasicNN(2, 4, 1)
    batches = _regression_batches()
    with pytest.raises(RnnembedError, match="optimizer"):
        fit(model, batches, optimizer="lbfgs")
    with pytest.raises(RnnembedError, match="loss"):
        fit(model, batches, loss="hinge")


def test_user_mistakes_are_clear_errors_not_wrong_results():
    x, y = torch.randn(8, 1), torch.randn(8)
    with pytest.raises(RnnembedError, match=r"l2 target must have the output's shape \(8, 1\)"):
        fit(BasicNN(1, 4, 1), [(x, y)])  # (8, 1) against (8,) broadcast to (8, 8)
    with pytest.raises(RnnembedError, match="writes out a FeedForward's.*not a BasicNN's"):
        manual_backward(BasicNN(1, 4, 1), x, y.unsqueeze(-1))  # its ReLU is not GELU
    logits = torch.randn(4, 3)
    for labels, problem in [
        (torch.tensor([0, 1, 2, 3]), "class indices must be from 0 to 2"),
        (torch.tensor([0, 1, -100, 2]), "class indices must be from 0 to 2"),  # not ignored
        (torch.tensor([0.0, 1.0, 2.0, 1.0]), "one class index .* per row"),
    ]:
        with pytest.raises(RnnembedError, match=problem):
            loss_value("cross_entropy", logits, labels)
    with pytest.raises(RnnembedError, match="the batch is empty"):
        loss_value("l2", torch.zeros(0, 1), torch.zeros(0, 1))
    with pytest.raises(RnnembedError, match=r"wrap a single batch in a list"):
        fit(BasicNN(1, 4, 1), (x, y.unsqueeze(-1)))
    nan = torch.full((8, 1), float("nan"))
    with pytest.raises(RnnembedError, match="the loss became nan in epoch 1"):
        fit(BasicNN(1, 4, 1), [(nan, y.unsqueeze(-1))])
    model = BasicNN(1, 4, 1)
    weights = copy.deepcopy(model.state_dict())
    with pytest.raises(RnnembedError, match="the loss became nan in epoch 1.*as they were"):
        fit(model, [(x, y.unsqueeze(-1)), (nan, y.unsqueeze(-1))])  # after one good update
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name])
    for options, problem in [
        ({"lr": float("nan")}, "lr must be a number above 0, not nan"),
        ({"lr": -1}, "lr must be a number above 0"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
    ]:
        with pytest.raises(RnnembedError, match=problem):
            fit(BasicNN(1, 4, 1), [(x, y.unsqueeze(-1))], **options)
    with pytest.raises(RnnembedError, match="no trainable parameters"):
        fit(torch.nn.Identity(), [(x, x)])
    with pytest.raises(RnnembedError, match=r"shape \(batch, time, in_dims\)"):
        SimpleRNN(2, 3, 2).run(torch.randn(4, 2))


def test_simple_rnn_starts_its_state_where_its_weights_are():
    model = SimpleRNN(2, 3, 2).to("meta")  # as on a GPU: h0 follows the weights
    ys, hs = model.run(torch.randn(2, 4, 2, device="meta"))
    assert ys.device.type == hs.device.type == "meta" and hs.shape == (2, 4, 3)


def test_targets_in_every_form_the_losses_take():
    torch.manual_seed(0)
    model, x = FeedForward(5, 7, 4).double(), torch.randn(2, 3, 5, dtype=torch.float64)
    output = model(x)  # (batch, time, classes)
    labels = torch.randint(0, 4, (2, 3), dtype=torch.int32)
    expected = torch.nn.functional.cross_entropy(output.reshape(-1, 4), labels.reshape(-1).long())
    assert torch.allclose(loss_value("cross_entropy", output, labels), expected)
    probs = torch.softmax(torch.randn(2, 3, 4, dtype=torch.float64), -1)  # soft targets
    value = loss_value("cross_entropy", output, probs)
    value.backward()
    manual = manual_backward(model, x, probs, "cross_entropy")
    for name, param in model.named_parameters():
        assert torch.allclose(manual[name], param.grad, atol=1e-10), name
    regression = FeedForward(5, 7, 1).double()
    flat = torch.randn(6, dtype=torch.float64)  # one target per output, in any shape
    grads = manual_backward(regression, x.reshape(6, 5), flat)
    assert torch.allclose(
        grads["layer2.bias"],
        manual_backward(regression, x.reshape(6, 5), flat[:, None])["layer2.bias"],
    )
    with pytest.raises(RnnembedError, match="one class index"):
        loss_value("cross_entropy", output, labels.bool())
