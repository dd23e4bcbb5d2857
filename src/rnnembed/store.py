"""VectorStore: texts, their embeddings and BM25 full text in one Milvus collection.

A URI ending in ``.db`` opens a Milvus Lite 3 database (a folder) inside this process;
``http(s)://host:19530`` (with ``token``) reaches a Milvus server or cluster. Only the client's
constructor differs between the two; everything after it is the same code.

A row holds ``id`` (sha256 of source and text, so adding the same text from the same place again
stores nothing new), ``text`` (analysed for BM25), ``source``, ``metadata`` (a JSON object),
``vector`` (the model's unit-length embedding: HNSW index, inner product; exact search, else
AUTOINDEX, where a server refuses HNSW) and ``sparse`` (BM25 term weights that Milvus computes
from ``text``). The collection's properties (and description) record the model's fingerprint,
the pooling, the dimension and the analyzer; opening the collection with another model, pooling
or dimension raises :class:`RnnembedError`.

Texts longer than 65,535 UTF-8 bytes (Milvus's VARCHAR limit) are stored cut to that length,
with a logged warning: their id and vector cover the whole text, BM25 and ``Hit.text`` only the
stored part. Sources are cut the same way at 4,096 bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np
from pymilvus import (
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    MilvusException,
    RRFRanker,
)
from pymilvus.milvus_client.index import IndexParam

from rnnembed.atomic import check_path
from rnnembed.config import check_model, is_whole
from rnnembed.corpus import CORPUS_SUFFIXES, source_file
from rnnembed.errors import RnnembedError
from rnnembed.tokenizer import check_texts, check_unicode

log = logging.getLogger(__name__)
# Every Milvus error reaches the caller as an RnnembedError carrying Milvus's message; without
# this, pymilvus would also log each one, traceback included, on stderr (and a failed reconnect
# to a server that went away). (Set after importing pymilvus, whose logging setup resets its
# child loggers.)
logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
logging.getLogger("pymilvus.client.connection_manager").setLevel(logging.CRITICAL)
# A query iterator warns on every call that a Milvus Lite 2.x server has no MVCC timestamp.
logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)

DEFAULT_URI = "./rnnembed.db"
LITE_MARKER = "databases"  # a folder Milvus Lite 3 makes in every database it creates
MODES = ("dense", "bm25", "hybrid")
ANALYZERS = {
    "standard": {"type": "standard"},  # words, lowercased
    "chinese": {"tokenizer": "jieba", "filter": ["cnalphanumonly"]},  # jieba word segmentation
}
ID_LENGTH = 32  # hex digits of sha256 kept: 128 bits
ROW_ID = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")  # every id row_id gives, and no other
MAX_TEXT_BYTES = 65_535
MAX_SOURCE_BYTES = 4_096
MAX_K = 16_384  # Milvus's top-k limit
# HNSW on unit vectors with inner product (= cosine), chosen with benchmarks/search_speed.py on
# 100k random 256-d unit vectors (the hardest case for a graph index): recall@10 0.946 at
# ef 1024, 0.983 at ef 1536, 0.993 at ef 2048; the index's own p99 10, 14 and 16 ms.
HNSW_BUILD = {"M": 32, "efConstruction": 128}
HNSW_EF = 1536
VECTOR_INDEXES = (("HNSW", HNSW_BUILD), ("FLAT", {}), ("AUTOINDEX", {}))  # in order of choice
HYBRID_CANDIDATES = 50  # hits each of dense and BM25 hand to the fusion
RRF_K = 60
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Milvus's rule for a new one
BATCH = 512  # texts embedded and rows inserted at a time
# metadata nested deeper is refused: Milvus's JSON encoder and Python's recursion give out near
# a thousand levels, and no record needs a tenth of this
MAX_METADATA_DEPTH = 64
ID_BATCH = 1_000  # ids looked up at a time
SCAN_BATCH = 16_384  # rows a query iterator returns at a time (Milvus's most)
OUTPUT_FIELDS = ["text", "source", "metadata"]
PROPERTY = "rnnembed."


class EmbeddingModel(Protocol):
    """What a store needs of a model (``LanguageModel`` has it)."""

    def encode(self, texts: Sequence[str], pooling: str = ...) -> np.ndarray: ...
    def dim(self, pooling: str = ...) -> int: ...
    def fingerprint(self, pooling: str = ...) -> str: ...

    # and optionally ``default_pooling``: what a store given no pooling uses (else "mean")


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is higher for better matches (cosine for dense, the BM25
    score for bm25, the fused reciprocal-rank score for hybrid)."""

    id: str
    text: str
    score: float
    source: str
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The hit's fields; ``metadata`` is the hit's own object, not a copy."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def row_id(text: str, source: str = "") -> str:
    """The id a text from ``source`` gets: the same text and source always give the same id."""
    return hashlib.sha256(f"{source}\0{text}".encode()).hexdigest()[:ID_LENGTH]


class VectorStore:
    """A Milvus collection of texts bound to one model and pooling.

    ``VectorStore("search.db", model=lm)`` opens (or creates) a Milvus Lite database;
    ``VectorStore("http://host:19530", model=lm, token=...)`` a server's collection.
    ``analyzer`` ("standard" or "chinese", i.e. jieba) applies to a new collection; ``None``
    takes the collection's own (standard for a new one). ``pooling`` ``None`` likewise takes the
    collection's own (the model's ``default_pooling`` for a new one); a pooling given must be the
    collection's. With ``create=False`` a missing database or collection is an error. Close the
    store (or use it in a ``with`` block): the last store on a Milvus Lite path also stops that
    database's server.
    """

    def __init__(
        self,
        uri: str | Path = DEFAULT_URI,
        *,
        model: EmbeddingModel,
        collection: str = "default",
        pooling: str | None = None,
        analyzer: str | None = None,
        token: str = "",
        create: bool = True,
    ):
        if not isinstance(collection, str) or not 0 < len(collection) <= 255:
            raise RnnembedError(f"collection name {collection!r} must be 1 to 255 characters")
        if analyzer is not None and analyzer not in ANALYZERS:
            raise RnnembedError(
                f"unknown analyzer {analyzer!r}; choose one of {', '.join(ANALYZERS)}"
            )
        check_model(model)
        self.uri, self.model, self.collection = str(uri), model, collection
        self._use_pooling(pooling or getattr(model, "default_pooling", "mean"))
        if create and self.uri.endswith(".db") and _no_database_yet(Path(self.uri).expanduser()):
            self._check_new_name()  # before the database is made: a refusal leaves none behind
        self.client, self._lite_path = _connect(self.uri, token, create)
        self._added = False  # whether this store has inserted rows yet
        try:
            self.analyzer = self._open(analyzer, pooling, create)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the connection (and of the Milvus Lite server, if this was its last user)."""
        if not isinstance(self.client, _ClosedClient):
            self.client.close()
            self.client = _ClosedClient()
        if self._lite_path is not None:
            _release_lite(self._lite_path)
            self._lite_path = None

    # -- the collection ------------------------------------------------------------------------

    def _check_new_name(self) -> None:
        """A new collection's name as Milvus servers take them (Milvus Lite takes some others,
        so an existing collection keeps the name it has)."""
        if not COLLECTION_NAME.fullmatch(self.collection):
            raise RnnembedError(
                f"collection name {self.collection!r} is not one Milvus takes: letters, digits "
                "and underscores, starting with a letter or an underscore"
            )

    def _use_pooling(self, pooling: str) -> None:
        self.pooling, self.dim = pooling, self.model.dim(pooling)
        self.fingerprint = self.model.fingerprint(pooling)

    def _open(self, analyzer: str | None, pooling: str | None, create: bool) -> str:
        with _milvus("open the collection"):
            exists = self.client.has_collection(self.collection)
        if exists:
            analyzer = self._check(analyzer, pooling)
        elif create:
            self._check_new_name()
            analyzer = analyzer or "standard"
            self._create(analyzer)
        else:
            with _milvus("list the collections"):
                names = ", ".join(self.client.list_collections()) or "none"
            raise RnnembedError(
                f"{self.uri} has no collection {self.collection!r} (it has: {names}); index "
                "files into it first (rnnembed index), or pass the right --collection"
            )
        # Indexes are made after the collection, so one whose maker stopped between the two
        # gets them here.
        self._create_missing_indexes()
        with _milvus("load the collection"):
            self.client.load_collection(self.collection)
        return analyzer

    def _check(self, analyzer: str | None, pooling: str | None) -> str:
        """The collection's analyzer, once its model, pooling and dimension match ours (with
        ``pooling`` None, ours becomes the collection's)."""
        with _milvus("describe the collection"):
            info = self.client.describe_collection(self.collection)
        binding = _binding(info)
        dims = [int(f["params"]["dim"]) for f in info["fields"] if f["name"] == "vector"]
        where = f"collection {self.collection!r} in {self.uri}"
        if "fingerprint" not in binding or not dims:
            raise RnnembedError(f"{where} was not made by rnnembed; pass another --collection")
        built = binding.get("pooling", "?")
        if pooling is None and "pooling" in binding:
            self._use_pooling(built)
        remedy = (
            f"use the model and pooling that built it (pooling {built!r}), pass another "
            "--collection, or rebuild the index (delete the database or drop the collection, "
            "then index again)"
        )
        if dims[0] != self.dim:
            raise RnnembedError(
                f"{where} holds {dims[0]}-dimensional vectors, but this model with pooling "
                f"{self.pooling!r} gives {self.dim}-dimensional ones; {remedy}"
            )
        if binding["fingerprint"] != self.fingerprint:
            raise RnnembedError(
                f"{where} was built by another model or pooling, or by an earlier rnnembed "
                f"whose pooling computed other vectors (this is pooling {self.pooling!r}); "
                f"{remedy}"
            )
        stored = binding.get("analyzer", "standard")
        if analyzer not in (None, stored):
            raise RnnembedError(
                f"{where} uses the {stored!r} analyzer, not {analyzer!r}; leave the analyzer "
                "out, or index into another --collection"
            )
        return stored

    def _create(self, analyzer: str) -> None:
        binding = {
            "fingerprint": self.fingerprint,
            "pooling": self.pooling,
            "dim": str(self.dim),
            "analyzer": analyzer,
        }
        schema = self.client.create_schema(
            auto_id=False, enable_dynamic_field=False, description=json.dumps({"rnnembed": binding})
        )
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=MAX_TEXT_BYTES,
            enable_analyzer=True,
            analyzer_params=ANALYZERS[analyzer],
        )
        schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        try:
            with _milvus("create the collection"):
                self.client.create_collection(
                    self.collection,
                    schema=schema,
                    consistency_level="Strong",  # a row is searchable as soon as add returns
                    properties={PROPERTY + k: v for k, v in binding.items()},
                )
        except RnnembedError as exc:
            # Milvus Lite makes a collection's folder, then writes its schema: a process killed
            # in between leaves a folder, not a collection, that blocks every later creation
            if self._lite_path is None or "File exists" not in str(exc):
                raise
            raise RnnembedError(
                f"{exc}; that folder was left by a run stopped as it created the collection "
                f"{self.collection!r} (it holds no rows): delete it and run again"
            ) from exc
        log.info("created collection %r in %s", self.collection, self.uri)

    def _create_missing_indexes(self) -> None:
        """Index each field that has no index yet: ``vector`` (:meth:`_index_vectors`) and
        ``sparse`` (an inverted index for BM25)."""
        with _milvus("list the indexes"):
            missing = [
                f
                for f in ("vector", "sparse")
                if not self.client.list_indexes(self.collection, field_name=f)
            ]
        if "vector" in missing:
            self._index_vectors()
        if "sparse" in missing:
            sparse = self.client.prepare_index_params()
            sparse.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            with _milvus("index the text for BM25"):
                self.client.create_index(self.collection, sparse, sync=False)

    def _index_vectors(self) -> None:
        """HNSW with our parameters; where a server refuses that index type (a Milvus Lite 2.x
        server in "local mode" takes only FLAT, IVF_FLAT or AUTOINDEX), exact search (FLAT),
        right at any size though slower as the collection grows; else the server's AUTOINDEX.
        Any other error is raised, not taken for a refusal."""
        refusals = []
        for kind, params in VECTOR_INDEXES:
            index = self.client.prepare_index_params()
            index.append(_NestedParamsIndex("vector", kind, "IP", params))
            try:
                # sync=False: the build goes on in the background (and waiting polls every
                # 0.5 s, with a call Milvus Lite does not implement).
                self.client.create_index(self.collection, index, sync=False)
            except MilvusException as exc:
                if "index type" not in exc.message.lower():
                    message = f"Milvus could not index the vectors: {exc.message}"
                    raise RnnembedError(message) from exc
                refusals.append(f"{kind} ({exc.message})")
                continue
            if refusals:
                log.warning(
                    "%s refused %s; the vectors are indexed with %s instead",
                    self.uri,
                    "; ".join(refusals),
                    "exact search (FLAT)" if kind == "FLAT" else kind,
                )
            return
        raise RnnembedError(
            f"{self.uri} refused every index type the store can use: {'; '.join(refusals)}"
        )

    # -- rows ----------------------------------------------------------------------------------

    def add(
        self,
        texts: Sequence[str],
        sources: Sequence[str] | None = None,
        metadata: Sequence[dict] | None = None,
    ) -> list[str]:
        """Store texts (with their sources and metadata objects); return their ids, in order.

        Idempotent: texts whose id (from text and source) is already stored are neither
        embedded nor inserted again, and their ids are returned like the others.
        """
        texts = check_texts(texts)
        if sources is not None:
            sources = check_texts(sources, "source")
        if metadata is not None and (
            isinstance(metadata, dict) or not isinstance(metadata, Iterable)
        ):
            raise RnnembedError("metadata must be a list of dicts, one per text")
        metadata = None if metadata is None else list(metadata)
        for name, given in (("sources", sources), ("metadata", metadata)):
            if given is not None and len(given) != len(texts):
                raise RnnembedError(
                    f"{len(texts)} texts but {len(given)} {name}; give one per text, or none"
                )
        sources = [""] * len(texts) if sources is None else sources
        metadata = [{}] * len(texts) if metadata is None else metadata
        for i, (text, source, meta) in enumerate(zip(texts, sources, metadata, strict=True)):
            if not text.strip():
                raise RnnembedError(f"text {i} is empty; give non-empty texts")
            check_unicode(text, f"text {i}")
            check_unicode(source, f"source {i}")
            if "\0" in source:  # row_id joins source and text with one
                raise RnnembedError(f"source {i} holds a NUL character, which no path has")
            if not isinstance(meta, dict):
                raise RnnembedError(f"metadata {i} is not a dict; give a JSON object per text")
            problem = _json_problem(meta)
            if problem:  # checked before any insert: Milvus refuses some, stores others as null
                raise RnnembedError(
                    f"metadata {i} is not plain JSON ({problem}); give objects with string "
                    "keys, strings, finite numbers within 64 bits, booleans, null and lists"
                )
        ids = [row_id(text, source) for text, source in zip(texts, sources, strict=True)]
        chosen, seen = [], self._existing(ids)  # each new id once, at its first position
        for i, id_ in enumerate(ids):
            if id_ not in seen:
                seen.add(id_)
                chosen.append(i)
        if chosen and not self._added:
            self._warn_of_lite_bm25()
            self._added = True
        for start in range(0, len(chosen), BATCH):
            part = chosen[start : start + BATCH]
            vectors = self._encode([texts[i] for i in part])
            self._insert(
                [ids[i] for i in part],
                [texts[i] for i in part],
                [sources[i] for i in part],
                [metadata[i] for i in part],
                vectors,
            )
        return ids

    def _warn_of_lite_bm25(self) -> None:
        """Warn, before a Milvus Lite store's first insert into rows stored earlier, that Milvus
        Lite scores BM25 within each segment, and rows added in another session form their own."""
        if self._lite_path is not None and self.count() > 0:
            log.warning(
                "Milvus Lite scores BM25 with each segment's own statistics, and the rows added "
                "now form a segment of their own: bm25 and hybrid search may rank them too low; "
                "where that matters, index all files in one run into a new database, or use a "
                "Milvus server"
            )

    def _insert(
        self,
        ids: list[str],
        texts: list[str],
        sources: list[str],
        metadata: list[dict],
        vectors: np.ndarray,
    ) -> None:
        """Insert rows with precomputed vectors (unit length, ``self.dim`` wide) as they are."""
        stored = [_cut(text, MAX_TEXT_BYTES) for text in texts]
        cut = sum(len(a) != len(b) for a, b in zip(stored, texts, strict=True))
        if cut:
            log.warning(
                "%d text(s) longer than %d UTF-8 bytes stored cut to that length: their "
                "vectors cover the whole text, but BM25 and the hits' text only the stored "
                "part; split such texts before adding them (index: --chunk paragraphs or "
                "sentences, or break the long lines)",
                cut,
                MAX_TEXT_BYTES,
            )
        rows = [
            {
                "id": id_,
                "text": text,
                "source": _cut(source, MAX_SOURCE_BYTES),
                "metadata": meta,
                "vector": vector,
            }
            for id_, text, source, meta, vector in zip(
                ids, stored, sources, metadata, vectors, strict=True
            )
        ]
        with _milvus("insert rows"):
            self.client.insert(self.collection, rows)

    def _existing(self, ids: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(ids))
        found: set[str] = set()
        for start in range(0, len(unique), ID_BATCH):
            with _milvus("look up ids"):
                rows = self.client.query(
                    self.collection, ids=unique[start : start + ID_BATCH], output_fields=["id"]
                )
            found.update(row["id"] for row in rows)
        return found

    def count(self) -> int:
        """How many rows the collection holds."""
        with _milvus("count rows"):
            rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def sources_in(self, path: str) -> dict[str, str]:
        """``{id: source}`` of the rows whose source lies in ``path``: the file itself (``path``
        or ``path:line``) or, for a folder, any file under it (``path/...``)."""
        check_path(path, "sources_in's argument")
        path = str(path)
        # LIKE treats % and _ as wildcards, so it only narrows; the exact test is ours. The
        # files of the folder "." are recorded as "a.txt", "sub/b.txt": no common prefix.
        prefix = "" if path == "." else path
        # every row for ".": a Milvus server (2.5) matches no row to a bare ``like "%"``
        expression = f"source like {json.dumps(prefix + '%', ensure_ascii=False)}" if prefix else ""
        found: dict[str, str] = {}
        with _milvus("look up sources"):
            rows = self.client.query_iterator(
                self.collection, batch_size=SCAN_BATCH, filter=expression, output_fields=["source"]
            )
            try:
                while batch := rows.next():
                    found.update(
                        (row["id"], row["source"]) for row in batch if _lies_in(row["source"], path)
                    )
            finally:
                rows.close()
        return found

    def delete(self, ids: Iterable[str]) -> int:
        """Delete the rows with these ids; return how many there were."""
        if isinstance(ids, str):
            ids = [ids]
        # an id of another form is stored nowhere, and never reaches Milvus's filter expression
        ids = [id_ for id_ in check_texts(ids, "id", ordered=False) if ROW_ID.fullmatch(id_)]
        present = self._existing(ids)
        if present:
            with _milvus("delete rows"):
                self.client.delete(self.collection, ids=sorted(present))
        return len(present)

    # -- search --------------------------------------------------------------------------------

    def search(
        self,
        query: str | Sequence[str],
        k: int = 10,
        mode: str = "dense",
        filter: str | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """The ``k`` best hits for a query (a list of hits), or for each of a list of queries.

        ``mode``: ``dense`` (embeddings, cosine), ``bm25`` (Milvus's full-text BM25 on the
        stored text) or ``hybrid`` (both, fused by reciprocal rank). ``filter`` is a Milvus
        boolean expression, e.g. ``source like "docs/%"`` or ``metadata["lang"] == "en"``.
        """
        if mode not in MODES:
            raise RnnembedError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if not is_whole(k) or not 1 <= k <= MAX_K:
            raise RnnembedError(f"k must be a whole number from 1 to {MAX_K}, not {k!r}")
        k = int(k)  # numpy's ints too
        single = isinstance(query, str)
        if not single and (isinstance(query, bytes) or not isinstance(query, Iterable)):
            raise RnnembedError(f"query must be a string or a list of them, not {query!r}")
        queries = [query] if single else check_texts(query, "query")
        if not all(q.strip() for q in queries):
            raise RnnembedError("empty query: give some text to search for")
        for q in queries:
            check_unicode(q, "the query")
        if filter is not None and not isinstance(filter, str):
            raise RnnembedError(
                f"filter must be a Milvus boolean expression in a string, not {filter!r}"
            )
        if not queries:
            return []
        if mode == "dense":
            hits = self._search_vectors(self._encode(queries), k, filter)
        elif mode == "bm25":
            hits = self._search_bm25(queries, k, filter)
        else:
            hits = self._search_hybrid(queries, k, filter)
        return hits[0] if single else hits

    def _search_vectors(
        self, vectors: np.ndarray, k: int, filter: str | None = None
    ) -> list[list[Hit]]:
        """Dense search with precomputed query vectors."""
        with _milvus("search", filter):
            raw = self.client.search(
                self.collection,
                data=list(vectors),
                anns_field="vector",
                filter=filter or "",
                limit=k,
                output_fields=OUTPUT_FIELDS,
                search_params={"metric_type": "IP", "params": {"ef": max(HNSW_EF, k)}},
            )
        return [[_hit(h, float(h["distance"])) for h in hits] for hits in raw]

    def _encode(self, texts: list[str]) -> np.ndarray:
        """The model's vectors of ``texts``, once its vectors are still those the collection
        holds: inside ``LanguageModel.adapted`` (or with new weights) they are not."""
        now = self.model.fingerprint(self.pooling)
        if now != self.fingerprint:
            raise RnnembedError(
                "the model's vectors changed since this store was opened (its fingerprint "
                f"{now} against the collection's "
                f"{self.fingerprint}; inside LanguageModel.adapted()?); add to and search this "
                "collection with the model as it was"
            )
        return self.model.encode(texts, pooling=self.pooling)

    def _search_bm25(self, queries: list[str], k: int, filter: str | None) -> list[list[Hit]]:
        with _milvus("search", filter):
            raw = self.client.search(
                self.collection,
                data=queries,
                anns_field="sparse",
                filter=filter or "",
                limit=k,
                output_fields=OUTPUT_FIELDS,
                search_params={"metric_type": "BM25"},
            )
        # Milvus Lite gives BM25 scores as negative distances, a server as positive scores.
        return [[_hit(h, abs(float(h["distance"]))) for h in hits] for hits in raw]

    def _search_hybrid(self, queries: list[str], k: int, filter: str | None) -> list[list[Hit]]:
        vectors = self._encode(queries)
        depth = max(k, HYBRID_CANDIDATES)
        requests = [
            AnnSearchRequest(
                list(vectors),
                "vector",
                {"metric_type": "IP", "params": {"ef": max(HNSW_EF, depth)}},
                depth,
                expr=filter or None,
            ),
            AnnSearchRequest(
                queries, "sparse", {"metric_type": "BM25"}, depth, expr=filter or None
            ),
        ]
        with _milvus("search", filter):
            raw = self.client.hybrid_search(
                self.collection,
                requests,
                RRFRanker(RRF_K),
                limit=k,
                output_fields=OUTPUT_FIELDS,
            )
        return [[_hit(h, float(h["distance"])) for h in hits] for hits in raw]


class _ClosedClient:
    """The client of a closed store: any use of it says so."""

    def __getattr__(self, name: str) -> None:
        raise RnnembedError("this VectorStore is closed; open a new one to use the collection")


class _NestedParamsIndex(IndexParam):
    """An index whose build parameters travel nested under "params", the form Milvus servers
    also accept and the only one Milvus Lite 3 reads: pymilvus 3 sends them flat, and Lite
    would silently build with its defaults (HNSW M=16, efConstruction=200) instead."""

    def __init__(self, field: str, index_type: str, metric: str, params: dict):
        super().__init__(field, index_type, "", metric_type=metric)
        self.build_params = params

    def get_index_configs(self) -> dict:
        return {**super().get_index_configs(), "params": self.build_params}


def _binding(info: dict) -> dict:
    """What a collection recorded of the model that built it ({} if rnnembed did not make it):
    its properties, or where a server keeps none (a Milvus Lite 2.x server), the same record as
    JSON in its description (which Milvus Lite 3 in turn does not keep)."""
    props = info.get("properties") or {}
    found = {k.removeprefix(PROPERTY): v for k, v in props.items() if k.startswith(PROPERTY)}
    if found:
        return found
    try:
        recorded = json.loads(info.get("description") or "{}").get("rnnembed")
    except (ValueError, AttributeError):  # a description that is not our JSON object
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _json_problem(value: object, depth: int = 0) -> str | None:
    """What keeps ``value`` from being stored as Milvus JSON as it is, or None."""
    if isinstance(value, dict | list | tuple) and depth >= MAX_METADATA_DEPTH:
        return f"nested more than {MAX_METADATA_DEPTH} levels deep"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"the key {key!r} is not a string"
            problem = _json_problem(key) or _json_problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        return next((p for item in value if (p := _json_problem(item, depth + 1))), None)
    elif isinstance(value, str):
        try:
            check_unicode(value)
        except RnnembedError:
            return f"{value[:40]!r} holds a lone surrogate, not Unicode"
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            return f"{value} does not fit in 64 bits"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"{value} is not a finite number"
    else:
        return f"{type(value).__name__} is not a JSON type"
    return None


def _lies_in(source: str, path: str) -> bool:
    """Whether ``source`` ("file:line" or "file") is the file ``path``, a line of it, or a
    place in a file under the folder ``path``."""
    file = source_file(source)
    if path == ".":  # its files are recorded bare ("a.txt", "sub/b.txt"), as other labels are
        return _here(file)
    return file == path or file.startswith(path.rstrip(os.sep) + os.sep)


def _here(file: str) -> bool:
    """Whether ``file`` can be a file of the current folder: a relative path whose first
    folder is here, or a bare name with a corpus suffix (a file since deleted). Rows indexed
    from elsewhere ("docs/a.txt" seen from "src") and labels such as "faq-12" or a URL are
    not, so ``index . --prune`` leaves them."""
    parts = Path(file).parts
    if not parts or Path(file).is_absolute() or parts[0] == "..":
        return False
    try:  # a label longer than a file name can be is no file here
        if len(parts) == 1:
            return Path(file).exists() or Path(file).suffix.lower() in CORPUS_SUFFIXES
        return Path(parts[0]).is_dir()
    except OSError:
        return False


def _hit(raw: dict, score: float) -> Hit:
    entity = raw.get("entity") or {}
    return Hit(
        id=raw["id"],
        text=entity.get("text", ""),
        score=score,
        source=entity.get("source", ""),
        metadata=entity.get("metadata") or {},
    )


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, at a character boundary."""
    data = text.encode()
    return text if len(data) <= max_bytes else data[:max_bytes].decode(errors="ignore")


@contextmanager
def _milvus(action: str, filter: str | None = None) -> Iterator[None]:
    """Turn a Milvus error into an RnnembedError that says what failed."""
    try:
        yield
    except MilvusException as exc:
        hint = f"; check the filter expression {_shortened(filter, 200)!r}" if filter else ""
        message = _shortened(" ".join(str(exc.message).split()), 500)  # one line, caret and all
        raise RnnembedError(f"Milvus could not {action}: {message}{hint}") from exc


def _shortened(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


# -- connections -------------------------------------------------------------------------------

# Milvus Lite's gRPC servicer logs every error it returns with its traceback (a deeply nested
# filter: 5,000 lines); each reaches the caller as a MilvusException, and the user as one line.
logging.getLogger("milvus_lite.adapter.grpc.servicer").setLevel(logging.CRITICAL)
_lite_users: Counter[str] = Counter()  # open stores per Milvus Lite path
_lite_lock = threading.Lock()


def _connect(uri: str, token: str, create: bool) -> tuple[MilvusClient, str | None]:
    """A client for ``uri``, and the Milvus Lite path it holds (None for a server)."""
    if not uri.endswith(".db"):
        if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
            raise RnnembedError(
                f"{uri!r} is neither a Milvus Lite database path ending in .db nor a server "
                "URI like http://localhost:19530; pass one of those"
            )
        try:
            _ = urlsplit(uri).port  # ValueError for a port that is not a number in range
        except ValueError as exc:
            raise RnnembedError(
                f"{uri!r} is not a valid server URI ({exc}); pass one like http://localhost:19530"
            ) from None
        try:
            return MilvusClient(uri=uri, token=token), None
        except MilvusException as exc:
            raise RnnembedError(
                f"cannot reach Milvus at {uri} ({exc.message}); check the URI and the token, "
                "and that the server is running"
            ) from None
    # normalised as Milvus Lite keys its servers (one per os.path.abspath), so that stores
    # opened as a.db and sub/../a.db count as users of the one server; not resolved: a
    # symlink's target need not end in .db, which Milvus Lite needs
    path = Path(os.path.abspath(Path(uri).expanduser()))
    if path.exists() and not path.is_dir():
        raise RnnembedError(
            f"{uri} is a file, not a Milvus Lite 3 database (those are folders; 2.x files cannot "
            "be opened): pass another --db path, or move the file away and index again"
        )
    if not create and not path.exists():
        raise RnnembedError(f"{uri}: no such database; build one with `rnnembed index`")
    if path.is_dir() and any(path.iterdir()) and not (path / LITE_MARKER).is_dir():
        raise RnnembedError(
            f"{uri} is a folder of other files, not a Milvus Lite database (it has no "
            f"{LITE_MARKER}/); pass another --db path"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RnnembedError(
            f"cannot create the folder for {uri} ({exc.strerror}); pass another --db path"
        ) from None
    with _lite_lock, _logged_errors("milvus_lite") as reasons:
        try:
            client = MilvusClient(uri=str(path))
        except MilvusException as exc:
            reason = "; ".join(reasons) or exc.message
            raise RnnembedError(
                f"cannot open the Milvus Lite database {uri} ({reason}); if another process "
                "has it open, stop that process or pass another --db path"
            ) from None
        _lite_users[str(path)] += 1
    return client, str(path)


def _no_database_yet(path: Path) -> bool:
    """Whether the Milvus Lite path holds no database yet: absent, or an empty folder."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _release_lite(path: str) -> None:
    with _lite_lock:
        _lite_users[path] -= 1
        if _lite_users[path] > 0:
            return
        del _lite_users[path]
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.reasons.append(str(exc) if exc else record.getMessage())


@contextmanager
def _logged_errors(name: str) -> Iterator[list[str]]:
    """Collect the errors logger ``name`` logs meanwhile, instead of printing them."""
    logger, handler = logging.getLogger(name), _Collect()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield handler.reasons
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
