"""Dynamic batching: embedding requests that arrive together share one ``encode`` call.

One worker thread owns the model's embedding work, outside any event loop. Requests wait in a
bounded queue; each time the worker is free it takes the oldest request and, in arrival order,
every queued request after it that still fits the token budget (``max_batch_tokens``, like
text-embeddings-inference's flag of that name) and the request cap, and embeds all their texts
in one call. Nothing waits on a timer: under light load a request runs at once, alone; under
heavy load requests pile up while the worker is busy and leave together. A request larger
than the budget runs alone. A full queue refuses new requests (:class:`QueueFull`) instead of
growing without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` requests already; try again later."""


@dataclass
class _Job:
    texts: list
    tokens: int
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class Batch:
    """What one ``encode`` call covered: requests merged, texts, tokens, seconds taken."""

    requests: int
    texts: int
    tokens: int
    seconds: float


class Batcher:
    """Merge concurrent ``submit`` calls into few ``encode(texts)`` calls on one worker thread.

    ``encode`` maps a list of texts (as strings or, as the server sends them, token id lists)
    to an array with one row per text. ``max_batch_requests`` of 1 turns batching off (each
    request alone), for comparison. ``on_batch`` is called on the worker thread after each
    call. Start with :meth:`start`, stop with :meth:`close`.
    """

    def __init__(
        self,
        encode: Callable[[list], np.ndarray],
        *,
        max_batch_tokens: int = 16_384,
        max_batch_requests: int | None = None,
        max_queue: int = 512,
        on_batch: Callable[[Batch], None] | None = None,
    ):
        limits = (
            max_batch_tokens,
            max_queue,
            1 if max_batch_requests is None else max_batch_requests,
        )
        if min(limits) < 1:
            raise ValueError("max_batch_tokens, max_batch_requests and max_queue must be >= 1")
        self._encode, self._on_batch = encode, on_batch
        self.max_batch_tokens, self.max_batch_requests = max_batch_tokens, max_batch_requests
        self.max_queue = max_queue
        self._pending: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (not counting the batch being embedded)."""
        with self._ready:
            return len(self._pending)

    def start(self) -> None:
        """Start the worker thread."""
        with self._ready:
            self._closed = False
        self._thread = threading.Thread(target=self._work, name="rnnembed-batcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop taking requests, finish the queued ones, and stop the worker thread."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def submit(self, texts: Sequence, tokens: int) -> Future:
        """Queue one request's texts (``tokens`` long in all); the future gets their vectors.

        Raises :class:`QueueFull` when ``max_queue`` requests are waiting already.
        """
        job = _Job(list(texts), tokens)
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting already")
            self._pending.append(job)
            self._ready.notify()
        return job.future

    def _take(self) -> list[_Job] | None:
        """The next batch (waiting for one), or None once closed and drained."""
        with self._ready:
            while not self._pending and not self._closed:
                self._ready.wait()
            if not self._pending:
                return None
            limit = self.max_batch_requests or len(self._pending)
            batch: list[_Job] = []
            tokens = 0
            while self._pending and len(batch) < limit:
                job = self._pending[0]
                if batch and tokens + job.tokens > self.max_batch_tokens:
                    break
                self._pending.popleft()
                if job.future.set_running_or_notify_cancel():  # False: its caller went away
                    batch.append(job)
                    tokens += job.tokens
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        texts = [text for job in batch for text in job.texts]
        start = time.perf_counter()
        try:
            vectors = self._encode(texts)
        except Exception as exc:  # every caller in the batch gets the error
            log.exception("embedding a batch of %d texts failed", len(texts))
            for job in batch:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - start
        begin = 0
        for job in batch:
            job.future.set_result(vectors[begin : begin + len(job.texts)])
            begin += len(job.texts)
        if self._on_batch is not None:
            try:  # a failing observer must not stop the worker: every later request would hang
                self._on_batch(Batch(len(batch), len(texts), sum(j.tokens for j in batch), seconds))
            except Exception:
                log.exception("on_batch failed")
