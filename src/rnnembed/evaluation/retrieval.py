"""Retrieval on a BEIR-format folder through :class:`rnnembed.store.VectorStore`.

The folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id corpus-id score``, with a header). Documents
(title + " " + text) are indexed into a temporary Milvus Lite file with their ``_id`` as
source; every judged query is searched in the chosen mode (dense, bm25 or hybrid/RRF), 100 hits
deep. Metrics follow BEIR (trec_eval), with graded relevance from the qrels:

- nDCG@10 = DCG@10 / IDCG@10, DCG@10 = sum over ranks i <= 10 of rel_i / log2(i + 1), IDCG the
  DCG of the judged documents sorted by relevance;
- recall@100 = |relevant documents in the top 100| / |relevant documents| (relevant: rel > 0).

Queries without a relevant judgment are skipped; as in BEIR, a hit whose id equals the query's
id is dropped. In bm25 mode nothing is encoded: the model is not needed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnembed.errors import RnnembedError
from rnnembed.evaluation.bow import is_cjk
from rnnembed.evaluation.files import choose_split, data_root, read_lines, require

log = logging.getLogger(__name__)

SPLITS = ("test", "dev", "train")
DEPTH = 100
Qrels = dict[str, dict[str, int]]


def ndcg_at(ranking: Sequence[str], relevance: dict[str, int], k: int = 10) -> float:
    """nDCG@k of a ranked list of ids against graded judgments (0 if nothing is relevant)."""
    dcg = sum(relevance.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranking: Sequence[str], relevance: dict[str, int], k: int = 100) -> float:
    """Share of the relevant ids (rel > 0) found in the top k."""
    relevant = {doc for doc, r in relevance.items() if r > 0}
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def _jsonl(path: Path, fields: tuple[str, ...], encoding: str | None) -> list[dict]:
    """The records of a BEIR JSON-lines file: ``_id`` (a string) and ``fields`` ("" where
    absent or null); RnnembedError for a line that is not a record, repeats an id, or holds a
    field that is not a string."""
    records, first_at = [], {}
    for number, line in enumerate(read_lines(path, encoding), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RnnembedError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or "_id" not in record:
            raise RnnembedError(f"{path}:{number}: a BEIR record needs an '_id' field")
        id_ = str(record["_id"])
        if id_ in first_at:  # a second record would be scored as the first, or replace it
            raise RnnembedError(
                f"{path}:{number}: duplicate _id {id_!r} (first at line {first_at[id_]}); "
                "give each record its own id"
            )
        first_at[id_] = number
        values = {f: record.get(f) or "" for f in fields}
        wrong = next((f for f, v in values.items() if not isinstance(v, str)), None)
        if wrong is not None:
            raise RnnembedError(
                f"{path}:{number}: field {wrong!r} holds {json.dumps(values[wrong])[:40]}, not "
                "a string; BEIR's title and text are strings"
            )
        records.append({"_id": id_, **values})
    return records


def read_qrels(path: Path, encoding: str | None = None) -> Qrels:
    """query id -> {document id: relevance} from a BEIR qrels TSV (header skipped)."""
    qrels: Qrels = {}
    rows = csv.reader(read_lines(path, encoding), delimiter="\t", quoting=csv.QUOTE_NONE)
    for number, row in enumerate(rows, 1):
        while row and not row[-1].strip():  # trailing tabs, as STS and SentEval files allow
            row.pop()
        if not row or (number == 1 and not row[-1].lstrip("-").isdigit()):
            continue
        if len(row) != 3:
            raise RnnembedError(
                f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score' (with a header), "
                f"found {len(row)} column(s); TREC's 'qid Q0 docid rel' needs its Q0 column "
                "dropped"
            )
        try:
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
        except ValueError:
            raise RnnembedError(
                f"{path}:{number}: relevance {row[2]!r} is not an integer"
            ) from None
    return qrels


def beir_folder(root: Path) -> Path:
    """``root`` if it holds corpus.jsonl, else its one subfolder that does (``scifact`` under
    the shared data folder); RnnembedError if several do."""
    if (root / "corpus.jsonl").exists():
        return root
    found = sorted(path.parent for path in root.glob("*/corpus.jsonl"))
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise RnnembedError(
            f"beir: {root} holds several BEIR folders ({names}); pass --file {found[0]} (or "
            "another) to choose one"
        )
    return found[0] if found else root  # without one, load_beir names what is missing


def load_beir(
    folder: Path, split: str | None, encoding: str | None = None
) -> tuple[list[dict], list[dict], Qrels, str]:
    """(corpus, queries, qrels, split) of a BEIR folder; ``split`` defaults to the first of
    test, dev, train that has a qrels file."""
    hint = "pass --data-dir (or --file) with a BEIR folder holding corpus.jsonl and queries.jsonl"
    corpus = _jsonl(require(folder / "corpus.jsonl", "beir", hint), ("title", "text"), encoding)
    queries = _jsonl(require(folder / "queries.jsonl", "beir", hint), ("text",), encoding)
    files = {name: folder / "qrels" / f"{name}.tsv" for name in SPLITS}
    split, path = choose_split("beir", files, split, SPLITS)
    return corpus, queries, read_qrels(path, encoding), split


def indexed_documents(corpus: list[dict]) -> list[tuple[str, str]]:
    """(id, title + " " + text) of each document that has text: what the harness indexes."""
    docs = [(d["_id"], f"{d['title']} {d['text']}".strip()) for d in corpus]
    return [(doc, text) for doc, text in docs if text]


def rank(store, queries: list[str], mode: str, depth: int = DEPTH) -> list[list[str]]:
    """The document ids (hit sources) each query retrieves, best first."""
    return [[hit.source for hit in hits] for hits in store.search(queries, k=depth, mode=mode)]


def score(rankings: dict[str, list[str]], qrels: Qrels) -> dict:
    """Mean nDCG@10 and recall@100 over the queries of ``rankings`` that have a relevant
    judgment (a hit equal to its query id dropped)."""
    judged = [q for q in rankings if any(r > 0 for r in qrels.get(q, {}).values())]
    if not judged:
        raise RnnembedError("no query has a relevant judgment in the qrels; check --split")
    ndcg = recall = 0.0
    for query in judged:
        ranking = [doc for doc in rankings[query] if doc != query]
        ndcg += ndcg_at(ranking, qrels[query], 10)
        recall += recall_at(ranking, qrels[query], DEPTH)
    return {
        "ndcg@10": ndcg / len(judged),
        "recall@100": recall / len(judged),
        "queries": len(judged),
    }


class _NoVectors:
    """Stands in for a model in bm25 mode, which needs no embeddings: every row gets the same
    constant unit vector, and no text is encoded."""

    default_pooling = "mean"

    def encode(self, texts: Sequence[str], pooling: str = "mean") -> np.ndarray:
        return np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(texts), 1))

    def dim(self, pooling: str = "mean") -> int:
        return 2

    def fingerprint(self, pooling: str = "mean") -> str:
        return "bm25-only"


def search(
    folder: Path,
    model,
    modes: Sequence[str],
    split: str | None = None,
    pooling: str | None = None,
    encoding: str | None = None,
) -> tuple[dict[str, dict[str, list[str]]], Qrels, str, int]:
    """(rankings per mode: query id -> document ids best first, qrels, split, documents) of
    every judged query of the BEIR ``folder``, searched in each of ``modes`` through one
    VectorStore. Documents with no text are not indexed; a judged query with no text
    retrieves nothing. The store's BM25 analyzer is jieba for a CJK corpus, else the standard
    one; with bm25 alone nothing is encoded."""
    from rnnembed.store import VectorStore

    corpus, queries, qrels, split = load_beir(folder, split, encoding)
    judged = [q for q in queries if q["_id"] in qrels]
    if not judged:
        raise RnnembedError(f"{folder}: no query in queries.jsonl is judged in qrels/{split}.tsv")
    docs = indexed_documents(corpus)
    if not docs:
        raise RnnembedError(f"{folder}/corpus.jsonl: no document has a title or text to search")
    texts = [text for _, text in docs]
    asked = [q for q in judged if q["text"].strip()]
    if not asked:
        raise RnnembedError(
            f"{folder}/queries.jsonl: no judged query has a 'text' field with text to search"
        )
    asked_texts = [q["text"] for q in asked]
    _note_unknown_ids(folder, split, qrels, {q["_id"] for q in queries}, {d["_id"] for d in corpus})
    with (
        tempfile.TemporaryDirectory(prefix="rnnembed-beir-") as tmp,
        VectorStore(
            uri=str(Path(tmp) / "beir.db"),
            model=_NoVectors() if set(modes) == {"bm25"} else model,
            collection="beir",
            pooling=pooling,
            analyzer="chinese" if is_cjk(texts) else "standard",
        ) as store,
    ):
        store.add(texts, sources=[doc for doc, _ in docs])
        ranked = {mode: rank(store, asked_texts, mode) for mode in modes}
    rankings = {
        mode: {q["_id"]: [] for q in judged}
        | {q["_id"]: r for q, r in zip(asked, ranked[mode], strict=True)}
        for mode in modes
    }
    return rankings, qrels, split, len(docs)


def _note_unknown_ids(
    folder: Path, split: str, qrels: Qrels, queries: set[str], documents: set[str]
) -> None:
    """Log the qrels' query and document ids the folder lacks: such queries are not scored,
    such documents count as relevant but can never be retrieved (BEIR scores them the same)."""
    lost_queries = set(qrels) - queries
    lost_docs = {doc for judged in qrels.values() for doc in judged} - documents
    if lost_queries or lost_docs:
        log.warning(
            "%s/qrels/%s.tsv names %d queries not in queries.jsonl (not scored) and %d "
            "documents not in corpus.jsonl (relevant, but never retrieved)",
            folder,
            split,
            len(lost_queries),
            len(lost_docs),
        )


def run(
    task: str,
    model,
    mode: str,
    data_dir: str | Path | None = None,
    split: str | None = None,
    file: str | Path | None = None,
    pooling: str | None = None,
    encoding: str | None = None,
) -> dict:
    """nDCG@10 (the score) and recall@100 of ``model`` on the BEIR folder ``file`` or
    ``data_dir``, searched through a VectorStore in ``mode`` (:func:`search`)."""
    if file is not None:
        folder = Path(file)
    else:
        folder = beir_folder(data_root(data_dir, task, "a BEIR folder"))
    rankings, qrels, split, documents = search(folder, model, [mode], split, pooling, encoding)
    result = score(rankings[mode], qrels)
    return {
        "score": result["ndcg@10"],
        **result,
        "documents": documents,
        "split": split,
        "file": str(folder),
    }
