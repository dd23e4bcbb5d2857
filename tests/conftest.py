"""Shared helpers: real datasets under $RNNEMBED_DATA_DIR, skipped with a message if absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_file(relative: str) -> Path:
    """A file under $RNNEMBED_DATA_DIR, or skip the test saying what is missing."""
    root = os.environ.get("RNNEMBED_DATA_DIR")
    if not root:
        pytest.skip(f"RNNEMBED_DATA_DIR is not set; this test needs {relative}")
    path = Path(root) / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent; this test needs it")
    return path
