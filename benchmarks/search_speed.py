"""Search speed of VectorStore on Milvus Lite: insert throughput, query latency, recall@10.

python benchmarks/search_speed.py [--n 100000] [--dim 256] [--queries 1000]

N random unit vectors go into a VectorStore collection, with the store's own schema (BM25
function included: each row has a short text) and HNSW parameters, in batches of --batch; then
the collection is flushed and its HNSW index built. Each query (a random unit vector) is
searched alone through the store (end to end: pymilvus, gRPC, Milvus Lite, hits); the same
queries are also timed on the segments' HNSW indexes alone, and all of them sent in one call.
recall@10 compares the store's hits with exact inner-product search in numpy. Random vectors in
many dimensions are the hardest case for a graph index: real embeddings have structure that
makes its job easier.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from common import emit

from rnnembed.store import HNSW_BUILD, HNSW_EF, VectorStore

K = 10
TARGETS = {"recall_at_10": 0.95, "p99_ms": 20.0}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors to index")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000, help="rows per insert")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    data = unit_vectors(rng, args.n, args.dim)
    queries = unit_vectors(rng, args.queries, args.dim)
    with (
        tempfile.TemporaryDirectory() as tmp,
        VectorStore(Path(tmp) / "bench.db", model=RandomVectors(args.dim)) as store,
    ):
        start = time.perf_counter()
        for first in range(0, args.n, args.batch):
            rows = range(first, min(first + args.batch, args.n))
            store._insert(
                [str(i) for i in rows],
                [f"document {i}" for i in rows],
                [f"random:{i}" for i in rows],
                [{}] * len(rows),
                data[first : first + len(rows)],
            )
        store.client.flush(store.collection)
        inserted = time.perf_counter() - start
        collection = lite_collection(store)
        collection._wait_for_bg()  # Milvus Lite builds segment indexes in a background thread
        indexed = time.perf_counter() - start
        segments = [
            {"rows": s.num_rows, "index": type(s.indexes.get("vector")).__name__}
            for s in collection._segments_snapshot()
        ]

        store._search_vectors(queries[:10], K)  # warm up
        latencies, found = [], []
        for query in queries:
            begin = time.perf_counter()
            hits = store._search_vectors(query[None], K)[0]
            latencies.append(time.perf_counter() - begin)
            found.append({int(h.id) for h in hits})
        index_latencies = []
        indexes = [s.indexes["vector"] for s in collection._segments_snapshot()]
        for query in queries:
            begin = time.perf_counter()
            for hnsw in indexes:
                hnsw.search(query[None], K, params={"ef": HNSW_EF})
            index_latencies.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        store._search_vectors(queries, K)
        batched = time.perf_counter() - begin

    exact = exact_top_k(queries, data, K)
    recall = float(np.mean([len(f & set(e)) / K for f, e in zip(found, exact, strict=True)]))
    ms, index_ms = np.array(latencies) * 1000, np.array(index_latencies) * 1000
    result = {
        "benchmark": "search_speed",
        "vectors": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": K,
        "index": {"type": "HNSW", "metric": "IP", **HNSW_BUILD, "ef": HNSW_EF},
        "segments": segments,
        "insert_vectors_per_s": round(args.n / inserted),
        "insert_seconds": round(inserted, 2),
        "index_build_seconds": round(indexed - inserted, 2),
        "insert_and_index_vectors_per_s": round(args.n / indexed),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 3),
        "latency_ms_mean": round(float(ms.mean()), 3),
        "queries_per_s": round(len(ms) / (ms.sum() / 1000), 1),
        "hnsw_only_latency_ms_p50": round(float(np.percentile(index_ms, 50)), 3),
        "hnsw_only_latency_ms_p99": round(float(np.percentile(index_ms, 99)), 3),
        "batched_queries_per_s": round(args.queries / batched, 1),
        "recall_at_10": round(recall, 4),
        "targets": TARGETS,
        "meets_targets": recall >= TARGETS["recall_at_10"]
        and float(np.percentile(ms, 99)) <= TARGETS["p99_ms"],
        "pymilvus": version("pymilvus"),
        "milvus_lite": version("milvus-lite"),
    }
    emit(result)


if __name__ == "__main__":
    main()
