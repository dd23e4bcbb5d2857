"""VectorStore on Milvus Lite 3 (a .db folder) and, where $RNNEMBED_TEST_MILVUS_BIN names
one, on a Milvus server process reached by URI: the same tests run on both."""

import itertools
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from pymilvus import MilvusClient, MilvusException

from rnnembed.chunking import read_chunks
from rnnembed.errors import RnnembedError
from rnnembed.language_model import LanguageModel
from rnnembed.store import HNSW_BUILD, MAX_TEXT_BYTES, Hit, VectorStore, _binding, row_id

BACKENDS = ["milvus-lite", "milvus-server"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, tmp_path_factory):
    """Where new stores go: (kind, a function giving a fresh (uri, collection) each call)."""
    numbers = itertools.count()
    if request.param == "milvus-lite":
        folder = tmp_path_factory.mktemp("lite")
        return request.param, lambda: (folder / f"s{next(numbers)}.db", "default")
    uri = request.getfixturevalue("milvus_server")
    return request.param, lambda: (uri, f"fresh{next(numbers)}")


@pytest.fixture
def new_store(backend):
    """Open a store in a fresh collection of the backend: ``new_store(model=lm, ...)``."""
    opened = []

    def make(**kwargs):
        uri, collection = backend[1]()
        opened.append(VectorStore(uri, collection=collection, **kwargs))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture(scope="module")
def chunks(small_corpus):
    """200 distinct lines of real English (four words or more), as (text, source) pairs."""
    train, _ = small_corpus
    unique = {c.text: c.source for c in read_chunks([train]) if len(words(c.text)) >= 4}
    return list(unique.items())[:200]


@pytest.fixture(scope="module")
def store(lm, chunks, backend):
    """A store of the chunks in the backend's collection "default", each row with metadata
    {"n": its position}."""
    uri, _ = backend[1]()
    with VectorStore(uri, model=lm) as s:
        s.add(
            [t for t, _ in chunks],
            sources=[src for _, src in chunks],
            metadata=[{"n": i} for i in range(len(chunks))],
        )
        yield s


def words(text):
    return re.findall(r"\w+", text.lower())


@pytest.fixture(scope="module")
def rare(chunks):
    """A longish word found in exactly one chunk, and that chunk's text."""
    counts = Counter(w for text, _ in chunks for w in set(words(text)))
    word = next(w for w, n in sorted(counts.items()) if n == 1 and len(w) >= 7 and w.isalpha())
    return word, next(text for text, _ in chunks if word in words(text))


def test_adding_again_adds_nothing_and_returns_the_same_ids(store, chunks):
    texts, sources = [t for t, _ in chunks], [s for _, s in chunks]
    assert store.count() == len(chunks)
    ids = store.add(texts[:50] + ["a brand new line of text"], sources=sources[:50] + ["new:1"])
    assert ids[:50] == [row_id(t, s) for t, s in zip(texts[:50], sources[:50], strict=True)]
    assert store.count() == len(chunks) + 1
    assert store.add(texts[:50], sources=sources[:50]) == ids[:50]
    assert store.count() == len(chunks) + 1
    assert store.delete([ids[-1]]) == 1 and store.count() == len(chunks)


def test_the_same_text_from_another_source_is_another_row(lm, new_store):
    with new_store(model=lm) as s:
        ids = s.add(["the same words", "the same words", "the same words"], sources=["a", "b", "a"])
        assert ids[0] == ids[2] != ids[1] and s.count() == 2


def test_the_hnsw_index_is_built_with_our_parameters(store, backend):
    described = store.client.describe_index(store.collection, "vector")
    assert described["metric_type"] == "IP"
    if backend[0] == "milvus-server":  # the test server refuses HNSW: exact search instead
        assert described["index_type"] == "FLAT"
        return
    # pymilvus 3 sends build parameters flat, which Milvus Lite 3 ignores (it reads "params")
    assert described["index_type"] == "HNSW" and described["params"] == HNSW_BUILD


def test_a_collection_left_without_indexes_gets_them_when_opened(lm, backend, monkeypatch):
    def lost(*args, **kwargs):
        raise MilvusException(message="the server went away")

    uri, collection = backend[1]()
    monkeypatch.setattr(MilvusClient, "create_index", lost)
    with pytest.raises(RnnembedError, match="could not index the vectors: the server went away"):
        VectorStore(uri, model=lm, collection=collection)  # made the collection, not its indexes
    monkeypatch.undo()
    with VectorStore(uri, model=lm, collection=collection, create=False) as s:
        assert s.add(["a line about zebras", "another line"]) and s.count() == 2
        for mode in ("dense", "bm25", "hybrid"):
            assert s.search("a line about zebras", k=1, mode=mode)[0].text == "a line about zebras"


def test_an_index_type_the_server_refuses_falls_back_to_exact_search(
    lm, backend, monkeypatch, caplog
):
    create_index = MilvusClient.create_index

    def without_hnsw(self, collection_name, index_params, **kwargs):
        if any(index.index_type == "HNSW" for index in index_params):
            raise MilvusException(message="invalid index type: HNSW")
        return create_index(self, collection_name, index_params, **kwargs)

    monkeypatch.setattr(MilvusClient, "create_index", without_hnsw)
    uri, collection = backend[1]()
    with VectorStore(uri, model=lm, collection=collection) as s:
        assert s.client.describe_index(collection, "vector")["index_type"] == "FLAT"
        s.add(["exact search still finds this"])
        assert s.search("exact search still finds this", k=1)[0].score == pytest.approx(1, abs=1e-4)
    assert "refused HNSW (invalid index type: HNSW); the vectors are indexed with" in caplog.text


@pytest.mark.parametrize(
    ("properties", "description", "binding"),
    [
        ({"rnnembed.fingerprint": "f", "rnnembed.dim": "8"}, "", {"fingerprint": "f", "dim": "8"}),
        ({}, '{"rnnembed": {"fingerprint": "f"}}', {"fingerprint": "f"}),  # a 2.x server
        ({"rnnembed.fingerprint": "p"}, '{"rnnembed": {"fingerprint": "d"}}', {"fingerprint": "p"}),
        ({"other.key": "x"}, "someone else's collection", {}),
        ({}, '["rnnembed"]', {}),
        ({}, '{"rnnembed": "not a record"}', {}),
        ({}, None, {}),
    ],
)
def test_the_binding_is_read_from_properties_or_the_description(properties, description, binding):
    assert _binding({"properties": properties, "description": description}) == binding


def test_a_collection_cut_short_as_it_was_created_names_its_folder(lm, tmp_path):
    db = tmp_path / "d.db"
    VectorStore(db, model=lm).close()
    left = db / "collections" / "c2"  # a kill between Milvus Lite's mkdir and its schema
    left.mkdir()
    with pytest.raises(RnnembedError, match=f"File exists: '{left}'.*stopped as it created"):
        VectorStore(db, model=lm, collection="c2")
    left.rmdir()
    with VectorStore(db, model=lm, collection="c2") as store:
        assert store.count() == 0


def test_count_and_delete(lm, new_store):
    with new_store(model=lm) as s:
        assert s.count() == 0
        ids = s.add(["one line", "two lines", "three lines"])
        assert s.count() == 3
        assert s.delete([ids[0], ids[1], "no-such-id"]) == 2
        assert s.count() == 1 and s.delete({ids[0]}) == 0  # ids in any order: a set will do
        assert [h.text for h in s.search("two lines", k=5)] == ["three lines"]
        # an id that would read as a filter expression matches nothing, and deletes nothing
        for crafted in ["x'] or id not in ['", 'a"b', "x' or 1==1"]:
            assert s.delete([crafted]) == 0
        assert s.count() == 1


def test_the_sources_in_a_file_or_folder_are_its_rows_only(lm, new_store, tmp_path, monkeypatch):
    sources = [
        "d/a_b.txt:1",
        "d/axb.txt:1",  # _ is a LIKE wildcard
        "d/a_b.txt.bak:3",
        "d/a_b.txt",
        "d/a_b.txt:9.txt:2",  # another file, named "a_b.txt:9.txt"
        "d/a_b.txt:20",
        'd/we"ird\\café 中文:2',
        "dd/a_b.txt:1",
    ]
    with new_store(model=lm) as s:
        ids = s.add([f"text {i}" for i in range(len(sources))], sources=sources)
        by_id = dict(zip(ids, sources, strict=True))
        assert s.sources_in("d/a_b.txt") == {i: by_id[i] for i in (ids[0], ids[3], ids[5])}
        assert set(s.sources_in('d/we"ird\\café 中文')) == {ids[6]}
        assert s.sources_in("d") == {i: by_id[i] for i in ids[:7]}  # a folder: all under it
        assert s.sources_in("none.txt") == {}
        monkeypatch.chdir(tmp_path)
        (tmp_path / "d").mkdir()
        label = s.add(["a labelled row"], sources=["L" * 300])  # longer than a file name
        assert set(s.sources_in(".")) == set(ids[:7]) and label[0] not in s.sources_in(".")
        with pytest.raises(RnnembedError, match="argument is a path .str or Path., not NoneType"):
            s.sources_in(None)


def test_dense_search_finds_a_stored_text_from_its_exact_wording(store, chunks):
    for text, source in chunks[10:15]:
        hit = store.search(text, k=3)[0]
        assert (hit.text, hit.source) == (text, source)
        assert hit.score == pytest.approx(1.0, abs=1e-4)


def test_bm25_finds_the_line_with_a_rare_word_first(store, rare):
    word, text = rare
    hits = store.search(word, k=5, mode="bm25")
    assert hits[0].text == text and hits[0].score > 0
    assert all(word in words(h.text) for h in hits)


def test_hybrid_fuses_both_rankings(store, rare):
    word, _ = rare
    dense = store.search(word, k=10, mode="dense")
    bm25 = store.search(word, k=10, mode="bm25")
    hybrid = store.search(word, k=10, mode="hybrid")
    assert len(hybrid) == 10
    assert {dense[0].id, bm25[0].id} <= {h.id for h in hybrid[:2]}
    assert {h.id for h in hybrid} - {h.id for h in bm25}, "hybrid has dense-only hits too"
    scores = [h.score for h in hybrid]
    assert scores == sorted(scores, reverse=True)


def test_a_list_of_queries_gives_a_list_of_hit_lists(store, chunks):
    texts = [chunks[0][0], chunks[1][0]]
    for mode in ("dense", "bm25", "hybrid"):
        results = store.search(texts, k=2, mode=mode)
        assert [hits[0].text for hits in results] == texts
        assert all(isinstance(h, Hit) for hits in results for h in hits)


def test_hits_carry_source_and_metadata(store, chunks):
    hit = store.search(chunks[7][0], k=1)[0]
    assert hit.to_dict() == {
        "id": row_id(*chunks[7]),
        "text": chunks[7][0],
        "score": hit.score,
        "source": chunks[7][1],
        "metadata": {"n": 7},
    }


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filters_on_source_and_metadata(store, chunks, mode):
    query = chunks[3][0]
    hits = store.search(query, k=20, mode=mode, filter='metadata["n"] >= 100')
    assert hits and all(h.metadata["n"] >= 100 for h in hits)
    prefix = chunks[0][1].rsplit(":", 1)[0]
    hits = store.search(query, k=5, mode=mode, filter=f'source like "{prefix}:%"')
    assert hits and all(h.source.startswith(prefix) for h in hits)
    assert store.search(query, k=5, mode=mode, filter='source like "elsewhere/%"') == []


def test_bad_arguments_are_clear_errors(store):
    with pytest.raises(RnnembedError, match="unknown search mode 'fuzzy'"):
        store.search("text", mode="fuzzy")
    with pytest.raises(RnnembedError, match="k must be"):
        store.search("text", k=0)
    for empty in ("", "   ", ["fine", ""]):
        with pytest.raises(RnnembedError, match="empty query"):
            store.search(empty)
    with pytest.raises(RnnembedError, match="check the filter expression"):
        store.search("text", filter="source ==")
    with pytest.raises(RnnembedError, match="check the filter expression") as deep:
        store.search("text", filter="(" * 3000 + "true" + ")" * 3000)
    assert len(str(deep.value)) < 1000  # the expression is not echoed whole
    with pytest.raises(RnnembedError, match="filter must be a Milvus boolean expression"):
        store.search("text", filter=5)
    with pytest.raises(RnnembedError, match="query must be a string or a list of them"):
        store.search(b"text")
    with pytest.raises(RnnembedError, match=r"the query holds '\\ud800', a lone surrogate"):
        store.search("text \ud800", mode="bm25")
    with pytest.raises(RnnembedError, match="id 0 is int, not a string"):
        store.delete([5])
    with pytest.raises(RnnembedError, match="empty"):
        store.add(["fine", " "])
    with pytest.raises(RnnembedError, match=r"2 texts but 1 sources; give one per text, or none$"):
        store.add(["a", "b"], sources=["only one"])  # no word of the metadata not given
    with pytest.raises(RnnembedError, match="2 texts but 3 metadata"):
        store.add(["a", "b"], sources=["a", "b"], metadata=[{}] * 3)
    before = store.count()
    with pytest.raises(RnnembedError, match="metadata 1 is not plain JSON"):
        store.add(["a", "b"], metadata=[{}, {"x": float("nan")}])  # Milvus would keep null
    with pytest.raises(RnnembedError, match=r"source 1 holds '\\udcff', a lone surrogate"):
        store.add(["a", "b"], sources=["a.txt", "b\udcff.txt"])  # a file name not in UTF-8
    with pytest.raises(RnnembedError, match="source 0 holds a NUL character"):
        store.add(["c"], sources=["a\0b"])  # its id would be that of "b\0c" from "a"
    for meta, problem in [({1: "x"}, "the key 1 is not a string"), ({"n": 2**70}, "64 bits")]:
        texts = [f"a new text {i}" for i in range(600)]  # more than one insert's batch
        with pytest.raises(RnnembedError, match=f"metadata 599 is not plain JSON .*{problem}"):
            store.add(texts, metadata=[{}] * 599 + [meta])  # Milvus refused it mid-way
    with pytest.raises(RnnembedError, match="sources must be a list of strings, not str"):
        store.add(["a", "b"], sources="ab")  # it was read as the sources "a" and "b"

    def nested(levels: int) -> dict:
        meta: dict = {"leaf": 1}
        for _ in range(levels - 1):
            meta = {"a": meta}
        return meta

    for levels in (600, 5000):  # a search returning the row failed, then add itself
        texts = [f"a deep text {i}" for i in range(600)]
        with pytest.raises(RnnembedError, match="metadata 599 .*nested more than 64 levels"):
            store.add(texts, metadata=[{}] * 599 + [nested(levels)])
    assert store.count() == before
    store.add(["the deepest metadata kept"], metadata=[nested(64)])
    (hit,) = store.search("the deepest metadata kept", k=1, mode="bm25")
    assert hit.to_dict()["metadata"] == nested(64)


def test_a_closed_store_says_so(lm, new_store):
    s = new_store(model=lm)
    s.add(["some text to keep"])
    s.close()
    for use in (s.count, lambda: s.search("text"), lambda: s.add(["more"])):
        with pytest.raises(RnnembedError, match="this VectorStore is closed"):
            use()
    s.close()  # closing twice is fine


def test_another_model_or_dimension_is_refused(lm, store, chunks, tmp_path):
    lm.save(tmp_path / "copy")
    other = LanguageModel.load(tmp_path / "copy")
    with torch.no_grad():
        next(other.model.parameters()).add_(0.01)
    with pytest.raises(RnnembedError, match="built by another model") as info:
        VectorStore(store.uri, model=other)
    assert "another --collection" in str(info.value) and "rebuild the index" in str(info.value)
    # the store holds the default (sif) pooling: hidden states + word vectors, 64 wide
    with pytest.raises(RnnembedError, match="another model or pooling"):
        VectorStore(store.uri, model=lm, pooling="mean+max")  # as wide, another pooling
    with pytest.raises(RnnembedError, match="64-dimensional vectors, but .* 32-dimensional"):
        VectorStore(store.uri, model=lm, pooling="last")
    with VectorStore(store.uri, model=other, collection="other") as s:  # its own collection
        assert s.count() == 0
    with VectorStore(store.uri, model=lm, collection="by_last", pooling="last") as s:
        s.add(["a text embedded with the last state"])
    with VectorStore(store.uri, model=lm, collection="by_last") as s:  # no pooling: its own
        assert (s.pooling, s.dim) == ("last", 32)
        assert s.search("a text", k=1)[0].text == "a text embedded with the last state"
    with pytest.raises(RnnembedError, match="model must be a loaded model .*not PosixPath"):
        VectorStore(store.uri, model=tmp_path / "copy")  # the folder, not the model
    before = store.count()
    with lm.adapted([t for t, _ in chunks]):  # the vectors the collection holds change meanwhile
        for use in (lambda: store.add(["one more text"]), lambda: store.search("text")):
            with pytest.raises(RnnembedError, match="the model's vectors changed since"):
                use()
    assert store.count() == before and store.search("text", k=np.int64(2))[0]


def test_databases_that_cannot_be_opened(lm, tmp_path):
    not_a_db = tmp_path / "old.db"
    not_a_db.write_bytes(b"SQLite format 3\0")
    with pytest.raises(RnnembedError, match="is a file, not a Milvus Lite 3 database"):
        VectorStore(not_a_db, model=lm)
    others = tmp_path / "notes.db"
    others.mkdir()
    (others / "mine.txt").write_text("keep")
    with pytest.raises(RnnembedError, match="a folder of other files, not a Milvus Lite"):
        VectorStore(others, model=lm)
    assert [f.name for f in others.iterdir()] == ["mine.txt"]
    with pytest.raises(RnnembedError, match="neither a Milvus Lite database path"):
        VectorStore(tmp_path / "index.sqlite", model=lm)
    with pytest.raises(RnnembedError, match="no such database"):
        VectorStore(tmp_path / "missing.db", model=lm, create=False)
    with pytest.raises(RnnembedError, match="cannot create the folder"):
        VectorStore(not_a_db / "inside.db", model=lm)
    with pytest.raises(RnnembedError, match="unknown analyzer"):
        VectorStore(tmp_path / "x.db", model=lm, analyzer="klingon")


def test_the_current_folder_claims_its_own_files_not_other_labels(tmp_path, monkeypatch):
    from rnnembed.store import _lies_in

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("x")
    for source in ("a.txt:1", "gone.md:3", "sub/b.txt:2", "sub/gone.txt:1"):
        assert _lies_in(source, "."), source  # here, or a file here since deleted
    for source in ("faq-12", "https://example.com/page", "docs/a.txt:1", "../x.txt:1", "/a.txt"):
        assert not _lies_in(source, "."), source  # a label, or a file indexed from elsewhere


def test_a_new_collection_needs_milvus_rule_for_names_an_existing_one_opens(
    lm, tmp_path, monkeypatch
):
    uri = str(tmp_path / "names.db")
    monkeypatch.setattr("rnnembed.store.COLLECTION_NAME", re.compile(r"[\w-]+"))
    with VectorStore(uri, model=lm, collection="my-docs") as made:  # Milvus Lite takes it
        made.add(["kept by an earlier version"])
    monkeypatch.undo()
    with VectorStore(uri, model=lm, collection="my-docs") as opened:
        assert opened.count() == 1
    for name, problem in [("new-docs", "not one Milvus takes"), ("x" * 256, "1 to 255")]:
        with pytest.raises(RnnembedError, match=problem):
            VectorStore(uri, model=lm, collection=name)
    with pytest.raises(RnnembedError, match="not one Milvus takes"):
        VectorStore(tmp_path / "new.db", model=lm, collection="9x")
    assert not (tmp_path / "new.db").exists()  # refused before the database was made
    (tmp_path / "empty.db").mkdir()
    with pytest.raises(RnnembedError, match="not one Milvus takes"):
        VectorStore(tmp_path / "empty.db", model=lm, collection="9x")
    assert not any((tmp_path / "empty.db").iterdir())


def test_a_database_another_process_holds_says_so(lm, tiny_model_folder, tmp_path):
    uri = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from rnnembed import LanguageModel; from rnnembed.store import "
            f"VectorStore; s = VectorStore({str(uri)!r}, model=LanguageModel.load("
            f"{str(tiny_model_folder)!r}, device='cpu')); print('open', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(RnnembedError, match="another process holds the lock"):
            VectorStore(uri, model=lm)  # Milvus Lite's own log says why; it must reach the user
    finally:
        holder.communicate("")


def test_missing_collection_is_an_error_when_not_creating(lm, store):
    with pytest.raises(RnnembedError, match="no collection 'nope' .*it has: .*default"):
        VectorStore(store.uri, model=lm, collection="nope", create=False)


def test_over_long_texts_are_stored_cut(lm, new_store, caplog):
    long_text = "word " * 14_000 + "é" * 10  # 70,020 bytes
    with new_store(model=lm) as s:
        [id_] = s.add([long_text], sources=["long.txt:1"])
        assert id_ == row_id(long_text, "long.txt:1") and "stored cut" in caplog.text
        hit = s.search("word", k=1, mode="bm25")[0]
        assert len(hit.text.encode()) <= MAX_TEXT_BYTES and long_text.startswith(hit.text)
        assert s.add([long_text], sources=["long.txt:1"]) == [id_] and s.count() == 1


def test_chinese_analyzer_segments_words(lm, new_store):
    texts = ["我爱北京天安门", "今天天气很好", "北京的天气"]
    with new_store(model=lm, analyzer="chinese") as s:
        s.add(texts)
        assert [h.text for h in s.search("天安门", k=3, mode="bm25")] == [texts[0]]
        assert {h.text for h in s.search("北京", k=3, mode="bm25")} == {texts[0], texts[2]}
    with VectorStore(s.uri, model=lm, collection=s.collection) as s:  # the collection's analyzer
        assert s.analyzer == "chinese"


def test_a_database_opened_under_two_spellings_of_its_path_is_one(lm, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.db").symlink_to(tmp_path / "s.db", target_is_directory=True)
    with VectorStore(tmp_path / "s.db", model=lm) as first:
        first.add(["one two three"])
        VectorStore(tmp_path / "sub" / ".." / "s.db", model=lm).close()
        assert first.count() == 1  # the close had stopped the first one's server
        with pytest.raises(RnnembedError, match="cannot open the Milvus Lite database"):
            VectorStore(tmp_path / "link.db", model=lm)  # Milvus Lite's own lock refuses it
        assert first.count() == 1
    (tmp_path / "folder").mkdir()  # a link ending in .db to a folder that does not
    (tmp_path / "folder.db").symlink_to(tmp_path / "folder", target_is_directory=True)
    with VectorStore(tmp_path / "folder.db", model=lm) as linked:
        assert linked.add(["four five"]) and linked.count() == 1


def test_closing_frees_the_database_for_another_process(lm, tmp_path):
    path = tmp_path / "s.db"
    with VectorStore(path, model=lm) as s:
        s.add(["kept across processes"])
    code = (
        "from pymilvus import MilvusClient; "
        f"c = MilvusClient({str(path)!r}); "
        "print(c.query('default', filter='', output_fields=['count(*)'])[0]['count(*)'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "1", done.stderr[-500:]


def test_precomputed_vectors_and_a_fake_model(new_store):
    class Fixed:
        def dim(self, pooling="mean"):
            return 4

        def fingerprint(self, pooling="mean"):
            return "fixed"

        def encode(self, texts, pooling="mean"):
            return np.tile(np.eye(4, dtype=np.float32)[:1], (len(texts), 1))

    with new_store(model=Fixed()) as s:
        vectors = np.eye(4, dtype=np.float32)
        s._insert(["a", "b", "c", "d"], ["x", "y", "z", "w"], [""] * 4, [{}] * 4, vectors)
        assert [h.id for h in s._search_vectors(vectors[2:3], k=1)[0]] == ["c"]
        assert s.search("anything", k=1)[0].id == "a"


def test_adding_to_a_lite_collection_stored_earlier_warns_of_its_bm25(lm, chunks, backend, caplog):
    uri, collection = backend[1]()
    texts = [t for t, _ in chunks[:6]]
    with VectorStore(uri, model=lm, collection=collection) as s:
        s.add(texts[:3])
        s.add(texts[3:4])  # the same session: its rows share the segment's statistics
    assert "scores BM25 with each segment's own" not in caplog.text
    with VectorStore(uri, model=lm, collection=collection) as s:
        s.add(texts[:3])  # nothing new
        assert "scores BM25 with each segment's own" not in caplog.text
        s.add(texts[4:5])
        s.add(texts[5:6])
    warned = caplog.text.count("scores BM25 with each segment's own")
    assert warned == (1 if backend[0] == "milvus-lite" else 0)  # a server pools its statistics
