"""Sampling text from a RecurrentLM: temperature, top-k and top-p (nucleus)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rnnembed.config import DEFAULT_TEMPERATURE, check_seed, is_number, is_whole
from rnnembed.errors import RnnembedError
from rnnembed.model import RecurrentLM

CONTEXT_WINDOW = 512  # context tokens read per forward call: logits for each are kept


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set whose probability reaches
    ``top_p``; the rest become −inf. 0 and 1.0 switch a filter off."""
    logits = logits.clone()
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1, None]
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keeps the first past top_p
        drop[..., 0] = False  # and the likeliest always: a top_p under float32's 1e-45 is 0
        logits[order[drop]] = float("-inf")
    return logits


def sample(
    model: RecurrentLM,
    context: list[int],
    max_tokens: int,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[int]:
    """Draw ``max_tokens`` ids after ``context`` (non-empty), one by one as they are drawn.
    Temperature 0 is greedy; the same seed gives the same ids. The arguments are checked
    here, before the first id is asked for."""
    if not context:
        raise RnnembedError("sampling needs at least one context token")
    numbers = is_number(temperature) and is_number(top_p)
    if not (numbers and is_whole(max_tokens) and is_whole(top_k)):
        raise RnnembedError(
            "max_tokens and top_k must be whole numbers, temperature and top_p numbers; got "
            f"{max_tokens!r}, {top_k!r}, {temperature!r} and {top_p!r}"
        )
    rules = [
        ("max_tokens", max_tokens, max_tokens >= 0, "at least 0"),
        ("temperature", temperature, temperature >= 0, "at least 0 (0: the likeliest token)"),
        ("top_k", top_k, top_k >= 0, "at least 0 (0: no cut)"),
        ("top_p", top_p, 0 < top_p <= 1, "above 0 and at most 1"),
    ]
    for name, value, ok, rule in rules:
        if not ok:  # NaN fails every comparison, so it lands here too
            raise RnnembedError(f"{name} must be {rule}, not {value}")
    if seed is not None:
        check_seed(seed)
    return _draw(model, context, max_tokens, temperature, top_k, top_p, seed)


def _draw(
    model: RecurrentLM,
    context: list[int],
    max_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
) -> Iterator[int]:
    with torch.no_grad():
        model.eval()
        device = next(model.parameters()).device
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(seed) if seed is not None else torch.seed())
        state = None
        for start in range(0, len(context), CONTEXT_WINDOW):  # memory bounded by the window
            window = torch.tensor([context[start : start + CONTEXT_WINDOW]], device=device)
            out = model(window, state)
            state = out.state
        logits = out.logits[0, -1].float().cpu()
    # no_grad in blocks that hold no yield: around one, it would reach the caller's code too
    for drawn in range(1, max_tokens + 1):
        scaled = logits / temperature if temperature > 0 else logits
        if temperature == 0 or not torch.isfinite(scaled).all():  # a tiny temperature: greedy
            token = int(logits.argmax())
        else:
            filtered = filter_logits(scaled, top_k, top_p)
            token = int(torch.multinomial(filtered.softmax(dim=-1), 1, generator=generator))
        yield token
        if drawn < max_tokens:
            with torch.no_grad():
                out = model(torch.tensor([[token]], device=device), state)
            logits, state = out.logits[0, -1].float().cpu(), out.state
