"""Shared helpers: real datasets under $RNNEMBED_DATA_DIR, skipped with a message if absent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
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


def train_command(train: Path, out: Path, *extra: str) -> list[str]:
    """`rnnembed train` of a small char model on ``train`` for 2 epochs, as a command line."""
    options = "--tokenizer char --layers 1 --hidden 64 --batch-size 8 --bptt 32 --epochs 2"
    return [sys.executable, "-m", "rnnembed", "train", str(train), "--out", str(out),
            *options.split(), "--seed", "3", "--quiet", *extra]  # fmt: skip


def kill_at_first_checkpoint(command: list[str], out: Path, env: dict | None = None) -> None:
    """Run a training command and SIGKILL it as soon as its first checkpoint is written."""
    from rnnembed.training import CHECKPOINT

    proc = subprocess.Popen(command, env=env)
    deadline = time.time() + 120
    while not (out / CHECKPOINT).is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / CHECKPOINT).is_file()


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(train.txt, valid.txt): real English from Python's bundled documentation topics."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[key] for key in sorted(topics))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    folder = tmp_path_factory.mktemp("corpus")
    train, valid = folder / "train.txt", folder / "valid.txt"
    train.write_text("\n".join(lines[:600]) + "\n", encoding="utf-8")
    valid.write_text("\n".join(lines[600:700]) + "\n", encoding="utf-8")
    return train, valid


@pytest.fixture(scope="session")
def tiny_model_folder(small_corpus, tmp_path_factory) -> Path:
    """A tiny bpe language model trained once on the small corpus; tests only read its folder."""
    from rnnembed.language_model import LanguageModel

    out = tmp_path_factory.mktemp("tiny") / "model"
    LanguageModel.train(
        [small_corpus[0]], out, tokenizer="bpe", vocab_size=300, layers=1, hidden=32,
        batch_size=8, bptt=16, epochs=0.5, lr=1e-2,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def lm(tiny_model_folder):
    """The tiny model of :func:`tiny_model_folder`, loaded."""
    from rnnembed.language_model import LanguageModel

    return LanguageModel.load(tiny_model_folder)


def free_port() -> int:
    """A loopback port that was free a moment ago, for a server process to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The URI of a Milvus server on a free loopback port: the ``milvus`` server binary of
    Milvus Lite 2.5 (Milvus's C++ engine behind its gRPC API), which .ci/run installs and names
    in $RNNEMBED_TEST_MILVUS_BIN. It serves in "local mode": FLAT, IVF_FLAT or AUTOINDEX only."""
    binary = os.environ.get("RNNEMBED_TEST_MILVUS_BIN")
    if not binary:
        pytest.skip("RNNEMBED_TEST_MILVUS_BIN is not set: no Milvus server to test against")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"RNNEMBED_TEST_MILVUS_BIN={binary} is not an executable file")
    folder = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, str(folder / "server.db"), f"127.0.0.1:{port}", "ERROR"],
            cwd=folder,
            env={**os.environ, "LD_LIBRARY_PATH": str(Path(binary).parent)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"the Milvus server did not start: {(folder / 'server.log').read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
