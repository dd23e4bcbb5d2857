"""The seed article's neural-network building blocks, as small and correct torch code.

From one neuron (q = Σ wᵢxᵢ + b) to dense layers, a feed-forward network, hand-written
backpropagation, a training loop and the article's recurrent network, whose hidden state is
the embedding everything else in rnnembed builds on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnembed.config import is_number, is_whole
from rnnembed.errors import RnnembedError

Activation = Callable[[Tensor], Tensor]
LossName = Literal["l2", "cross_entropy"]


def neuron(x: Tensor, w: Tensor, b: Tensor | float) -> Tensor:
    """One neuron: q = Σᵢ wᵢxᵢ + b, over the last axis of ``x``."""
    return (x * w).sum(dim=-1) + b


def relu(q: Tensor) -> Tensor:
    """ReLU(q) = max(0, q)."""
    return torch.clamp(q, min=0)


def gelu(q: Tensor) -> Tensor:
    """Exact GELU: q·Φ(q) = q·½(1 + erf(q/√2)), Φ the standard normal CDF."""
    return 0.5 * q * (1.0 + torch.erf(q / math.sqrt(2.0)))


def gelu_sigmoid(q: Tensor) -> Tensor:
    """The article's GELU approximation: q·σ(1.702q)."""
    return q * torch.sigmoid(1.702 * q)


def identity(q: Tensor) -> Tensor:
    """No nonlinearity: q."""
    return q


ACTIVATIONS: dict[str, Activation] = {
    "relu": relu,
    "gelu": gelu,
    "gelu_sigmoid": gelu_sigmoid,
    "tanh": torch.tanh,
    "identity": identity,
}


def _activation(activation: str | Activation | None) -> Activation:
    if activation is None:
        return identity
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise RnnembedError(
            f"unknown activation {activation!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[activation]


class Dense(nn.Module):
    """A dense layer: y = act(Wx + b). Row i of W with b[i] is neuron i.

    ``activation`` is a name from ``ACTIVATIONS``, a callable, or None for none at all.
    Weights start uniform in ±1/√in_dims, as ``torch.nn.Linear`` does.
    """

    def __init__(self, in_dims: int, out_dims: int, activation: str | Activation | None = "gelu"):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dims)
        self.weight = nn.Parameter(torch.empty(out_dims, in_dims).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_dims).uniform_(-bound, bound))
        self.activation = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(x @ self.weight.T + self.bias)


class FeedForward(nn.Module):
    """Two dense layers: h₁ = GELU(W₁x + b₁), y = GELU(W₂h₁ + b₂)."""

    def __init__(self, in_dims: int, hidden_dims: int, out_dims: int):
        super().__init__()
        self.layer1 = Dense(in_dims, hidden_dims, gelu)
        self.layer2 = Dense(hidden_dims, out_dims, gelu)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.layer1(x))


class BasicNN(nn.Module):
    """The article's basic network: y = W₂·ReLU(W₁x + b₁) + b₂ (logits or a regression output)."""

    def __init__(self, in_dims: int, hidden_dims: int, out_dims: int):
        super().__init__()
        self.layer1 = Dense(in_dims, hidden_dims, relu)
        self.layer2 = Dense(hidden_dims, out_dims, None)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(self.layer1(x))


class SimpleRNN(nn.Module):
    """The article's recurrent network: h = act(W₀[x; h_prev] + b₀), y = W₁h + b₁.

    Fixed from the article's code:
      1. ``torch.cat(x, h_prev)`` becomes ``torch.cat((x, h_prev), dim=-1)``: cat takes a tuple
         and the axis to join on.
      2. ``super(RNN, self)`` named a class that does not exist; plain ``super()`` is used.
      3. h had no nonlinearity, so stacked steps collapsed into one linear map; h = tanh(...)
         by default (``activation`` chooses another).
      4. The usage loop never passed h back; :meth:`run` feeds each step's h into the next.
    """

    def __init__(self, in_dims: int, hidden_dims: int, out_dims: int, activation: str = "tanh"):
        super().__init__()
        self.hidden_dims = hidden_dims
        self.layer0 = Dense(in_dims + hidden_dims, hidden_dims, activation)
        self.layer1 = Dense(hidden_dims, out_dims, None)

    def init_hidden(self, batch_size: int) -> Tensor:
        """The zero state h₀, shape (batch_size, hidden_dims)."""
        weight = self.layer1.weight  # h₀ where the weights are: CPU, GPU, ...
        return torch.zeros(batch_size, self.hidden_dims, dtype=weight.dtype, device=weight.device)

    def forward(self, x: Tensor, h_prev: Tensor) -> tuple[Tensor, Tensor]:
        """One step: x (batch, in_dims), h_prev (batch, hidden_dims) -> (y, h)."""
        h = self.layer0(torch.cat((x, h_prev), dim=-1))
        y = self.layer1(h)
        return y, h

    def run(
        self, xs: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run whole sequences: xs (batch, time, in_dims) -> ys (batch, time, out_dims),
        hs (batch, time, hidden_dims), passing each h into the next step.

        With ``lengths`` (batch,), a padded sequence keeps its state past its end, so
        ``hs[:, -1]`` is every sequence's final state whatever else shares the batch.
        """
        if xs.dim() != 3 or xs.shape[1] == 0:
            raise RnnembedError(
                f"run takes xs of shape (batch, time, in_dims) with at least one step, not "
                f"{tuple(xs.shape)}; for one step call the model itself"
            )
        batch, steps, _ = xs.shape
        h = self.init_hidden(batch) if h0 is None else h0
        ys, hs = [], []
        for t in range(steps):
            y, h_new = self(xs[:, t], h)
            if lengths is not None:
                h_new = torch.where((t < lengths).unsqueeze(-1), h_new, h)
            h = h_new
            ys.append(y)
            hs.append(h)
        return torch.stack(ys, dim=1), torch.stack(hs, dim=1)


def loss_value(loss: LossName, output: Tensor, target: Tensor) -> Tensor:
    """Λ for ``l2``: mean of (y − t)² over all elements; ``cross_entropy``: mean over the rows
    of −log softmax(y)[t], with t a class index (or −Σ p·log softmax(y) for class
    probabilities p); the classes are on the last axis."""
    check_target(loss, output, target)
    if loss == "l2":
        return F.mse_loss(output, target)
    classes = output.shape[-1]
    rows = target.reshape(-1, classes) if target.is_floating_point() else target.reshape(-1)
    return F.cross_entropy(output.reshape(-1, classes), rows.long() if rows.dim() == 1 else rows)


def check_target(loss: LossName, output: Tensor, target: Tensor) -> None:
    """RnnembedError unless ``target`` fits ``output`` under ``loss``: for l2 the same shape
    (broadcasting (B, 1) against (B,) would compare every output with every target), for
    cross-entropy one class index in [0, classes) per row, or class probabilities of the
    output's shape; the batch not empty."""
    if loss not in ("l2", "cross_entropy"):
        raise RnnembedError(f"unknown loss {loss!r}; choose 'l2' or 'cross_entropy'")
    if output.numel() == 0:
        raise RnnembedError("the batch is empty; give each batch at least one example")
    if loss == "l2" and target.shape != output.shape:
        raise RnnembedError(
            f"an l2 target must have the output's shape {tuple(output.shape)}, not "
            f"{tuple(target.shape)}; reshape it (e.g. target.unsqueeze(-1))"
        )
    if loss == "cross_entropy":
        classes = output.shape[-1]
        if target.is_floating_point() and target.shape == output.shape:
            return  # class probabilities
        integer = not (
            target.is_floating_point() or target.is_complex() or target.dtype == torch.bool
        )
        if target.shape != output.shape[:-1] or not integer:
            raise RnnembedError(
                f"a cross_entropy target is one class index (an integer) per row, of shape "
                f"{tuple(output.shape[:-1])}, or class probabilities of the output's shape, not "
                f"{target.dtype} of shape {tuple(target.shape)}"
            )
        if target.min() < 0 or target.max() >= classes:
            raise RnnembedError(
                f"class indices must be from 0 to {classes - 1} (the output has {classes} "
                f"classes), not {int(target.min())} to {int(target.max())}"
            )


def _gelu_derivative(q: Tensor) -> Tensor:
    """d GELU/dq = Φ(q) + q·φ(q)."""
    cdf = 0.5 * (1.0 + torch.erf(q / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * q * q) / math.sqrt(2.0 * math.pi)
    return cdf + q * pdf


def manual_backward(
    model: FeedForward, x: Tensor, target: Tensor, loss: LossName = "l2"
) -> dict[str, Tensor]:
    """Backpropagation through a :class:`FeedForward` written out by hand, no autograd.

    Forward: z₁ = W₁x + b₁, h₁ = GELU(z₁), z₂ = W₂h₁ + b₂, y = GELU(z₂), Λ = loss(y, t).
      1. ∂Λ/∂y: 2(y − t)/N for l2 (N elements); (softmax(y) − onehot(t))/B for cross-entropy
         (class probabilities p in place of onehot(t)).
      2. ∂Λ/∂z₂ = ∂Λ/∂y ⊙ GELU′(z₂).
      3. ∂Λ/∂W₂ = (∂Λ/∂z₂)ᵀ h₁ and ∂Λ/∂b₂ = Σ_batch ∂Λ/∂z₂.
      4. ∂Λ/∂h₁ = ∂Λ/∂z₂ W₂.
      5. ∂Λ/∂z₁ = ∂Λ/∂h₁ ⊙ GELU′(z₁).
      6. ∂Λ/∂W₁ = (∂Λ/∂z₁)ᵀ x and ∂Λ/∂b₁ = Σ_batch ∂Λ/∂z₁.
    Returns the gradients keyed by ``model.named_parameters()`` names.
    """
    if not isinstance(model, FeedForward):  # the steps above hold GELU's derivative
        raise RnnembedError(
            f"manual_backward writes out a FeedForward's (GELU on both layers), not a "
            f"{type(model).__name__}'s; use autograd (loss.backward()) for other models"
        )
    with torch.no_grad():
        w1, b1 = model.layer1.weight, model.layer1.bias
        w2, b2 = model.layer2.weight, model.layer2.bias
        x2 = x.reshape(-1, x.shape[-1])
        z1 = x2 @ w1.T + b1
        h1 = gelu(z1)
        z2 = h1 @ w2.T + b2
        y = gelu(z2)
        if loss == "l2" and target.numel() == y.numel():  # any shape holding one per output
            dy = 2.0 * (y - target.reshape(y.shape)) / y.numel()
        else:
            check_target(loss, y.reshape(*x.shape[:-1], -1), target)
            if target.is_floating_point():  # class probabilities
                onehot = target.reshape(y.shape).to(y.dtype)
            else:
                onehot = F.one_hot(target.reshape(-1).long(), y.shape[-1]).to(y.dtype)
            dy = (torch.softmax(y, dim=-1) - onehot) / y.shape[0]
        dz2 = dy * _gelu_derivative(z2)
        dh1 = dz2 @ w2
        dz1 = dh1 * _gelu_derivative(z1)
        return {
            "layer1.weight": dz1.T @ x2,
            "layer1.bias": dz1.sum(dim=0),
            "layer2.weight": dz2.T @ h1,
            "layer2.bias": dz2.sum(dim=0),
        }


@dataclass
class FitResult:
    """What :func:`fit` did: the mean loss of each epoch, and whether it converged."""

    losses: list[float] = field(default_factory=list)
    converged: bool = False


def fit(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss: LossName = "l2",
    optimizer: Literal["sgd", "adam"] = "sgd",
    lr: float = 0.1,
    epochs: int = 100,
    tol: float = 1e-6,
) -> FitResult:
    """The article's loop: a batch in, Λ, backprop, update, repeat.

    Stops when an epoch's mean loss changes by less than ``tol`` from the one before, or after
    ``epochs`` passes over ``batches`` (a re-iterable of (x, target) pairs). A loss that is not
    finite stops it with an error and the model's weights as they were before the call.
    """
    batches = list(batches)
    if not batches or not all(isinstance(b, tuple | list) and len(b) == 2 for b in batches):
        raise RnnembedError(
            "fit takes a list of (x, target) batches, at least one; wrap a single batch in a "
            "list: fit(model, [(x, target)])"
        )
    if not (is_number(lr) and 0 < lr < math.inf):
        raise RnnembedError(f"lr must be a number above 0, not {lr!r}")
    if not (is_whole(epochs) and epochs >= 0):
        raise RnnembedError(f"epochs must be a whole number, at least 0, not {epochs!r}")
    if not any(p.requires_grad for p in model.parameters()):
        raise RnnembedError("the model has no trainable parameters; there is nothing to fit")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        raise RnnembedError(f"unknown optimizer {optimizer!r}; choose 'sgd' or 'adam'")
    result = FitResult()
    model.train()
    for _ in range(epochs):
        total = 0.0
        for x, target in batches:
            opt.zero_grad()
            value = loss_value(loss, model(x), target)
            if not math.isfinite(value.item()):  # before the update, which would spread it
                model.load_state_dict(before)
                raise RnnembedError(
                    f"the loss became {value.item()} in epoch {len(result.losses) + 1}; check the "
                    "inputs for NaN or infinity, or lower lr (the weights are as they were)"
                )
            value.backward()
            opt.step()
            total += value.item()
        result.losses.append(total / len(batches))
        if len(result.losses) > 1 and abs(result.losses[-2] - result.losses[-1]) < tol:
            result.converged = True
            break
    return result
