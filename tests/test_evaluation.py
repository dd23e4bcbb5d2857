import contextlib
import json
import logging
import math

import numpy as np
import pytest

from conftest import shared_file
from rnnembed import RnnembedError
from rnnembed.cli import main
from rnnembed.evaluation import baselines, evaluate, senteval
from rnnembed.evaluation.baselines import Doc2VecBaseline, Word2VecBaseline, train_baseline
from rnnembed.evaluation.bow import is_cjk, vectorizer, words
from rnnembed.evaluation.retrieval import ndcg_at, read_qrels, recall_at, score, search
from rnnembed.evaluation.senteval import DENSE_WEIGHTS, Features, read_labelled
from rnnembed.evaluation.sts import read_pairs, read_stsb, similarities

GOOD = ["great", "wonderful", "superb", "lovely", "brilliant"]
BAD = ["awful", "terrible", "boring", "dull", "clumsy"]


def polarity_lines(n: int = 20, offset: int = 0) -> list[str]:
    """``label sentence`` lines: class 1 uses GOOD words, class 0 BAD words."""
    lines = []
    for i in range(offset, offset + n):
        lines.append(f"1 the film was {GOOD[i % 5]} and {GOOD[(i + 2) % 5]} .")
        lines.append(f"0 the film was {BAD[i % 5]} and {BAD[(i + 3) % 5]} .")
    return lines


def question_lines(n: int, offset: int = 0) -> list[str]:
    people, places = ["the king", "a poet", "the author"], ["paris", "the river", "rome"]
    lines = []
    for i in range(offset, offset + n):
        lines.append(f"3 Who wrote the letter to {people[i % 3]} ?")
        lines.append(f"4 Where is {places[i % 3]} located ?")
        lines.append(f"5 How many people live near {places[(i + 1) % 3]} ?")
    return lines


def write(path, lines, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


STS_PAIRS = [
    ("a man is playing a guitar .", "a man is playing a guitar .", 5.0),
    ("a man is playing a guitar .", "a man plays the guitar loudly .", 3.8),
    ("a woman is slicing an onion .", "a woman is cutting an onion .", 4.2),
    ("a dog runs in the park .", "a dog is running through a park .", 3.5),
    ("a child is riding a horse .", "the stock market fell today .", 0.0),
    ("two men are talking .", "a cat sleeps on the sofa .", 0.2),
]


def stsb_lines() -> list[str]:
    lines = []
    for i, (a, b, gold) in enumerate(STS_PAIRS):
        extra = "\tsource\tlicence" if i % 2 else ""  # some STS-B lines have 9 columns
        lines.append(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{gold:.3f}\t{a}\t{b}{extra}")
    return lines


# -- metrics ---------------------------------------------------------------------------------


def test_ndcg_and_recall_on_a_hand_checked_ranking():
    relevance = {"a": 2, "b": 1, "c": 0}
    ranking = ["x", "b", "a", "c"]
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranking, relevance, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b"], relevance, 10) == pytest.approx(1.0)
    assert ndcg_at(ranking, relevance, 1) == 0.0
    assert recall_at(ranking, relevance, 100) == 1.0
    assert recall_at(ranking, relevance, 2) == 0.5
    assert recall_at(["c", "x"], relevance, 100) == 0.0


def test_qrels_read_with_or_without_a_header_and_trailing_tabs(tmp_path):
    lines = ["query-id\tcorpus-id\tscore\t", "q1\td1\t1\t", "q1\td2\t0", "q2\td3\t2\t\t"]
    expected = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert read_qrels(write(tmp_path / "a.tsv", lines)) == expected
    assert read_qrels(write(tmp_path / "b.tsv", lines[1:])) == expected


def test_score_skips_unjudged_queries_and_drops_the_query_itself():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 0}}
    rankings = {"q1": ["q1", "d1"], "q2": ["d2"], "q3": ["d1"]}
    result = score(rankings, qrels)
    assert result == {"ndcg@10": 1.0, "recall@100": 1.0, "queries": 1}


def test_spearman_of_tfidf_cosine_on_a_toy_case(tmp_path):
    one = "red green blue gold"
    pairs = [(one, one), (one, "red green pink grey"), (one, "cat dog cow hen")]
    for gold, expected in (([5, 2, 0], 100.0), ([0, 2, 5], -100.0)):
        lines = [f"{a}\t{b}\t{g}" for (a, b), g in zip(pairs, gold, strict=True)]
        path = write(tmp_path / "pairs.tsv", lines)
        assert evaluate(None, "pairs", file=path, mode="bm25")["score"] == pytest.approx(expected)


def test_hybrid_similarity_is_the_mean_of_z_scored_cosines():
    a, b, _ = zip(*STS_PAIRS, strict=True)
    a, b = list(a), list(b)
    rng = np.random.default_rng(0)
    table = {t: v / np.linalg.norm(v) for t, v in zip(a + b, rng.normal(size=(12, 8)), strict=True)}

    def encode(texts):
        return np.stack([table[t] for t in texts]).astype(np.float32)

    dense, sparse = (similarities(a, b, encode, m) for m in ("dense", "bm25"))
    z = [(s - s.mean()) / s.std() for s in (dense, sparse)]
    assert similarities(a, b, encode, "hybrid") == pytest.approx((z[0] + z[1]) / 2)


# -- reading ---------------------------------------------------------------------------------


def test_cp1252_and_utf8_label_files_read_right(tmp_path):
    path = tmp_path / "mixed.all"
    path.write_bytes(
        b"1 a caf\xe9 \x93gem\x94 \x85 really\n"  # cp1252: é, curly quotes, ellipsis
        + "0 na\u00efve but utf-8 \u2019s fine\n".encode()
        + b"\n"
        + b"1 \xf0 in TREC\n"
    )
    texts, labels = read_labelled(path)
    assert texts == ["a café “gem” … really", "naïve but utf-8 ’s fine", "ð in TREC"]
    assert labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize("label", ["pos", "1.5", str(2**63)])
def test_a_label_that_is_not_an_int64_is_refused(tmp_path, label):
    path = write(tmp_path / "bad.all", ["1 fine", f"{label} a sentence"])
    with pytest.raises(RnnembedError, match=r"bad.all:2: expected 'label sentence' with an int"):
        read_labelled(path)


def test_a_file_in_another_encoding_is_read_in_the_one_given(tmp_path, caplog):
    lines = [
        "今天天气很好\t今天天气不错\t4.5",
        "猫在睡觉\t股票上涨了\t0.0",
        "这是书\t这是好书\t4.0",
    ]
    path = write(tmp_path / "pairs-gbk.txt", lines, encoding="gbk")
    with caplog.at_level(logging.INFO, logger="rnnembed"):
        guessed = read_pairs(path)  # the fallbacks turn GBK into Latin letters, and say so
    assert guessed[0][0] != "今天天气很好" and "line 1 is not UTF-8" in caplog.text
    assert "pass --data-encoding" in caplog.text
    first, second, gold = read_pairs(path, "gbk")
    assert first == ["今天天气很好", "猫在睡觉", "这是书"] and second[1] == "股票上涨了"
    assert list(gold) == [4.5, 0.0, 4.0]
    result = evaluate(None, "pairs", file=path, mode="bm25", encoding="gbk")
    assert result["n"] == 3
    utf8 = write(tmp_path / "pairs.txt", lines)
    with pytest.raises(RnnembedError, match=r"byte \d+ \(line \d\) is not valid gbk"):
        evaluate(None, "pairs", file=utf8, mode="bm25", encoding="gbk")
    for encoding in ("nope", 3):
        with pytest.raises(RnnembedError, match=f"unknown encoding {encoding!r}"):
            evaluate(None, "pairs", file=utf8, mode="bm25", encoding=encoding)
    for paths in ({"file": 3}, {"data_dir": 3}):
        with pytest.raises(RnnembedError, match=r"(file|data_dir) is a path \(str or Path\)"):
            evaluate(None, "pairs", mode="bm25", **paths)


def test_stsb_reader_keeps_the_first_seven_columns(tmp_path):
    a, b, gold = read_stsb(write(tmp_path / "sts-dev.csv", stsb_lines()))
    assert len(a) == len(STS_PAIRS) and b[1] == "a man plays the guitar loudly ."
    assert gold.tolist() == [g for _, _, g in STS_PAIRS]


def test_chinese_text_gets_character_ngrams():
    zh = ["一个男人在弹吉他。", "一个女人在切洋葱。"]
    assert is_cjk(zh) and not is_cjk(["a man plays the guitar"])
    assert vectorizer(zh).analyzer == "char" and vectorizer(["a cat"]).analyzer == "word"
    assert words("A cat's 吉他, ok") == ["a", "cat's", "吉", "他", ",", "ok"]


# -- tasks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_cross_validated_classification(tmp_path, lm, mode):
    write(tmp_path / "senteval" / "rt-polarity.all", polarity_lines())
    result = evaluate(lm, "mr", data_dir=tmp_path, mode=mode)
    assert result["task"] == "mr" and result["mode"] == mode
    assert result["folds"] == 10 and result["n"] == 40 and len(result["C"]) == 10
    assert 0 <= result["score"] <= 100
    if mode == "hybrid":  # chosen per fold with C
        assert len(result["dense_weight"]) == 10
        assert set(result["dense_weight"]) <= set(DENSE_WEIGHTS)
    else:
        assert "dense_weight" not in result
    if mode != "dense":
        assert result["score"] == 100.0  # the two classes share no sentiment word


def test_fixed_split_classification_in_each_mode(tmp_path, lm):
    write(tmp_path / "senteval" / "TREC.train.all", question_lines(10))
    write(tmp_path / "senteval" / "TREC.test.all", question_lines(3, offset=10))
    for mode in ("dense", "bm25", "hybrid"):
        result = evaluate(lm, "trec", data_dir=tmp_path, mode=mode)
        assert result["split"] == "test" and result["n"] == 9 and result["n_train"] == 30
        assert result["score"] >= (0 if mode == "dense" else 100.0)
        assert ("dense_weight" in result) == (mode == "hybrid")


def test_hybrid_features_weight_the_dense_block_only(lm):
    texts = [line.partition(" ")[2] for line in polarity_lines(5)]
    features = Features(texts, lm.encode, "hybrid")
    x, x_test = features.split(np.arange(8), np.arange(8, 10))
    d = features.dense.shape[1]
    for rows in (x, x_test):
        two = features.weighted(rows, 2.0)
        assert two.shape == rows.shape
        np.testing.assert_allclose(two[:, :d].toarray(), 2 * rows[:, :d].toarray(), rtol=1e-6)
        assert (two[:, d:] != rows[:, d:]).nnz == 0


class OneColumn:
    """Hybrid-like features with one column, the label itself; ``informative`` weights keep it,
    the others give noise."""

    hybrid = True
    dense_weights = (0.25, 1.0)

    def __init__(self, y: np.ndarray, informative: tuple[float, ...]):
        self.x = y[:, None].astype(float)
        self.informative = informative

    def split(self, train, test):
        return self.x[train], self.x[test]

    def weighted(self, x, weight):
        if weight in self.informative:
            return x * weight
        return np.random.default_rng(len(x)).normal(size=x.shape)


def test_fit_chooses_the_weight_on_the_validation_share_and_applies_it_to_the_test_rows():
    y = np.arange(60) % 2
    train, test = np.arange(40), np.arange(40, 60)
    model, x_test, choice = senteval.fit(OneColumn(y, (1.0,)), train, test, y[train], 0)
    assert choice["dense_weight"] == 1.0
    np.testing.assert_array_equal(x_test, y[test, None])
    assert model.score(x_test, y[test]) == 1.0
    _, x_test, choice = senteval.fit(OneColumn(y, (0.25, 1.0)), train, test, y[train], 0)
    assert choice == {"C": senteval.C_GRID[0], "dense_weight": 0.25}  # a tie: the smaller
    np.testing.assert_array_equal(x_test, 0.25 * y[test, None])


def test_small_or_lopsided_classes_are_fitted_or_refused_clearly(tmp_path, caplog):
    lines = polarity_lines(12)
    lopsided = [line for line in lines if line[0] == "0"] + [lines[0], lines[2]]  # 12 and 2
    for seed in range(5):  # the validation share once held the only 2 of class 1
        result = senteval.cross_validate(*read_labelled(write(tmp_path / "l.all", lopsided)),
                                         None, "bm25", seed=seed)  # fmt: skip
        assert 0 <= result["score"] <= 100
    assert "class 1 has 2 sentences, fewer than the 10 folds" in caplog.text
    single = [*lopsided, "7 an odd one out ."]
    with pytest.raises(RnnembedError, match="class 7 has a single sentence"):
        senteval.cross_validate(*read_labelled(write(tmp_path / "s.all", single)), None, "bm25")
    train = read_labelled(write(tmp_path / "train.all", polarity_lines(10) + ["2 one alone ."]))
    test = read_labelled(write(tmp_path / "test.all", ["3 unseen .", *polarity_lines(2)]))
    assert senteval.train_test(train, test, None, "bm25")["n"] == 5  # class 2 stays in training
    assert "test labels 3 never occur in the training data" in caplog.text
    tiny = read_labelled(write(tmp_path / "tiny.all", polarity_lines(5)))  # 1 held-out row
    with pytest.raises(RnnembedError, match="10 training sentences in 2 classes are too few"):
        senteval.train_test(tiny, test, None, "bm25")


def test_the_test_labels_choose_nothing(tmp_path, lm):
    train = read_labelled(write(tmp_path / "train.all", polarity_lines(10)))
    texts, labels = read_labelled(write(tmp_path / "test.all", polarity_lines(3, 10)))
    flipped = senteval.train_test(train, (texts, 1 - labels), lm.encode, "hybrid")
    kept = senteval.train_test(train, (texts, labels), lm.encode, "hybrid")
    assert {k: flipped[k] for k in ("C", "dense_weight")} == {
        k: kept[k] for k in ("C", "dense_weight")
    }
    assert flipped["score"] == 100.0 - kept["score"]


def test_sst2_scores_test_by_default_and_falls_back_to_dev(tmp_path):
    folder = tmp_path / "senteval"
    write(folder / "stsa.binary.train", polarity_lines(15))
    write(folder / "stsa.binary.dev", polarity_lines(3, offset=15))
    assert evaluate(None, "sst2", data_dir=tmp_path, mode="bm25")["split"] == "dev"
    write(folder / "stsa.binary.test", polarity_lines(4, offset=20))
    result = evaluate(None, "sst2", data_dir=tmp_path, mode="bm25")
    assert result["split"] == "test" and result["n"] == 8
    assert evaluate(None, "sst2", data_dir=tmp_path, split="dev", mode="bm25")["n"] == 6


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_sts_tasks_in_each_mode(tmp_path, lm, mode):
    write(tmp_path / "stsb" / "sts-dev.csv", stsb_lines())
    sick = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    sick += [f"{i}\t{a}\t{b}\t{g}\tNEUTRAL" for i, (a, b, g) in enumerate(STS_PAIRS)]
    write(tmp_path / "sick" / "SICK_test_annotated.txt", sick)
    zh = write(
        tmp_path / "zh.tsv",
        [
            "一个男人在弹吉他。\t一个男人在弹吉他。\t5",
            "一个女人在切洋葱。\t一个女人在切菜。\t3",
            "一只狗在公园里跑。\t股市今天下跌了。\t0",
            "孩子在骑马。\t一个小孩在骑马。\t4",
        ],
    )
    stsb = evaluate(lm, "stsb", data_dir=tmp_path, mode=mode)
    assert stsb["split"] == "dev" and stsb["n"] == len(STS_PAIRS)  # no test file: dev
    sickr = evaluate(lm, "sickr", data_dir=tmp_path, mode=mode)
    assert sickr["split"] == "test" and sickr["n"] == len(STS_PAIRS)
    pairs = evaluate(lm, "pairs", file=zh, mode=mode)
    assert pairs["n"] == 4
    for result in (stsb, sickr, pairs):
        assert -100 <= result["score"] <= 100
    if mode == "bm25":
        assert stsb["score"] > 80 and pairs["score"] > 70


def test_adapted_sts_encodes_within_the_encoders_adapted_block(tmp_path, lm, monkeypatch):
    write(tmp_path / "stsb" / "sts-dev.csv", stsb_lines())
    sentences = [a for a, _, _ in STS_PAIRS] + [b for _, b, _ in STS_PAIRS]
    events, adapted, encode = [], lm.adapted, lm.encode

    @contextlib.contextmanager
    def recording(texts):
        with adapted(texts):
            events.append(("fitted", list(texts)))
            yield lm
            events.append(("left", None))

    def encoding(texts):
        events.append(("encoded", None))
        return encode(texts)

    monkeypatch.setattr(lm, "adapted", recording)
    monkeypatch.setattr(lm, "encode", encoding)
    plain = evaluate(lm, "stsb", data_dir=tmp_path, mode="hybrid")
    events.clear()
    result = evaluate(lm, "stsb", data_dir=tmp_path, mode="hybrid", adapt=True)
    assert events == [("fitted", sentences), ("encoded", None), ("left", None)]
    assert result["adapted"] and "adapted" not in plain
    assert evaluate(lm, "stsb", data_dir=tmp_path, mode="hybrid") == plain  # put back
    with pytest.raises(RnnembedError, match="--mode bm25 has none"):
        evaluate(None, "stsb", data_dir=tmp_path, mode="bm25", adapt=True)
    with pytest.raises(RnnembedError, match="applies to stsb, sickr, pairs, not mr"):
        evaluate(lm, "mr", data_dir=tmp_path, adapt=True)
    with pytest.raises(RnnembedError, match="refits the sif pooling.*'mean'"):
        evaluate(lm, "stsb", data_dir=tmp_path, pooling="mean", adapt=True)


def beir_folder(folder):
    """A four-document BEIR folder with two judged queries, qrels for the train split only."""
    docs = {
        "d1": ("Guitars", "a man is playing a guitar on the stage"),
        "d2": ("Onions", "a woman is slicing an onion in the kitchen"),
        "d3": ("Markets", "the stock market fell sharply today"),
        "d4": ("Dogs", "a dog runs through the park chasing a ball"),
        "d5": ("", ""),
    }
    corpus = [json.dumps({"_id": k, "title": t, "text": x}) for k, (t, x) in docs.items()]
    write(folder / "corpus.jsonl", corpus)
    queries = {"q1": "who is playing a guitar", "q2": "stock market fell", "q3": "unjudged"}
    write(folder / "queries.jsonl", [json.dumps({"_id": k, "text": v}) for k, v in queries.items()])
    qrels = ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td3\t2", "q2\td4\t0"]
    write(folder / "qrels" / "train.tsv", qrels)
    return folder


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_beir_retrieval_through_the_vector_store(tmp_path, lm, mode):
    pytest.importorskip("rnnembed.store", reason="rnnembed.store (the VectorStore) is absent")
    model = None if mode == "bm25" else lm  # BM25 needs no model
    result = evaluate(model, "beir", data_dir=beir_folder(tmp_path), mode=mode)
    assert result["split"] == "train" and result["queries"] == 2 and result["documents"] == 4
    assert result["score"] == result["ndcg@10"] and 0 <= result["score"] <= 1
    assert result["recall@100"] == 1.0  # four documents: every one is retrieved
    if mode == "bm25":
        assert result["score"] == 1.0


def test_a_data_folder_holding_one_beir_folder_is_searched_in_it(tmp_path):
    pytest.importorskip("rnnembed.store", reason="rnnembed.store (the VectorStore) is absent")
    beir_folder(tmp_path / "scifact")  # as under the shared data folder
    (tmp_path / "stsb").mkdir()
    result = evaluate(None, "beir", data_dir=tmp_path, mode="bm25")
    assert result["file"] == str(tmp_path / "scifact") and result["score"] == 1.0
    beir_folder(tmp_path / "nfcorpus")
    with pytest.raises(RnnembedError, match=r"several BEIR folders \(nfcorpus, scifact\); pass"):
        evaluate(None, "beir", data_dir=tmp_path, mode="bm25")


def test_malformed_evaluation_files_are_refused_not_scored(tmp_path, caplog):
    def broken(name, file, edit):
        folder = beir_folder(tmp_path / name)
        path = folder / file
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
        return folder

    cases = [  # each scored without complaint before: nDCG 2.04, 0.0066, 0.0, 0.0
        (
            broken("docs", "corpus.jsonl", lambda t: t + t.splitlines()[0] + "\n"),
            "duplicate _id 'd1'",
        ),
        (
            broken("queries", "queries.jsonl", lambda t: t + t.splitlines()[0] + "\n"),
            "duplicate _id",
        ),
        (broken("no-text", "queries.jsonl", lambda t: t.replace('"text"', '"query"')), "no judged"),
        (broken("trec", "qrels/train.tsv", lambda t: t.replace("\td", "\tQ0\td")), "Q0 column"),
        (
            broken("number", "queries.jsonl", lambda t: t.replace('"stock market fell"', "12")),
            r"queries.jsonl:2: field 'text' holds 12, not a string",
        ),
    ]
    for folder, message in cases:
        with pytest.raises(RnnembedError, match=message):
            evaluate(None, "beir", data_dir=folder, mode="bm25")
    unknown = broken("unknown", "qrels/train.tsv", lambda t: t + "q1\td9\t1\nq7\td1\t1\n")
    with caplog.at_level(logging.WARNING, logger="rnnembed.evaluation.retrieval"):
        evaluate(None, "beir", data_dir=unknown, mode="bm25")  # scored, as BEIR scores them
    assert "names 1 queries not in queries.jsonl (not scored) and 1 documents" in caplog.text
    sick = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
    sick += [f"{i}\t{a}\t{b}\t{g}\tNEUTRAL" for i, (a, b, g) in enumerate(STS_PAIRS)]
    bom = write(tmp_path / "bom.txt", ["\ufeff" + sick[0], *sick[1:]])
    assert evaluate(None, "sickr", file=bom, mode="bm25")["n"] == len(STS_PAIRS)
    short = write(tmp_path / "short.txt", [*sick, "9\tonly a sentence\t4"])  # was dropped
    with pytest.raises(RnnembedError, match=r"short.txt:\d+: expected 5 tab-separated columns"):
        evaluate(None, "sickr", file=short, mode="bm25")
    punct = write(tmp_path / "punct.tsv", ["...\t!!!\t1", "?\t.\t3", "-\t--\t2"])
    with pytest.raises(RnnembedError, match="the texts hold no words to count"):
        evaluate(None, "pairs", file=punct, mode="bm25")  # scikit-learn's ValueError before


def test_one_store_searches_in_every_mode(tmp_path, lm):
    pytest.importorskip("rnnembed.store", reason="rnnembed.store (the VectorStore) is absent")
    modes = ["bm25", "dense", "hybrid"]
    rankings, qrels, split, documents = search(beir_folder(tmp_path), lm, modes)
    assert split == "train" and documents == 4 and set(qrels) == {"q1", "q2"}
    assert {mode: set(ranked) for mode, ranked in rankings.items()} == dict.fromkeys(
        modes, {"q1", "q2"}
    )
    assert rankings["bm25"]["q1"][0] == "d1" and rankings["bm25"]["q2"][0] == "d3"
    assert all(sorted(ranked) == ["d1", "d2", "d3", "d4"] for ranked in rankings["dense"].values())


# -- errors ----------------------------------------------------------------------------------


def test_unknown_task_mode_or_split_and_missing_files_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.delenv("RNNEMBED_DATA_DIR", raising=False)
    with pytest.raises(RnnembedError, match="unknown task 'nope'; choose one of mr"):
        evaluate(None, "nope", mode="bm25")
    with pytest.raises(RnnembedError, match=r"unknown task \['mr'\]"):
        evaluate(None, ["mr"], mode="bm25")
    with pytest.raises(RnnembedError, match="adapt must be True or False, not 'yes'"):
        evaluate(None, "stsb", mode="bm25", adapt="yes")
    with pytest.raises(RnnembedError, match="unknown mode"):
        evaluate(None, "mr", mode="tfidf")
    with pytest.raises(RnnembedError, match="needs an encoder"):
        evaluate(None, "mr", data_dir=tmp_path)
    with pytest.raises(RnnembedError, match="model must be a loaded model .*not str"):
        evaluate("runs/my-model", "stsb", data_dir=tmp_path)  # str.encode would have run
    with pytest.raises(RnnembedError, match="--data-dir DIR"):
        evaluate(None, "mr", mode="bm25")
    with pytest.raises(RnnembedError, match="rt-polarity.all is absent; pass --data-dir"):
        evaluate(None, "mr", data_dir=tmp_path, mode="bm25")
    with pytest.raises(RnnembedError, match="found none of .*sts-test.csv or .*sts-dev.csv"):
        evaluate(None, "stsb", data_dir=tmp_path, mode="bm25")
    for task in ("trec", "sst2"):  # they read SentEval's layout, never a --file
        with pytest.raises(RnnembedError, match=r"--data-dir DIR[^-]*$") as missing:
            evaluate(None, task, data_dir=tmp_path, mode="bm25")
        assert "--file" not in str(missing.value)
        with pytest.raises(RnnembedError) as unset:
            evaluate(None, task, mode="bm25")  # RNNEMBED_DATA_DIR is unset here
        assert "--file" not in str(unset.value)
    write(tmp_path / "stsb" / "sts-dev.csv", stsb_lines())
    with pytest.raises(RnnembedError, match="unknown split 'valid'; choose one of train, dev"):
        evaluate(None, "stsb", data_dir=tmp_path, split="valid", mode="bm25")
    with pytest.raises(RnnembedError, match="sts-test.csv is absent"):
        evaluate(None, "stsb", data_dir=tmp_path, split="test", mode="bm25")
    dev = tmp_path / "stsb" / "sts-dev.csv"
    assert evaluate(None, "stsb", file=dev, split="dev", mode="bm25")["split"] == "dev"
    with pytest.raises(RnnembedError, match="unknown split 'bogus'.*only names the file's split"):
        evaluate(None, "stsb", file=dev, split="bogus", mode="bm25")
    with pytest.raises(RnnembedError, match="no splits; leave out --split"):
        evaluate(None, "mr", data_dir=tmp_path, split="test", mode="bm25")
    with pytest.raises(RnnembedError, match="corpus.jsonl is absent; pass --data-dir"):
        evaluate(None, "beir", data_dir=tmp_path, mode="bm25")
    textless = beir_folder(tmp_path / "textless")
    write(textless / "corpus.jsonl", [json.dumps({"_id": "d1", "title": "", "text": " "})])
    with pytest.raises(RnnembedError, match="no document has a title or text"):
        evaluate(None, "beir", data_dir=textless, mode="bm25")
    small = write(tmp_path / "small.all", polarity_lines(4))
    with pytest.raises(RnnembedError, match="needs at least 10 sentences of some class"):
        evaluate(None, "mr", file=small, mode="bm25")
    bad = write(tmp_path / "bad.tsv", ["only one column"])
    with pytest.raises(RnnembedError, match=r"bad.tsv:1: expected 's1<TAB>s2<TAB>score'"):
        evaluate(None, "pairs", file=bad, mode="bm25")
    with pytest.raises(RnnembedError, match="is a folder, not a file"):
        evaluate(None, "pairs", file=tmp_path, mode="bm25")
    unscored = write(tmp_path / "nan.tsv", ["a b\tc d\tnan", "e f\tg h\t3"])
    with pytest.raises(RnnembedError, match=r"nan.tsv:1: gold score 'nan' is not a finite number"):
        evaluate(None, "pairs", file=unscored, mode="bm25")
    constant = write(tmp_path / "constant.tsv", ["a b\tc d\t3", "e f\tg h\t3"])
    with pytest.raises(RnnembedError, match="all 2 pairs have the same gold score"):
        evaluate(None, "pairs", file=constant, mode="bm25")


# -- baselines -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Word2VecBaseline, Doc2VecBaseline])
def test_baselines_encode_like_a_model_and_run_every_task_kind(tmp_path, small_corpus, kind):
    baseline = kind.train([small_corpus[0]], seconds=0.5, dim=16, min_count=1)
    assert baseline.epochs >= 1
    for seconds in (0, float("inf"), float("nan")):
        with pytest.raises(RnnembedError, match=f"above 0, not {seconds}"):
            kind.train([small_corpus[0]], seconds=seconds, dim=16)
    endless = kind.train([small_corpus[0]], seconds=1e308, dim=16, min_count=1)
    assert endless.epochs == baselines.MAX_EPOCHS  # seconds / epoch time overflows to inf
    few = write(tmp_path / "few.txt", ["each word once"])
    with pytest.raises(RnnembedError, match="no word of the baseline corpus occurs 2 times"):
        kind.train([few], seconds=0.5, dim=16)
    x = baseline.encode(["the for statement", "", "the for statement"])
    assert x.shape == (3, 16) and x.dtype == np.float32 and baseline.dim() == 16
    assert np.linalg.norm(x[0]) == pytest.approx(1.0, abs=1e-5)
    x_fingerprint = baseline.fingerprint()
    assert np.array_equal(x[0], x[2]) and len(x_fingerprint) == 64
    write(tmp_path / "stsb" / "sts-dev.csv", stsb_lines())
    write(tmp_path / "senteval" / "rt-polarity.all", polarity_lines())
    assert "score" in evaluate(baseline, "stsb", data_dir=tmp_path)
    texts = [a for a, _, _ in STS_PAIRS] + ["the film was dull", "a man"]
    raw = baseline.encode(texts).astype(np.float64)
    with baseline.adapted(texts):  # whitened over the texts: (v - mean) W, unit length
        variances, axes = np.linalg.eigh(np.cov(raw.T))
        variances = variances.clip(0)
        white = (raw - raw.mean(0)) @ axes / np.sqrt(variances + 0.01 * variances.mean())
        white /= np.linalg.norm(white, axis=1, keepdims=True)
        got = baseline.encode(texts)  # the axes' signs are arbitrary: compare cosines
        np.testing.assert_allclose(got @ got.T, white @ white.T, atol=1e-4)
        assert baseline.fingerprint() != x_fingerprint
    np.testing.assert_array_equal(baseline.encode(texts), raw.astype(np.float32))
    assert baseline.fingerprint() == x_fingerprint
    with pytest.raises(RnnembedError, match="too few texts"), baseline.adapted(["one text"]):
        pass
    assert "score" in evaluate(baseline, "mr", data_dir=tmp_path, mode="hybrid")
    pytest.importorskip("rnnembed.store", reason="rnnembed.store (the VectorStore) is absent")
    assert "score" in evaluate(baseline, "beir", file=beir_folder(tmp_path / "beir"))


def test_unknown_baseline_or_no_corpus_is_a_clear_error(small_corpus):
    with pytest.raises(RnnembedError, match="unknown baseline 'tfidf'.*--mode bm25"):
        train_baseline("tfidf", [small_corpus[0]], 1)
    with pytest.raises(RnnembedError, match="--baseline-corpus"):
        train_baseline("word2vec", [], 1)


# -- command line ----------------------------------------------------------------------------


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_evaluates_a_model_a_baseline_and_bag_of_words(tmp_path, lm, small_corpus, capsys):
    lm.save(tmp_path / "model")
    model = str(tmp_path / "model")
    file = write(tmp_path / "pairs.tsv", [f"{a}\t{b}\t{g}" for a, b, g in STS_PAIRS])

    def pairs(*options, data=file):
        """``rnnembed evaluate --task pairs`` on ``data`` with ``--json``: (code, result)."""
        code, out, _ = run_cli(
            capsys, "evaluate", *options, "--task", "pairs", "--file", str(data), "--json"
        )
        return code, json.loads(out)

    code, result = pairs(model, "--pooling", "last")
    assert code in (0, None) and result["pooling"] == "last"
    assert result["task"] == "pairs" and result["mode"] == "dense" and "score" in result
    code, result = pairs(model, "--adapt")
    assert code in (0, None) and result["adapted"] is True
    gbk = write(
        tmp_path / "pairs-gbk.tsv",
        ["今天天气很好\t今天天气不错\t4.5", "猫在睡觉\t股票上涨了\t0.0"],
        "gbk",
    )
    # --encoding is a baseline corpus's, --data-encoding the task file's
    code, result = pairs(
        "--mode", "bm25", "--data-encoding", "gbk", "--encoding", "cp1252", data=gbk
    )
    assert code in (0, None) and result["n"] == 2
    code, _, err = run_cli(capsys, "evaluate", model, "--task", "mr", "--adapt")
    assert code == 1 and "applies to stsb, sickr, pairs, not mr" in err and "Traceback" not in err
    baseline = ["--baseline", "word2vec", "--baseline-corpus", str(small_corpus[0])]
    _, result = pairs(*baseline, "--baseline-seconds", "0.5")
    assert result["model"] == "word2vec" and result["pooling"] == "mean"
    for pooled in ([*baseline, "--pooling", "max"], ["--mode", "bm25", "--pooling", "median"]):
        code, _, err = run_cli(capsys, "evaluate", *pooled, "--task", "pairs", "--file", file)
        assert code == 1 and ("no 'max' pooling" in err or "leave out --pooling median" in err)
    for encoder in ([], ["--baseline", "word2vec"], [str(tmp_path / "any-model")]):
        code, result = pairs(*encoder, "--mode", "bm25")  # the words alone: no encoder loaded
        assert code == 0 and result["model"] == "bag of words"
    code, _, err = run_cli(
        capsys, "evaluate", "--task", "pairs", "--file", str(tmp_path / "no"), "--mode", "bm25"
    )
    assert code == 1 and "is absent" in err and "Traceback" not in err


# -- the real data sets (skipped without RNNEMBED_DATA_DIR) ------------------------------------


def test_real_senteval_files_decode_as_cp1252():
    texts, labels = read_labelled(shared_file("senteval/rt-polarity.all"))
    assert len(texts) == 10662 and labels.sum() == 5331
    assert any("…" in t for t in texts) and any("é" in t for t in texts)
    texts, _ = read_labelled(shared_file("senteval/TREC.train.all"))
    assert len(texts) == 5452 and any("ð" in t for t in texts)


def test_real_bag_of_words_references():
    root = shared_file("stsb/sts-dev.csv").parents[1]
    assert evaluate(None, "stsb", data_dir=root, split="dev", mode="bm25")["score"] == (
        pytest.approx(75.7, abs=0.3)
    )
    shared_file("zh/sts/STS-B.valid.data")
    assert evaluate(None, "pairs", data_dir=root, split="valid", mode="bm25")["score"] == (
        pytest.approx(73.1, abs=0.3)
    )
