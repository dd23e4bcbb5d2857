"""Query latency of Milvus's C++ engine, for comparison with search_speed.py's Milvus Lite 3.x.

Milvus Lite 3.x (what rnnembed opens for a .db path) is a Python engine. Milvus Lite 2.5 runs
the C++ engine of a Milvus server (segcore, knowhere) in a local process, so it shows what the
same search costs there. It needs its own environment, as rnnembed needs pymilvus 3:

python -m venv /tmp/lite25 && /tmp/lite25/bin/pip install pymilvus==2.5.18 milvus-lite==2.5.1 \
    "setuptools<70" numpy
/tmp/lite25/bin/python benchmarks/milvus_engine_latency.py [--n 100000] [--dim 256]

The collection has VectorStore's shape (a text analysed for BM25, its sparse BM25 field, a
vector); Milvus Lite 2.5 indexes vectors with FLAT or IVF_FLAT only (no HNSW), so the vector
index is FLAT: exact search. Each query is searched alone with its hits' texts, as
VectorStore.search does; recall@10 is against exact search in numpy. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient

K = 10


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n random directions: standard normal rows scaled to length 1."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def create(client: MilvusClient, dim: int) -> None:
    """The collection ``bench``: VectorStore's fields and BM25 function, a FLAT vector index."""
    schema = client.create_schema()
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=1000, enable_analyzer=True)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_function(
        Function(
            name="bm25",
            function_type=FunctionType.BM25,
            input_field_names=["text"],
            output_field_names=["sparse"],
        )
    )
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="IP")
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection("bench", schema=schema, index_params=index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = unit_vectors(rng, args.n, args.dim)
    queries = unit_vectors(rng, args.queries, args.dim)
    with tempfile.TemporaryDirectory() as tmp:
        client = MilvusClient(str(Path(tmp) / "bench.db"))
        create(client, args.dim)
        start = time.perf_counter()
        for first in range(0, args.n, 1000):
            rows = range(first, min(first + 1000, args.n))
            client.insert(
                "bench",
                [{"id": str(i), "text": f"document {i}", "vector": data[i].tolist()} for i in rows],
            )
        client.flush("bench")
        inserted = time.perf_counter() - start
        client.load_collection("bench")

        def search(query: np.ndarray) -> list:
            return client.search(
                "bench",
                [query.tolist()],
                anns_field="vector",
                limit=K,
                search_params={"metric_type": "IP"},
                output_fields=["text"],
            )[0]

        for query in queries[:10]:  # warm up
            search(query)
        latencies, found = [], []
        for query in queries:
            begin = time.perf_counter()
            hits = search(query)
            latencies.append(time.perf_counter() - begin)
            found.append({int(h["id"]) for h in hits})
        client.close()
    exact = [set(np.argpartition(-(data @ query), K)[:K].tolist()) for query in queries]
    recall = float(np.mean([len(f & e) / K for f, e in zip(found, exact, strict=True)]))
    ms = np.array(latencies) * 1000
    print(
        json.dumps(
            {
                "benchmark": "milvus_engine_latency",
                "vectors": args.n,
                "dim": args.dim,
                "queries": args.queries,
                "index": "FLAT",
                "insert_vectors_per_s": round(args.n / inserted),
                "latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
                "latency_ms_p99": round(float(np.percentile(ms, 99)), 3),
                "recall_at_10": round(recall, 4),
                "pymilvus": version("pymilvus"),
                "milvus_lite": version("milvus-lite"),
                "date": datetime.date.today().isoformat(),
                "cores": os.cpu_count(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
