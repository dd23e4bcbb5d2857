"""The HTTP server: a thin FastAPI shell over ``LanguageModel`` and ``VectorStore``.

Routes:

- ``POST /v1/embeddings``: OpenAI's embeddings API. ``input`` is a string, a list of strings,
  a list of token ids or a list of lists of token ids. Token ids are the model's own (those of
  ``lm.tokenizer``) and are read as given: a list of ids gets the vector of
  ``lm.encode_ids([ids])``, which for ``ids = lm.tokenizer.encode(text)`` is the vector of
  ``lm.encode([text])``. ``encoding_format`` is
  ``float`` (the default) or ``base64`` (little-endian float32 bytes, what the official
  clients ask for); ``dimensions`` must equal the model's dimension if given. ``model`` is
  echoed back as the served model's name (one model per server). ``usage`` counts the
  model's tokens.
- ``POST /v1/search`` (``query``, ``k``, ``mode``, ``filter``) and ``POST /v1/documents``
  (``texts``, ``sources``, ``metadata``; idempotent) over the store, if the app has one.
- ``POST /v1/generate`` (``prompt``, ``max_tokens``, ``temperature``, ``top_k``, ``top_p``,
  ``seed``): text sampled from the language model. These three refuse a field they do not
  take (422), so a misspelled one is not ignored; the embeddings route, like OpenAI's, lets
  clients send more.
- ``GET /v1/models`` (OpenAI's list) and ``GET /v1/models/{id}``, ``GET /health``, ``GET
  /metrics`` (Prometheus text) and ``GET /``, the search page (``/health`` and ``/`` answer HEAD
  too).

Limits (``ServerConfig``; by default OpenAI's), in the model's tokens, checked before any work
(400, ``param`` naming the field): 2,048 inputs, 8,192 tokens per input and 300,000 per request
for the embeddings' ``input`` and the documents' ``texts``; 8,192 tokens for a search ``query``
and a ``prompt``.

With an ``api_key`` every route but ``/health`` and the page (static HTML that asks for the key
and sends it with each call) needs ``Authorization: Bearer KEY``. Errors come in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 bad input, 401 bad or missing key,
404 unknown route or no store, 413 body over ``max_body_bytes`` (refused before it is parsed),
415 a compressed body, 422 wrong types, 429 batching queue full, 500 a bug (logged). Embedding
runs on the batcher's worker thread (:mod:`rnnembed.batching`), everything else that touches
the model or the store on a worker thread too: the event loop only parses, routes and answers.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnembed.batching import Batch, Batcher, QueueFull
from rnnembed.config import DEFAULT_TEMPERATURE, SEEDS
from rnnembed.errors import RnnembedError
from rnnembed.tokenizer import check_unicode

if TYPE_CHECKING:
    from rnnembed.language_model import LanguageModel
    from rnnembed.store import VectorStore

ROUTES = (
    "/",
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/embeddings",
    "/v1/search",
    "/v1/documents",
    "/v1/generate",
)
PUBLIC = ("/", "/health")  # no key needed: the page holds no data, it asks for the key
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class ServerConfig:
    """Limits and batching. Defaults: OpenAI's request limits, TEI's batch token budget."""

    model_name: str = "rnnembed"
    pooling: str = "sif"  # of /v1/embeddings (the CLI serves a store's own)
    max_inputs: int = 2_048
    max_input_tokens: int = 8_192
    max_request_tokens: int = 300_000
    max_body_bytes: int = 8 * 2**20
    max_batch_tokens: int = 16_384
    max_batch_requests: int | None = None  # 1: no dynamic batching
    max_queue: int = 512  # embedding requests waiting; more get 429
    max_generate_tokens: int = 1_024

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, int) and value < 1:
                raise RnnembedError(f"{name} must be at least 1, not {value}")


class ApiError(Exception):
    """An error answered in OpenAI's shape with this HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


# -- request bodies -----------------------------------------------------------------------------

Input = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class EmbeddingRequest(BaseModel):
    input: Input
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = None


class OwnRequest(BaseModel):
    """The body of an endpoint of ours (not OpenAI's, whose clients send fields of their own):
    an unknown field is refused, so a misspelled one ("source", "top_k") is not ignored."""

    model_config = ConfigDict(extra="forbid")


class SearchRequest(OwnRequest):
    query: StrictStr
    k: StrictInt = 10
    mode: StrictStr = "dense"
    filter: StrictStr | None = None


class DocumentsRequest(OwnRequest):
    texts: list[StrictStr]
    sources: list[StrictStr] | None = None
    metadata: list[dict[str, Any]] | None = None


class GenerateRequest(OwnRequest):
    prompt: StrictStr = ""
    max_tokens: StrictInt = Field(100, ge=1)
    temperature: StrictFloat = Field(DEFAULT_TEMPERATURE, ge=0, allow_inf_nan=False)
    top_k: StrictInt = Field(0, ge=0)
    top_p: StrictFloat = Field(1.0, gt=0, le=1)
    seed: StrictInt | None = Field(None, ge=SEEDS[0], le=SEEDS[1])


OWN_BODIES: dict[str, type[OwnRequest]] = {
    "/v1/search": SearchRequest,
    "/v1/documents": DocumentsRequest,
    "/v1/generate": GenerateRequest,
}


# -- metrics ------------------------------------------------------------------------------------


class _Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {n}'
            for bound, n in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        tail = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{tail} {self.sum:.6g}", f"{name}_count{tail} {self.count}"]


class Metrics:
    """Counters and histograms, rendered in Prometheus's text format (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency = {route: _Histogram(LATENCY_BUCKETS) for route in (*ROUTES, "other")}
        self.tokens = self.inputs = 0
        self.batch_requests, self.batch_texts = _Histogram(BATCH_BUCKETS), _Histogram(BATCH_BUCKETS)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[route, status] += 1
            self.latency[route].observe(seconds)

    def embedded(self, inputs: int, tokens: int) -> None:
        with self._lock:
            self.inputs += inputs
            self.tokens += tokens

    def batch(self, batch: Batch) -> None:
        with self._lock:
            self.batch_requests.observe(batch.requests)
            self.batch_texts.observe(batch.texts)

    def render(self, queue_depth: int) -> str:
        with self._lock:
            out = [
                "# HELP rnnembed_requests_total HTTP requests answered, by route and status.",
                "# TYPE rnnembed_requests_total counter",
                *(
                    f'rnnembed_requests_total{{route="{route}",status="{status}"}} {n}'
                    for (route, status), n in sorted(self.requests.items())
                ),
                "# HELP rnnembed_request_duration_seconds Time to answer a request, by route.",
                "# TYPE rnnembed_request_duration_seconds histogram",
            ]
            for route, histogram in self.latency.items():
                if histogram.count:
                    out += histogram.lines("rnnembed_request_duration_seconds", f'route="{route}"')
            out += [
                "# HELP rnnembed_embedded_tokens_total Tokens embedded (the model's tokens).",
                "# TYPE rnnembed_embedded_tokens_total counter",
                f"rnnembed_embedded_tokens_total {self.tokens}",
                "# HELP rnnembed_embedded_inputs_total Inputs (texts) embedded.",
                "# TYPE rnnembed_embedded_inputs_total counter",
                f"rnnembed_embedded_inputs_total {self.inputs}",
                "# HELP rnnembed_batch_size Embedding requests merged into one encode call.",
                "# TYPE rnnembed_batch_size histogram",
                *self.batch_requests.lines("rnnembed_batch_size"),
                "# HELP rnnembed_batch_texts Texts embedded by one encode call.",
                "# TYPE rnnembed_batch_texts histogram",
                *self.batch_texts.lines("rnnembed_batch_texts"),
                "# HELP rnnembed_queue_depth Embedding requests waiting for the model.",
                "# TYPE rnnembed_queue_depth gauge",
                f"rnnembed_queue_depth {queue_depth}",
            ]
        return "\n".join(out) + "\n"


# -- the middleware: metrics, key, body size -----------------------------------------------------


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit:,} bytes")


class _Guard:
    """Count and time every request; refuse a missing or wrong key (401) and a body over the
    limit (413: at once when Content-Length says so, else as soon as the bytes read pass it)."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int, metrics: Metrics):
        self.app, self.api_key, self.limit, self.metrics = app, api_key, max_body_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status, start = 500, time.perf_counter()

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal.response()(scope, receive, send_counted)
            else:
                await self.app(scope, self._limited(receive), send_counted)
        finally:
            self.metrics.request(route, status, time.perf_counter() - start)

    def _refusal(self, scope: Scope) -> ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"] not in PUBLIC:
            given = headers.get("authorization", "")
            scheme, _, key = given.partition(" ")
            if not given:
                message = "no API key given: send it in the header 'Authorization: Bearer KEY'"
            elif scheme.lower() != "bearer" or not hmac.compare_digest(
                key.strip().encode(), self.api_key.encode()
            ):
                message = "incorrect API key"
            else:
                message = None
            if message is not None:
                headers_out = {"WWW-Authenticate": "Bearer"}
                return ApiError(401, message, code="invalid_api_key", headers=headers_out)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            return ApiError(
                415,
                f"the request body is {encoding}-encoded; send it uncompressed",
                code="unsupported_media_type",
            )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return ApiError(
                413,
                f"the request body ({int(length):,} bytes) is over the limit of "
                f"{self.limit:,}; send fewer or shorter inputs per request",
                code="request_too_large",
            )
        return None

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge(self.limit)
            return message

        return limited


# -- the app ------------------------------------------------------------------------------------


def check_api_key(api_key: str | None) -> None:
    """RnnembedError unless ``api_key`` is None (no key) or a key an HTTP header can carry and
    a client send as it is: visible ASCII, no spaces (the key itself is never echoed)."""
    if api_key is None:
        return
    if not isinstance(api_key, str) or not api_key:
        raise RnnembedError(
            "the API key is empty (--api-key or RNNEMBED_API_KEY); give one, or leave both unset "
            "to serve without a key"
        )
    if not all("!" <= c <= "~" for c in api_key):
        raise RnnembedError(
            "the API key holds a space, a control or a non-ASCII character, which clients "
            "cannot send in an HTTP header as it is; use visible ASCII characters only"
        )


def create_app(
    lm: LanguageModel,
    store: VectorStore | None = None,
    api_key: str | None = None,
    config: ServerConfig | None = None,
) -> FastAPI:
    """The FastAPI app serving ``lm`` (and ``store``, if given); see the module docstring.

    The caller keeps ownership of ``store`` (close it after the server stops). The batcher's
    worker thread runs while the app's lifespan does (uvicorn starts and stops it).
    """
    check_api_key(api_key)
    config = config or ServerConfig()
    metrics = Metrics()
    dim = lm.dim(config.pooling)
    tokenizer = lm.tokenizer
    batcher = Batcher(
        lambda token_ids: lm.encode_ids(token_ids, pooling=config.pooling),
        max_batch_tokens=config.max_batch_tokens,
        max_batch_requests=config.max_batch_requests,
        max_queue=config.max_queue,
        on_batch=metrics.batch,
    )
    store_lock = threading.Lock()
    served = {  # the one model of /v1/models
        "id": config.model_name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "rnnembed",
    }
    page = files("rnnembed").joinpath("static/index.html").read_text(encoding="utf-8")
    page = page.replace("__DEFAULT_TEMPERATURE__", str(DEFAULT_TEMPERATURE))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)

    app = FastAPI(title="rnnembed", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(
        _Guard, api_key=api_key, max_body_bytes=config.max_body_bytes, metrics=metrics
    )
    _add_error_handlers(app)

    def check_count(items: Sequence[object], param: str) -> None:
        """ApiError if ``items`` (the field ``param``) holds more than ``max_inputs``."""
        if len(items) > config.max_inputs:
            raise ApiError(
                400,
                f"{param} holds {len(items):,} items; the limit is {config.max_inputs:,} per "
                "request",
                param=param,
            )

    def prepare(
        items: list[str] | list[list[int]], param: str = "input", single: bool = False
    ) -> list[list[int]]:
        """The token ids of each item of the field ``param`` (texts are tokenized, lists of ids
        taken as given; ``single``: the field held one item, named without an index); ApiError
        if an item is not Unicode, holds an id outside the vocabulary or is over a token limit.
        Runs the tokenizer: call it off the loop."""
        for i, item in enumerate(items):
            try:
                if isinstance(item, str):
                    check_unicode(item)
                else:
                    tokenizer.check_ids(item)
            except RnnembedError as exc:
                hint = (
                    ""
                    if isinstance(item, str)
                    else "; send text, or ids from this model's tokenizer (LangChain: "
                    "OpenAIEmbeddings(check_embedding_ctx_length=False))"
                )
                raise ApiError(
                    400, f"{_item_name(param, i, single)}: {exc}{hint}", param=param
                ) from None
        texts = [item for item in items if isinstance(item, str)]
        encoded = iter(tokenizer.encode_batch(texts))
        token_ids = [next(encoded) if isinstance(item, str) else item for item in items]
        counts = [len(ids) for ids in token_ids]
        for i, n in enumerate(counts):
            if n > config.max_input_tokens:
                raise ApiError(
                    400,
                    f"{_item_name(param, i, single)} is {n:,} tokens long; the limit is "
                    f"{config.max_input_tokens:,} tokens per input: split it",
                    param=param,
                )
        if sum(counts) > config.max_request_tokens:
            raise ApiError(
                400,
                f"the request holds {sum(counts):,} tokens; the limit is "
                f"{config.max_request_tokens:,} per request: send fewer inputs per request",
                param=param,
            )
        return token_ids

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> Response:
        items = body.input
        single = isinstance(items, str) or bool(items and isinstance(items[0], int))
        if single:
            items = [items]
        if not items:
            raise ApiError(400, "input is empty: give a text or a list of texts", param="input")
        check_count(items, "input")
        empty = next((i for i, item in enumerate(items) if len(item) == 0), None)
        if empty is not None:
            name = _item_name("input", empty, single)
            raise ApiError(400, f"{name} is empty; give non-empty inputs", param="input")
        if body.dimensions is not None and body.dimensions != dim:
            raise ApiError(
                400,
                f"this model gives {dim}-dimensional embeddings; dimensions={body.dimensions} "
                f"cannot be served (leave dimensions out, or pass {dim})",
                param="dimensions",
            )
        token_ids = await run_in_threadpool(prepare, items, "input", single)
        tokens = sum(len(ids) for ids in token_ids)
        try:
            future = batcher.submit(token_ids, tokens)
        except QueueFull:
            raise ApiError(
                429,
                f"the server is busy ({config.max_queue} requests queued); retry shortly",
                type="rate_limit_exceeded",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        vectors = await asyncio.wrap_future(future)
        metrics.embedded(len(token_ids), tokens)
        content = await run_in_threadpool(
            _embedding_body, vectors, body.encoding_format, config.model_name, tokens
        )
        return Response(content, media_type="application/json")

    def need_store() -> VectorStore:
        if store is None:
            raise ApiError(
                404,
                "this server has no index; start it with --db to search and add documents",
                code="no_index",
            )
        return store

    @app.post("/v1/search")
    async def search(body: SearchRequest) -> dict:
        chosen = need_store()
        await run_in_threadpool(prepare, [body.query], "query", True)

        def run() -> list:
            with store_lock:
                return chosen.search(body.query, k=body.k, mode=body.mode, filter=body.filter)

        hits = await run_in_threadpool(run)
        return {"query": body.query, "mode": body.mode, "hits": [hit.to_dict() for hit in hits]}

    @app.post("/v1/documents")
    async def documents(body: DocumentsRequest) -> dict:
        chosen = need_store()
        check_count(body.texts, "texts")
        await run_in_threadpool(prepare, body.texts, "texts")

        def run() -> dict:
            with store_lock:
                before = chosen.count()
                ids = chosen.add(body.texts, sources=body.sources, metadata=body.metadata)
                count = chosen.count()
            return {"ids": ids, "added": count - before, "count": count}

        return await run_in_threadpool(run)

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest) -> dict:
        if body.max_tokens > config.max_generate_tokens:
            raise ApiError(
                400,
                f"max_tokens is at most {config.max_generate_tokens:,}",
                param="max_tokens",
            )
        await run_in_threadpool(prepare, [body.prompt], "prompt", True)
        text = await run_in_threadpool(
            lm.generate,
            body.prompt,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            seed=body.seed,
        )
        return {"model": config.model_name, "text": text}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [served]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        if model_id != config.model_name:
            raise ApiError(
                404,
                f"model {model_id!r} is not served here; this server serves {config.model_name!r}",
                param="model",
                code="model_not_found",
            )
        return served

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(batcher.depth), media_type="text/plain; version=0.0.4"
        )

    @app.api_route("/", methods=["GET", "HEAD"])
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app


def _item_name(param: str, index: int, single: bool) -> str:
    """How an error names item ``index`` of the field ``param``: ``input[2]``, or ``input``
    when the field held one."""
    return param if single else f"{param}[{index}]"


def _embedding_body(vectors: np.ndarray, encoding: str, model: str, tokens: int) -> bytes:
    """OpenAI's embeddings response, as JSON bytes."""
    if encoding == "base64":
        values: list = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
    else:
        values = vectors.astype(np.float32).tolist()
    data = [
        {"object": "embedding", "index": i, "embedding": value} for i, value in enumerate(values)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    body = {"object": "list", "data": data, "model": model, "usage": usage}
    return json.dumps(body, separators=(",", ":")).encode()


FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"  # FastAPI's words


def _not_json() -> JSONResponse:
    return ApiError(
        400, "the request body is not valid JSON in UTF-8", code="invalid_json"
    ).response()


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape."""
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}

    @app.exception_handler(ApiError)
    async def api_error(request: Any, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_UNREADABLE_BODY:  # not UTF-8, ...
            return _not_json()
        return ApiError(
            exc.status_code, str(exc.detail), code=codes.get(exc.status_code)
        ).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Any, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            return _not_json()
        first = errors[0]
        loc = [str(part) for part in first["loc"][1:]]  # without "body"
        param = loc[0] if loc else None
        if first["type"] == "extra_forbidden":
            body = OWN_BODIES.get(request.url.path)
            takes = f"; {request.url.path} takes {', '.join(body.model_fields)}" if body else ""
            message = f"unknown field '{'.'.join(loc)}'{takes}"
        elif first["type"] == "missing":
            message = f"'{'.'.join(loc)}' is required" if loc else "the request needs a JSON body"
        elif param == "input":
            message = (
                "invalid 'input': give a string, a list of strings, a list of token ids or a "
                "list of lists of token ids"
            )
        elif param is None:
            message = (
                "the request body is missing or not a JSON object (send one, with "
                f"'Content-Type: application/json'): {first['msg']}"
            )
        else:
            message = f"invalid '{'.'.join(loc)}': {first['msg']}"
        return ApiError(422, message, param=param, code=first["type"]).response()

    @app.exception_handler(RnnembedError)
    async def user_error(request: Any, exc: RnnembedError) -> JSONResponse:
        return ApiError(400, str(exc)).response()

    @app.exception_handler(Exception)
    async def server_error(request: Any, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, and uvicorn logs its traceback.
        return ApiError(500, "internal server error (logged)", type="server_error").response()
