"""Search speed of VectorStore: insert throughput, query latency, recall@10.

python benchmarks/search_speed.py [--uri URI] [--n 100000] [--dim 256] [--queries 1000]

N random unit vectors go into a VectorStore collection, with the store's own schema (BM25
function included: each row has a short text) and index, in batches of --batch; then the
collection is flushed and its vector index built. Each query (a random unit vector) is searched
alone through the store (end to end: pymilvus, gRPC, Milvus, hits), and all of them in one call.
recall@10 compares the store's hits with exact inner-product search in numpy. Random vectors in
many dimensions are the hardest case for a graph index: real embeddings have structure that
makes its job easier.

--uri: by default a new Milvus Lite 3 database in a temporary folder, where the same queries are
also timed on the segments' HNSW indexes alone; or a Milvus server (``http://host:19530``), in
which the benchmark makes a collection of its own and drops it at the end. A server of Milvus's
C++ engine runs on one machine without Docker from Milvus Lite 2.5's wheel, in "local mode"
(FLAT, IVF_FLAT or AUTOINDEX, which the store falls back to):

pip install --no-deps --target /tmp/milvus-server milvus-lite==2.5.1
LD_LIBRARY_PATH=/tmp/milvus-server/milvus_lite/lib \
    /tmp/milvus-server/milvus_lite/lib/milvus /tmp/milvus-server/data.db 127.0.0.1:19530 ERROR &
python benchmarks/search_speed.py --uri http://127.0.0.1:19530
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from common import emit, run

from rnnembed.store import HNSW_EF, VectorStore

K = 10
TARGETS = {"recall_at_10": 0.95, "p99_ms": 20.0}
PROGRESS = ("total_rows", "indexed_rows", "pending_index_rows", "state")  # describe_index's


class RandomVectors:
    """A stand-in for a model: the store asks its dimension and fingerprint; the benchmark
    inserts and searches precomputed vectors, so nothing is encoded."""

    def __init__(self, dim: int):
        self.width = dim

    def dim(self, pooling: str = "mean") -> int:
        return self.width

    def fingerprint(self, pooling: str = "mean") -> str:
        return f"random-unit-vectors-{self.width}"

    def encode(self, texts, pooling: str = "mean") -> np.ndarray:
        raise NotImplementedError("this benchmark searches precomputed vectors")


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top_k(queries: np.ndarray, data: np.ndarray, k: int) -> np.ndarray:
    """Indices of each query's k largest inner products, by brute force."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = queries[start : start + 100] @ data.T
        out[start : start + 100] = np.argpartition(-scores, k, axis=1)[:, :k]
    return out


def lite_collection(store: VectorStore):
    """The Milvus Lite engine's collection behind ``store`` (to wait for its index build)."""
    from milvus_lite.server_manager import server_manager_instance

    _, db, _ = server_manager_instance._servers[store._lite_path]
    return db.get_collection(store.collection)


def wait_for_index(store: VectorStore, rows: int, timeout_s: float = 1800) -> None:
    """Until the vector index covers all ``rows``: Milvus Lite builds segment indexes in a
    background thread, a server in its index nodes. A FLAT index has nothing to build (and a
    Milvus Lite 2.x server reports no indexed rows for it)."""
    if store._lite_path is not None:
        lite_collection(store)._wait_for_bg()
        return
    deadline = time.monotonic() + timeout_s
    while True:
        index = store.client.describe_index(store.collection, "vector")
        if index["index_type"] == "FLAT" or index["indexed_rows"] >= rows:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the index covers {index['indexed_rows']} of {rows} rows")
        time.sleep(0.2)


def index_only_latencies(store: VectorStore, queries: np.ndarray) -> np.ndarray:
    """Milvus Lite only: each query's time on the segments' HNSW indexes alone, in ms."""
    indexes = [s.indexes["vector"] for s in lite_collection(store)._segments_snapshot()]
    latencies = []
    for query in queries:
        begin = time.perf_counter()
        for hnsw in indexes:
            hnsw.search(query[None], K, params={"ef": HNSW_EF})
        latencies.append(time.perf_counter() - begin)
    return np.array(latencies) * 1000


def percentiles(ms: np.ndarray | None, prefix: str) -> dict:
    if ms is None:
        return {f"{prefix}_p50": None, f"{prefix}_p99": None}
    return {
        f"{prefix}_p50": round(float(np.percentile(ms, 50)), 3),
        f"{prefix}_p99": round(float(np.percentile(ms, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", help="a Milvus server (default: a new Milvus Lite database)")
    parser.add_argument("--token", default="", help="the server's token (user:password or key)")
    parser.add_argument("--n", type=int, default=100_000, help="vectors to index")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000, help="rows per insert")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, least in (("n", K + 1), ("dim", 1), ("queries", 1), ("batch", 1)):
        if getattr(args, name) < least:
            parser.error(f"--{name} must be at least {least}")

    rng = np.random.default_rng(args.seed)
    data = unit_vectors(rng, args.n, args.dim)
    queries = unit_vectors(rng, args.queries, args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        uri, collection = args.uri or Path(tmp) / "bench.db", f"bench_{os.getpid()}"
        model = RandomVectors(args.dim)
        with VectorStore(uri, model=model, collection=collection, token=args.token) as store:
            try:
                result = measure(store, data, queries, args.batch)
            finally:
                if args.uri:
                    store.client.drop_collection(collection)

    exact = exact_top_k(queries, data, K)
    found = result.pop("found")
    recall = float(np.mean([len(f & set(e)) / K for f, e in zip(found, exact, strict=True)]))
    p99 = result["latency_ms_p99"]
    emit(
        {
            "benchmark": "search_speed",
            "uri": args.uri or "Milvus Lite (a new database)",
            "vectors": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "k": K,
            **result,
            "recall_at_10": round(recall, 4),
            "targets": TARGETS,
            "meets_targets": recall >= TARGETS["recall_at_10"] and p99 <= TARGETS["p99_ms"],
            "pymilvus": version("pymilvus"),
            "milvus_lite": None if args.uri else version("milvus-lite"),
        }
    )


def measure(store: VectorStore, data: np.ndarray, queries: np.ndarray, batch: int) -> dict:
    """Insert ``data``, index it, and time ``queries``; ``found``: each query's hit ids."""
    start = time.perf_counter()
    for first in range(0, len(data), batch):
        rows = range(first, min(first + batch, len(data)))
        store._insert(
            [str(i) for i in rows],
            [f"document {i}" for i in rows],
            [f"random:{i}" for i in rows],
            [{}] * len(rows),
            data[first : first + len(rows)],
        )
    store.client.flush(store.collection)
    inserted = time.perf_counter() - start
    wait_for_index(store, len(data))
    indexed = time.perf_counter() - start
    index = store.client.describe_index(store.collection, "vector")

    store._search_vectors(queries[:10], K)  # warm up
    latencies, found = [], []
    for query in queries:
        begin = time.perf_counter()
        hits = store._search_vectors(query[None], K)[0]
        latencies.append(time.perf_counter() - begin)
        found.append({int(h.id) for h in hits})
    lite = store._lite_path is not None
    index_only = index_only_latencies(store, queries) if lite else None
    begin = time.perf_counter()
    store._search_vectors(queries, K)
    batched = time.perf_counter() - begin
    ms = np.array(latencies) * 1000
    return {
        "index": {
            **{k: v for k, v in index.items() if k not in PROGRESS},
            **({"ef": HNSW_EF} if index["index_type"] == "HNSW" else {}),
        },
        "segments": [
            {"rows": s.num_rows, "index": type(s.indexes.get("vector")).__name__}
            for s in lite_collection(store)._segments_snapshot()
        ]
        if lite
        else None,
        "insert_vectors_per_s": round(len(data) / inserted),
        "insert_seconds": round(inserted, 2),
        "index_build_seconds": round(indexed - inserted, 2),
        "insert_and_index_vectors_per_s": round(len(data) / indexed),
        **percentiles(ms, "latency_ms"),
        "latency_ms_mean": round(float(ms.mean()), 3),
        "queries_per_s": round(len(ms) / (ms.sum() / 1000), 1),
        **percentiles(index_only, "hnsw_only_latency_ms"),
        "batched_queries_per_s": round(len(queries) / batched, 1),
        "found": found,
    }


if __name__ == "__main__":
    run(main)
