"""Configs are dataclasses saved as JSON: one way to turn them into dicts and back; and the
seed every config and call takes."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

import numpy as np

from rnnembed.errors import RnnembedError

T = TypeVar("T", bound="JsonConfig")
SEEDS = (-(2**63), 2**64 - 1)  # what torch.manual_seed takes
DEFAULT_TEMPERATURE = 0.8  # sampling's default, for every caller: a little sharper than the model


def check_seed(seed: int) -> None:
    if not is_whole(seed) or not SEEDS[0] <= seed <= SEEDS[1]:
        raise RnnembedError(f"seed must be a whole number from -2**63 to 2**64 - 1, not {seed!r}")


def is_whole(value: object) -> bool:
    """Whether ``value`` is an int (numpy's too), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class JsonConfig:
    """Mixin for dataclasses: ``to_dict`` for JSON, ``from_dict`` ignoring unknown keys (so a
    config written by a newer version still loads)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})
