"""The HTTP server, started for real on a loopback port and called with the official OpenAI
client and plain HTTP."""

import base64
import gzip
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import openai
import pytest
import uvicorn

from conftest import free_port
from rnnembed import cli
from rnnembed.chunking import read_chunks
from rnnembed.config import DEFAULT_TEMPERATURE
from rnnembed.server import ServerConfig, create_app
from rnnembed.store import VectorStore

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json"}


@contextmanager
def running(app):
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def chunks(small_corpus):
    """100 distinct lines of real English, as (text, source) pairs."""
    train, _ = small_corpus
    unique = {c.text: c.source for c in read_chunks([train]) if len(c.text.split()) >= 4}
    return list(unique.items())[:100]


@pytest.fixture(scope="module")
def store(lm, chunks, tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "index.db"
    with VectorStore(path, model=lm) as s:
        s.add([t for t, _ in chunks], sources=[src for _, src in chunks])
        yield s


@pytest.fixture(scope="module")
def url(lm, store):
    """A server with a store and an API key."""
    with running(create_app(lm, store, api_key=KEY, config=ServerConfig(model_name="tiny"))) as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def post(url, path, body=None, headers=AUTH, **kwargs):
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30, **kwargs)


def assert_openai_error(response, status, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    return error


def vectors(response):
    return np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)])


TEXTS = ["The quick brown fox.", "A list of strings", "x", "Ünïcödé and 中文 too"]


@pytest.mark.parametrize("encoding", [None, "float"])
def test_openai_client_gets_the_vectors_of_encode(client, lm, encoding):
    extra = {} if encoding is None else {"encoding_format": encoding}  # default: base64
    response = client.embeddings.create(model="tiny", input=TEXTS, **extra)
    assert response.model == "tiny" and [d.index for d in response.data] == [0, 1, 2, 3]
    np.testing.assert_allclose(vectors(response), lm.encode(TEXTS), rtol=0, atol=1e-6)
    tokens = sum(len(ids) for ids in lm.tokenizer.encode_batch(TEXTS))
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_base64_is_little_endian_float32(url, lm):
    data = post(url, "/v1/embeddings", {"input": "one text", "encoding_format": "base64"}).json()
    raw = base64.b64decode(data["data"][0]["embedding"])
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), lm.encode(["one text"])[0])


def test_a_string_and_token_ids_are_inputs_too(client, lm):
    single = client.embeddings.create(model="tiny", input="just one string")
    np.testing.assert_allclose(vectors(single), lm.encode(["just one string"]), atol=1e-6)
    ids = [lm.tokenizer.encode(t) for t in TEXTS[:2]]
    many = client.embeddings.create(model="tiny", input=ids)
    np.testing.assert_allclose(vectors(many), lm.encode(TEXTS[:2]), atol=1e-6)
    assert many.usage.prompt_tokens == sum(map(len, ids))
    one = client.embeddings.create(model="tiny", input=ids[0])
    np.testing.assert_allclose(vectors(one), lm.encode(TEXTS[:1]), atol=1e-6)


def test_token_ids_are_read_as_given_not_as_their_decoded_text(client, lm):
    unk = [lm.tokenizer.unk_id] * 4  # decodes to the literal text "<unk>" four times
    response = client.embeddings.create(model="tiny", input=[unk])
    assert response.usage.prompt_tokens == len(unk)
    np.testing.assert_allclose(vectors(response), lm.encode_ids([unk]), atol=1e-6)
    as_text = lm.encode([lm.tokenizer.decode(unk)])
    assert len(lm.tokenizer.encode(lm.tokenizer.decode(unk))) > len(unk)
    assert not np.allclose(vectors(response), as_text, atol=1e-3)


def test_dimensions_equal_to_the_models_is_accepted_any_other_refused(client, url, lm):
    dim = lm.dim()
    assert len(client.embeddings.create(model="tiny", input="a", dimensions=dim).data) == 1
    response = post(url, "/v1/embeddings", {"input": "a", "dimensions": 8})
    assert f"{dim}-dimensional" in assert_openai_error(response, 400, "dimensions")["message"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "tiny", "input": ""}, 400, "input"),
        ({"model": "tiny", "input": []}, 400, "input"),
        ({"model": "tiny", "input": ["fine", ""]}, 400, "input"),
        ({"model": "tiny", "input": ["a"] * 2049}, 400, "input"),
        ({"model": "tiny", "input": ["a " * 9000]}, 400, "input"),  # over 8,192 tokens
        ({"model": "tiny", "input": [[5, 99_999]]}, 400, "input"),  # not this model's ids
        ({"model": "tiny", "input": 123}, 422, "input"),
        ({"model": "tiny", "input": [1, "a"]}, 422, "input"),
        ({"model": "tiny", "input": [1.5]}, 422, "input"),
        ({"model": "tiny", "input": "a", "encoding_format": "hex"}, 422, "encoding_format"),
        ({"model": "tiny"}, 422, "input"),
        ({"model": "tiny", "input": "a", "user": 5}, 422, "user"),
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(url, body, status, param):
    assert_openai_error(post(url, "/v1/embeddings", body), status, param)
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_a_lone_surrogate_is_refused_as_the_input(url):
    body = b'{"input": ["fine", "a \\ud800 b"]}'  # valid JSON, not Unicode text
    response = post(url, "/v1/embeddings", content=body, headers=AUTH | JSON)
    assert "input[1]: " in assert_openai_error(response, 400, "input")["message"]


def test_too_many_tokens_in_one_request(lm, url):
    line = "word " * 2000
    tokens = len(lm.tokenizer.encode(line))
    assert tokens <= 8192
    response = post(url, "/v1/embeddings", {"input": [line] * (300_000 // tokens + 1)})
    assert "300,000" in assert_openai_error(response, 400, "input")["message"]


@pytest.fixture(scope="module")
def limited(lm, store):
    """A server whose limits a 3-word text just meets, and that text's token count."""
    n = len(lm.tokenizer.encode("word " * 3))
    config = ServerConfig(max_inputs=2, max_input_tokens=n, max_request_tokens=2 * n - 1)
    with running(create_app(lm, store, config=config)) as u:
        yield u, n


def test_prompts_and_queries_over_the_token_limit_are_refused(limited):
    url, n = limited
    assert post(url, "/v1/generate", {"prompt": "word " * 3, "max_tokens": 2}).status_code == 200
    assert post(url, "/v1/search", {"query": "word " * 3}).status_code == 200
    response = post(url, "/v1/generate", {"prompt": "word " * 30, "max_tokens": 2})
    error = assert_openai_error(response, 400, "prompt")
    assert error["type"] == "invalid_request_error" and f"limit is {n:,}" in error["message"]
    error = assert_openai_error(post(url, "/v1/search", {"query": "word " * 30}), 400, "query")
    assert error["message"].startswith("query is ")
    for body in ({"input": "word " * 30}, {"input": ["word", "word " * 30]}):
        error = assert_openai_error(post(url, "/v1/embeddings", body), 400, "input")
        assert error["message"].startswith("input is " if body["input"][0] == "w" else "input[1]")


@pytest.mark.parametrize(
    "texts, limit",
    [
        (["word " * 30], "per input"),
        (["word " * 3] * 2, "per request"),
        (["one", "two", "three"], "holds 3 items"),
    ],
)
def test_documents_over_a_limit_are_refused_and_nothing_is_added(limited, store, texts, limit):
    url, _ = limited
    before = store.count()
    error = assert_openai_error(post(url, "/v1/documents", {"texts": texts}), 400, "texts")
    assert error["type"] == "invalid_request_error" and limit in error["message"]
    assert store.count() == before


def test_malformed_json_and_oversized_bodies(url):
    response = httpx.post(
        f"{url}/v1/embeddings",
        content=b'{"input": [',
        headers=AUTH | JSON,
    )
    assert_openai_error(response, 400)
    latin = httpx.post(
        f"{url}/v1/embeddings",
        content='{"input": "café"}'.encode("cp1252"),
        headers=AUTH | JSON,
    )
    assert (
        assert_openai_error(latin, 400)["message"] == "the request body is not valid JSON in UTF-8"
    )
    packed = httpx.post(
        f"{url}/v1/embeddings",
        content=gzip.compress(b'{"input": "hi"}'),
        headers=AUTH | JSON | {"content-encoding": "gzip"},
    )
    assert "gzip-encoded; send it uncompressed" in assert_openai_error(packed, 415)["message"]
    response = httpx.post(f"{url}/v1/embeddings", content=b'{"input": "hi"}', headers=AUTH)
    assert_openai_error(response, 422)  # JSON, but not said to be: the message says what to send
    assert "Content-Type: application/json" in response.json()["error"]["message"]
    big = {"input": ["x" * 1_000_000] * 9}  # 9 MB, over the default 8 MiB
    assert_openai_error(post(url, "/v1/embeddings", big), 413)

    def chunks():  # no Content-Length: refused once the bytes read pass the limit
        yield b'{"input": "'
        for _ in range(9):
            yield b"x" * 1_000_000
        yield b'"}'

    response = httpx.post(
        f"{url}/v1/embeddings",
        content=chunks(),
        headers=AUTH | JSON,
    )
    assert_openai_error(response, 413)
    assert httpx.get(f"{url}/health").status_code == 200


def test_the_key_is_needed_everywhere_but_health_and_the_page(url):
    wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model="tiny", input="a")
    for path, body in [("/v1/embeddings", {"input": "a"}), ("/v1/search", {"query": "a"})]:
        assert_openai_error(post(url, path, body, headers={}), 401)
        assert_openai_error(post(url, path, body, headers={"Authorization": "Bearer no"}), 401)
    for path in ("/v1/models", "/metrics"):
        assert_openai_error(httpx.get(f"{url}{path}"), 401)
    assert httpx.get(f"{url}/health").status_code == 200
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and 'id="query"' in page.text
    assert f'id="temperature" type="number" value="{DEFAULT_TEMPERATURE}"' in page.text


def test_concurrent_requests_are_all_answered_correctly(client, lm, chunks):
    texts = [t for t, _ in chunks[:64]]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: client.embeddings.create(model="tiny", input=[t]), texts))
    np.testing.assert_allclose(
        np.vstack([vectors(r) for r in results]), lm.encode(texts), atol=1e-6
    )


class Gated:
    """The model, with encode_ids held until ``release`` is set (``entered`` says one is held)."""

    def __init__(self, lm):
        self.lm, self.entered, self.release = lm, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def encode_ids(self, token_ids, **options):
        self.entered.set()
        assert self.release.wait(30)
        return self.lm.encode_ids(token_ids, **options)


class Failing(Gated):
    """The model, with encode_ids failing on the ids of the text "boom"."""

    def encode_ids(self, token_ids, **options):
        if self.lm.tokenizer.encode("boom") in token_ids:
            raise RuntimeError("boom")
        return self.lm.encode_ids(token_ids, **options)


def test_a_failing_encode_answers_500_and_the_server_keeps_serving(lm):
    with running(create_app(Failing(lm))) as url:
        assert_openai_error(post(url, "/v1/embeddings", {"input": "boom"}), 500)
        assert post(url, "/v1/embeddings", {"input": "fine"}).status_code == 200


def metric(text, name):
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_requests_that_wait_together_share_a_batch_and_a_full_queue_gives_429(lm):
    gated = Gated(lm)
    app = create_app(gated, config=ServerConfig(max_queue=6))
    texts = [f"request number {i} waits" for i in range(7)]
    with running(app) as url, ThreadPoolExecutor(7) as pool:
        first = pool.submit(post, url, "/v1/embeddings", {"input": texts[0]})
        assert gated.entered.wait(30)  # the worker holds the first request
        waiting = [pool.submit(post, url, "/v1/embeddings", {"input": t}) for t in texts[1:]]
        deadline = time.monotonic() + 30
        while metric(httpx.get(f"{url}/metrics").text, "rnnembed_queue_depth") < 6:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        full = post(url, "/v1/embeddings", {"input": "one too many"})
        assert assert_openai_error(full, 429)["code"] == "queue_full"
        assert full.headers["retry-after"] == "1"
        busy = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            busy.embeddings.create(model="x", input="still too many")
        gated.release.set()
        answers = [first.result(), *(f.result() for f in waiting)]
        got = np.array([a.json()["data"][0]["embedding"] for a in answers])
        np.testing.assert_allclose(got, lm.encode(texts), atol=1e-6)
        text = httpx.get(f"{url}/metrics").text
    # two encode calls: the first request alone, then the six that waited, together
    assert metric(text, "rnnembed_batch_size_count") == 2
    assert metric(text, "rnnembed_batch_size_sum") == 7
    assert metric(text, 'rnnembed_batch_size_bucket{le="4"}') == 1
    assert metric(text, 'rnnembed_batch_size_bucket{le="8"}') == 2
    assert metric(text, 'rnnembed_requests_total{route="/v1/embeddings",status="429"}') == 2
    assert metric(text, "rnnembed_queue_depth") == 0


def test_no_batching_when_batches_are_capped_at_one_request(lm):
    gated = Gated(lm)
    app = create_app(gated, config=ServerConfig(max_batch_requests=1))
    with running(app) as url, ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, url, "/v1/embeddings", {"input": "first"})
        assert gated.entered.wait(30)
        rest = [pool.submit(post, url, "/v1/embeddings", {"input": f"n{i}"}) for i in range(3)]
        while metric(httpx.get(f"{url}/metrics").text, "rnnembed_queue_depth") < 3:
            time.sleep(0.01)
        gated.release.set()
        assert all(f.result().status_code == 200 for f in [first, *rest])
        text = httpx.get(f"{url}/metrics").text
    assert metric(text, 'rnnembed_batch_size_bucket{le="1"}') == 4


def test_search_in_every_mode(url, chunks):
    text, source = chunks[10]
    hits = post(url, "/v1/search", {"query": text, "k": 3}).json()["hits"]
    assert (hits[0]["text"], hits[0]["source"]) == (text, source)
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and len(hits) == 3
    for mode in ("bm25", "hybrid"):
        found = post(url, "/v1/search", {"query": text, "k": 5, "mode": mode}).json()
        assert found["mode"] == mode and found["hits"][0]["text"] == text
    prefix = source.rsplit(":", 1)[0]
    body = {"query": text, "k": 5, "filter": 'source like "elsewhere/%"'}
    assert post(url, "/v1/search", body).json()["hits"] == []
    body["filter"] = f'source like "{prefix}:%"'
    assert all(h["source"].startswith(prefix) for h in post(url, "/v1/search", body).json()["hits"])


def test_search_errors(url):
    assert (
        "unknown search mode"
        in assert_openai_error(post(url, "/v1/search", {"query": "a", "mode": "fuzzy"}), 400)[
            "message"
        ]
    )
    assert_openai_error(post(url, "/v1/search", {"query": "a", "k": 0}), 400)
    assert_openai_error(post(url, "/v1/search", {"query": "   "}), 400)
    assert_openai_error(post(url, "/v1/search", {"query": "a", "filter": "source =="}), 400)
    assert_openai_error(post(url, "/v1/search", {"k": 3}), 422, "query")
    assert_openai_error(post(url, "/v1/search", {"query": "a", "k": "three"}), 422, "k")
    typo = assert_openai_error(post(url, "/v1/search", {"query": "a", "top_k": 2}), 422, "top_k")
    assert typo["message"] == "unknown field 'top_k'; /v1/search takes query, k, mode, filter"


def test_documents_are_added_once(url):
    texts = ["Zeppelins float over the harbour.", "The plumber comes on Tuesday."]
    body = {"texts": texts, "sources": ["notes:1", "notes:2"], "metadata": [{"n": 1}, {"n": 2}]}
    first = post(url, "/v1/documents", body).json()
    again = post(url, "/v1/documents", body).json()
    assert first["added"] == 2 and again["added"] == 0 and again["ids"] == first["ids"]
    assert again["count"] == first["count"]
    hit = post(url, "/v1/search", {"query": "Zeppelins", "mode": "bm25"}).json()["hits"][0]
    assert (hit["text"], hit["source"], hit["metadata"]) == (texts[0], "notes:1", {"n": 1})
    bad = post(url, "/v1/documents", {"texts": ["a", "b"], "sources": ["one"]})
    assert "sources" in assert_openai_error(bad, 400)["message"]
    assert_openai_error(post(url, "/v1/documents", {"texts": "not a list"}), 422, "texts")
    typo = post(url, "/v1/documents", {"texts": ["a"], "source": ["notes:3"]})  # not "sources"
    assert "unknown field 'source'" in assert_openai_error(typo, 422, "source")["message"]


def test_without_a_store_search_and_documents_say_so(lm):
    with running(create_app(lm)) as url:
        for path, body in [("/v1/search", {"query": "a"}), ("/v1/documents", {"texts": ["a"]})]:
            error = assert_openai_error(post(url, path, body, headers={}), 404)
            assert "--db" in error["message"]
        assert post(url, "/v1/embeddings", {"input": "a"}, headers={}).status_code == 200


def test_models_lists_the_served_model(client, url):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
        client.models.retrieve("gpt-4")
    assert [httpx.head(f"{url}{path}").status_code for path in ("/", "/health")] == [200, 200]


def test_generate_matches_the_python_api(url, lm):
    body = {"prompt": "The", "max_tokens": 12, "temperature": 0.7, "top_k": 20, "seed": 3}
    answer = post(url, "/v1/generate", body).json()
    expected = lm.generate("The", max_tokens=12, temperature=0.7, top_k=20, seed=3)
    assert answer == {"model": "tiny", "text": expected}
    assert_openai_error(post(url, "/v1/generate", {"max_tokens": 100_000}), 400, "max_tokens")
    for temperature in (-1, "1", True):  # typed as strictly as every other field
        error = post(url, "/v1/generate", {"temperature": temperature})
        assert_openai_error(error, 422, "temperature")
    assert_openai_error(post(url, "/v1/generate", {"top_p": "0.9"}), 422, "top_p")


def test_metrics_count_requests_tokens_and_batches(url, lm):
    post(url, "/v1/embeddings", {"input": ["count these tokens"]})
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    assert metric(text, 'rnnembed_requests_total{route="/v1/embeddings",status="200"}') >= 1
    assert metric(text, "rnnembed_embedded_tokens_total") >= len(
        lm.tokenizer.encode("count these tokens")
    )
    assert metric(text, "rnnembed_batch_size_count") >= 1
    assert re.search(r'^rnnembed_request_duration_seconds_count\{route="/v1/embeddings"\} \d+$',
                     text, re.M)  # fmt: skip
    assert "# TYPE rnnembed_batch_size histogram" in text


def test_cli_warns_when_listening_beyond_loopback_without_a_key(lm, tmp_path, monkeypatch, capsys):
    lm.save(tmp_path / "model")
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append((app, options)))
    monkeypatch.delenv("RNNEMBED_API_KEY", raising=False)
    for argv, warned in [
        (["--host", "0.0.0.0"], True),
        (["--host", "0.0.0.0", "--api-key", "k"], False),
        (["--host", "127.0.0.1"], False),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["serve", str(tmp_path / "model"), *argv, "--port", "9"])
        assert exit_info.value.code in (0, None)
        assert ("without an API key" in capsys.readouterr().err) == warned
    assert served[0][1] == {"host": "0.0.0.0", "port": 9, "log_level": "info"}
    monkeypatch.setenv("RNNEMBED_API_KEY", "from-env")
    with pytest.raises(SystemExit):
        cli.main(["serve", str(tmp_path / "model"), "--host", "0.0.0.0"])
    assert "without an API key" not in capsys.readouterr().err
    with running(served[-1][0]) as url:  # the key came from the environment
        assert post(url, "/v1/embeddings", {"input": "a"}, headers={}).status_code == 401
        ok = post(
            url, "/v1/embeddings", {"input": "a"}, headers={"Authorization": "Bearer from-env"}
        )
        assert ok.status_code == 200


def test_rnnembed_serve_runs_as_a_command(lm, tmp_path):
    lm.save(tmp_path / "model")
    port = free_port()
    command = [sys.executable, "-m", "rnnembed", "serve", str(tmp_path / "model"), "--port",
               str(port), "--db", str(tmp_path / "served.db"), "--quiet"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "RNNEMBED_API_KEY": KEY}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "rnnembed serve did not answer in 60 s"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert (
            post(url, "/v1/documents", {"texts": ["served from the command"]}).json()["added"] == 1
        )
        hits = post(url, "/v1/search", {"query": "served from the command"}).json()["hits"]
        assert hits[0]["text"] == "served from the command"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert client.models.list().data[0].id == "model"
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, process.stderr.read()
