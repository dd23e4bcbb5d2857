import torch

from rnnembed.model import CELLS, ModelConfig, RecurrentLM, stream_loss


def _model(cell, **kw):
    torch.manual_seed(0)
    return RecurrentLM(ModelConfig(vocab_size=30, cell=cell, layers=2, hidden=16, **kw))


def test_forward_shapes_and_state_for_every_cell():
    ids = torch.randint(0, 30, (3, 7))
    for cell in CELLS:
        out = _model(cell).eval()(ids)
        assert out.logits.shape == (3, 7, 30)
        assert out.hidden.shape == (3, 7, 16)
        assert len(out.state) == 2


def test_carried_state_equals_one_long_pass():
    ids = torch.randint(0, 30, (2, 12))
    for cell in CELLS:
        model = _model(cell).eval()
        whole = model(ids).logits
        first = model(ids[:, :5])
        second = model(ids[:, 5:], first.state).logits
        torch.testing.assert_close(
            torch.cat([first.logits, second], dim=1), whole, atol=1e-5, rtol=0
        )


def test_elman_is_the_articles_simple_rnn_math():
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(vocab_size=10, cell="elman", layers=1, hidden=6, tie_weights=False)
    )
    model.eval()
    ids = torch.tensor([[1, 4, 2]])
    rnn = model.rnns[0]
    h = torch.zeros(1, 6)
    for t in range(3):
        x = model.embed(ids[:, t])
        w = torch.cat([rnn.weight_ih_l0, rnn.weight_hh_l0], dim=1)  # W0 over [x; h_prev]
        h = torch.tanh(torch.cat([x, h], dim=1) @ w.T + rnn.bias_ih_l0 + rnn.bias_hh_l0)
    torch.testing.assert_close(model(ids).hidden[:, -1], h, atol=1e-6, rtol=0)


def test_tied_weights_share_one_matrix():
    model = _model("lstm")
    assert model.decoder.weight is model.embed.weight
    untied = _model("lstm", tie_weights=False)
    assert untied.decoder.weight is not untied.embed.weight


def test_stream_loss_scores_every_token_once():
    model = _model("gru").eval()
    ids = torch.randint(1, 30, (53,))
    tokens, nll = stream_loss(model, ids, eos_id=0, batch_size=1, bptt=7)
    inputs = torch.cat([torch.tensor([0]), ids[:-1]])
    logits = model(inputs[None]).logits[0]
    expected = torch.nn.functional.cross_entropy(logits, ids, reduction="sum").item()
    assert tokens == 53
    assert abs(nll - expected) < 1e-3
    # several rows lose only the state at row starts, never a token
    tokens4, nll4 = stream_loss(model, ids, eos_id=0, batch_size=4, bptt=5, min_row=10)
    assert tokens4 == 53 and abs(nll4 - expected) / expected < 0.1 and nll4 != nll
    # rows are at least min_row tokens long: a short text is one row, scored exactly
    assert abs(stream_loss(model, ids, eos_id=0, bptt=5)[1] - expected) < 1e-3
