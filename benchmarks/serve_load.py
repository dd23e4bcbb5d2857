"""Serving load: concurrent clients sending embedding requests to `rnnembed serve` on loopback,
with dynamic batching and without it (a batch of one request at a time).

python benchmarks/serve_load.py [--model DIR] [--clients 8] [--requests 1000]

Without --model, a model is trained on PTB (from $RNNEMBED_DATA_DIR) for --train-minutes into
--out (and reused from there next time). A request is one short real sentence (STS-B dev, else
PTB valid lines) sent as the official OpenAI client sends it (``encoding_format: base64``).
Each of --clients threads sends --requests requests, one after another, on its own keep-alive
connection. The server runs as `rnnembed serve` in its own process, started afresh for each
setting; the clients share this machine's cores with it, as they would on one box. Reported per
setting: throughput (requests/s), p50 and p99 latency, errors (must be 0) and the mean number of
requests merged per encode call (from /metrics), and the server's peak memory; and the
throughput gain of dynamic batching (``peak_rss_mb`` is this client process's). Exits 1 if any
request failed.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import emit, run, train_lm

from rnnembed.datasets import data_dir, find_dataset
from rnnembed.errors import RnnembedError
from rnnembed.language_model import CONFIG

SETTINGS = {"dynamic_batching": [], "batch_of_one": ["--max-batch-requests", "1"]}
WARMUP = 4  # requests per client before the clock starts


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: train one on PTB)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="where to train it")
    parser.add_argument("--train-minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000, help="requests per client")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("clients", "requests", "train_minutes"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0")
    return args


def model_folder(args: argparse.Namespace) -> Path:
    """--model, or a PTB model trained (once) under --out."""
    if args.model is not None:
        return args.model
    train, valid = find_dataset("ptb", "train"), find_dataset("ptb", "valid")
    if train is None or valid is None:
        raise RnnembedError("no --model and no PTB under $RNNEMBED_DATA_DIR to train one on")
    folder = args.out / f"ptb-{args.train_minutes:g}m"
    if not (folder / CONFIG).is_file():
        args.out.mkdir(parents=True, exist_ok=True)
        train_lm("ptb", [train], [valid], "bpe", args.train_minutes, args.out, args.seed)
    return folder


def sentences(limit: int = 5000) -> list[str]:
    """Short real sentences: STS-B dev pairs, else PTB validation lines."""
    root = data_dir()
    stsb = root / "stsb" / "sts-dev.csv" if root else None
    if stsb is not None and stsb.is_file():
        rows = [line.split("\t") for line in stsb.read_text(encoding="utf-8").splitlines()]
        found = [s.strip() for row in rows if len(row) >= 7 for s in row[5:7]]
    else:
        ptb = find_dataset("ptb", "valid")
        if ptb is None:
            raise RnnembedError("no STS-B or PTB under $RNNEMBED_DATA_DIR for request texts")
        found = [line.strip() for line in ptb.read_text(encoding="utf-8").splitlines()]
    return list(dict.fromkeys(s for s in found if s))[:limit]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, options: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "rnnembed", "serve", str(model), "--port", str(port)]
    process = subprocess.Popen([*command, "--quiet", *options], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rnnembed serve exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("rnnembed serve did not answer /health within 120 s")


def server_peak_rss_mb(pid: int) -> float | None:
    """The server process's peak resident memory (Linux's VmHWM), None where unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return round(kib / 1024, 1)


def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the server's rnnembed_batch_size histogram."""
    text = httpx.get(f"{url}/metrics").text
    found = {
        m[1]: float(m[2])
        for m in re.finditer(r"^rnnembed_batch_size_(sum|count) (\S+)$", text, re.M)
    }
    return found["sum"], found["count"]


def load(url: str, model: str, texts: list[str], clients: int, requests: int) -> dict:
    """Each client sends ``requests`` one-sentence requests in turn; latencies and errors."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    clock: dict = {}

    def start_clock() -> None:  # once every client has warmed up, before any is let go
        clock["before"], clock["began"] = batch_stats(url), time.perf_counter()

    start_line = threading.Barrier(clients, action=start_clock, timeout=300)

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for n in range(-WARMUP, requests):
                if n == 0:
                    start_line.wait()
                body = {"model": model, "input": texts[(i * requests + n) % len(texts)],
                        "encoding_format": "base64"}  # fmt: skip
                began = time.perf_counter()
                try:
                    ok = http.post("/v1/embeddings", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if n >= 0:
                    latencies[i].append(time.perf_counter() - began)
                    errors[i] += not ok

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - clock["began"]
    before, after = clock["before"], batch_stats(url)
    all_ms = np.array([x for per in latencies for x in per]) * 1000
    return {
        "requests": int(all_ms.size),
        "seconds": round(seconds, 2),
        "throughput_rps": round(all_ms.size / seconds, 1),
        "p50_ms": round(float(np.percentile(all_ms, 50)), 2),
        "p99_ms": round(float(np.percentile(all_ms, 99)), 2),
        "errors": sum(errors),
        "mean_batch_size": round((after[0] - before[0]) / max(after[1] - before[1], 1), 2),
    }


def main() -> None:
    args = arguments()
    model = model_folder(args)
    texts = sentences()
    results = {}
    for name, options in SETTINGS.items():
        port = free_port()
        server = start_server(model, port, options)
        try:
            url = f"http://127.0.0.1:{port}"
            results[name] = load(url, model.resolve().name, texts, args.clients, args.requests)
            results[name]["server_peak_rss_mb"] = server_peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(60)
    gain = results["dynamic_batching"]["throughput_rps"] / results["batch_of_one"]["throughput_rps"]
    emit(
        {
            "benchmark": "serve_load",
            "model": str(model),
            "clients": args.clients,
            "requests_per_client": args.requests,
            "request": f"one sentence of {len(texts)} real ones, encoding_format base64",
            "server_torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
            **results,
            "batching_throughput_gain": round(gain, 2),
        }
    )
    if any(r["errors"] for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    run(main)
