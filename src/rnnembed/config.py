"""Configs are dataclasses saved as JSON: one way to turn them into dicts and back; and the
seed every config and call takes."""

from __future__ import annotations

import os
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


def check_flag(value: object, name: str) -> None:
    """RnnembedError unless ``value`` is True or False (numpy's too): taken for its truth, a
    string such as "no" would mean yes."""
    if not isinstance(value, bool | np.bool_):
        raise RnnembedError(f"{name} must be True or False, not {value!r}")


def check_model(model: object, needs: tuple[str, ...] = ("encode", "dim", "fingerprint")) -> None:
    """RnnembedError unless ``model`` is a loaded model (it has the methods ``needs``), not,
    say, the path of its folder."""
    if isinstance(model, str | bytes | os.PathLike) or not all(
        callable(getattr(model, name, None)) for name in needs
    ):
        raise RnnembedError(
            f"model must be a loaded model (LanguageModel.load(folder)), not {type(model).__name__}"
        )


def is_whole(value: object) -> bool:
    """Whether ``value`` is an int (numpy's too), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float (numpy's too), not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


class JsonConfig:
    """Mixin for dataclasses: ``to_dict`` for JSON, ``from_dict`` ignoring unknown keys (so a
    config written by a newer version still loads)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})

    def __post_init__(self) -> None:
        self.check_types()

    def check_types(self) -> None:
        """RnnembedError naming the first field whose value is not of its declared type (a
        saved "bidirectional": "no" would otherwise mean yes); numpy scalars become Python's,
        tuples lists, as JSON saves them."""
        for f in fields(self):  # type: ignore[arg-type]
            value = _plain(getattr(self, f.name))
            setattr(self, f.name, value)
            if not _fits(value, str(f.type)):
                raise RnnembedError(f"{f.name} must be {f.type}, not {value!r}")


def _plain(value: object) -> object:
    """JSON's own types for numpy scalars and tuples, in lists too."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


_TYPE_CHECKS = {
    "bool": lambda v: isinstance(v, bool),
    "int": is_whole,  # numpy's are Python's by now (_plain)
    "float": is_number,
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
}


def _fits(value: object, annotation: str) -> bool:
    """Whether ``value`` fits a field's annotation as written ("int", "float | None",
    "list[int]"); an annotation of other types is not checked."""
    for part in (p.strip() for p in annotation.split("|")):
        if part.startswith("list[") and part.endswith("]"):
            fits = isinstance(value, list) and all(_fits(v, part[5:-1]) for v in value)
        elif part in _TYPE_CHECKS:
            fits = _TYPE_CHECKS[part](value)
        else:
            return True
        if fits:
            return True
    return False
