"""How good must a dense ranking be for the hybrid (RRF) to beat BM25 alone on a BEIR folder?

python benchmarks/rrf_headroom.py [--folder DIR] [--split S] [--model DIR] [--feedback M,...]

The store's own BM25 ranking (Milvus BM25, 100 deep, as ``rnnembed evaluate --task beir --mode
bm25``) is fused as the store's hybrid fuses it (Milvus's RRFRanker: score = sum over the lists
of 1 / (RRF_K + rank)) with second rankings of known quality: the sublinear TF-IDF cosine (word
unigrams, character uni+bigrams for CJK: STS's bag of words, fitted on the corpus), alone and
with Gaussian noise of each ``--noise`` sd added to every query-document score, which lowers its
nDCG@10 step by step. With ``--model``, the model's dense and hybrid searches through the same
store are reported beside them, and the dense ranking fused here, which checks this fusion
against Milvus's, and, for each ``--feedback`` depth m, the model's dense ranking with
pseudo-relevance feedback (Rocchio, as dense retrievers use it: the query's vector plus the mean
vector of BM25's top m documents, renormalised, searched exactly over the documents), alone and
fused with BM25. The folder defaults to ``$RNNEMBED_DATA_DIR/scifact`` (train queries). Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import emit, run

from rnnembed.evaluation.bow import vectorizer
from rnnembed.evaluation.retrieval import (
    DEPTH,
    indexed_documents,
    load_beir,
    score,
    search,
)
from rnnembed.language_model import LanguageModel
from rnnembed.store import RRF_K


def fuse(*rankings: list[str]) -> list[str]:
    """Reciprocal-rank fusion: documents by sum of 1 / (RRF_K + rank), rank from 1, DEPTH deep.
    Ties (rank r in one list only, against rank r in the other only: common) break by document
    id, so that no list is favoured by the order the rankings come in."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused, key=lambda doc: (-fused[doc], doc))[:DEPTH]


Documents = list[tuple[str, str]]  # (id, text) of each document the harness indexes


def tfidf_scores(
    docs: Documents, text_of: dict[str, str], query_ids: list[str]
) -> tuple[np.ndarray, list[str]]:
    """(queries × documents sublinear TF-IDF cosines, document ids)."""
    texts = [text for _, text in docs]
    tfidf = vectorizer(texts, word_ngrams=(1, 1))
    matrix = tfidf.transform(texts)
    cosines = (tfidf.transform([text_of[q] for q in query_ids]) @ matrix.T).toarray()
    return cosines, [doc for doc, _ in docs]


def feedback_rows(
    model: LanguageModel,
    docs: Documents,
    text_of: dict[str, str],
    bm25: dict[str, list[str]],
    depths: list[int],
    ndcg: Callable[[dict[str, list[str]]], float],
) -> list[dict]:
    """Rows of the model's dense ranking with Rocchio feedback from BM25's top m, each m."""
    doc_ids = [doc for doc, _ in docs]
    row_of = {doc: i for i, doc in enumerate(doc_ids)}
    asked = [q for q in bm25 if text_of[q].strip()]
    vectors = model.encode([text for _, text in docs])
    query_vectors = model.encode([text_of[q] for q in asked])
    rows = []
    for m in depths:
        ranked = {q: [] for q in bm25}
        for q, vector in zip(asked, query_vectors, strict=True):
            top = [row_of[doc] for doc in bm25[q][:m]]
            if top:
                vector = vector + vectors[top].mean(axis=0)
            order = np.argsort(-(vectors @ (vector / np.linalg.norm(vector))))[:DEPTH]
            ranked[q] = [doc_ids[i] for i in order]
        rows.append(
            {
                "second": f"the model's dense search with feedback from bm25's top {m}",
                "alone": ndcg(ranked),
                "fused_here": ndcg({q: fuse(bm25[q], ranked[q]) for q in bm25}),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=None, help="a BEIR folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--model", type=Path, default=None, help="a model folder (optional)")
    parser.add_argument("--noise", default="0,0.02,0.04,0.06,0.08", help="comma-separated sds")
    parser.add_argument("--feedback", default="1,2,3,5,10", help="comma-separated depths m")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = args.folder or Path(os.environ.get("RNNEMBED_DATA_DIR", "data")) / "scifact"

    model = None
    modes = ["bm25"]
    if args.model is not None:
        model = LanguageModel.load(args.model)
        modes = ["bm25", "dense", "hybrid"]
    rankings, qrels, split, documents = search(folder, model, modes, args.split)
    bm25 = rankings["bm25"]
    query_ids = list(bm25)
    corpus, queries, _, _ = load_beir(folder, split)
    docs = indexed_documents(corpus)
    text_of = {q["_id"]: q["text"] for q in queries}

    def ndcg(ranked: dict[str, list[str]]) -> float:
        return round(score(ranked, qrels)["ndcg@10"], 4)

    rows = []
    if model is not None:
        fused_here = {q: fuse(bm25[q], rankings["dense"][q]) for q in query_ids}
        rows.append(
            {
                "second": "the model's dense search",
                "alone": ndcg(rankings["dense"]),
                "fused_by_milvus": ndcg(rankings["hybrid"]),
                "fused_here": ndcg(fused_here),
            }
        )
        depths = [int(m) for m in args.feedback.split(",") if m]
        rows += feedback_rows(model, docs, text_of, bm25, depths, ndcg)
    cosines, doc_ids = tfidf_scores(docs, text_of, query_ids)
    rng = np.random.default_rng(args.seed)
    for sd in (float(s) for s in args.noise.split(",")):
        noisy = cosines + sd * rng.standard_normal(cosines.shape) if sd else cosines
        top = np.argsort(-noisy, axis=1)[:, :DEPTH]
        second = {q: [doc_ids[i] for i in row] for q, row in zip(query_ids, top, strict=True)}
        rows.append(
            {
                "second": f"tf-idf cosine, noise sd {sd}",
                "alone": ndcg(second),
                "fused_here": ndcg({q: fuse(bm25[q], second[q]) for q in query_ids}),
            }
        )
    emit(
        {
            "benchmark": "rrf_headroom",
            "folder": str(folder),
            "split": split,
            "documents": documents,
            "rrf_k": RRF_K,
            "bm25": ndcg(bm25),
            "rows": rows,
        }
    )


if __name__ == "__main__":
    run(main)
