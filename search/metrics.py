"""``GET /metrics``: what ``semsearch serve`` is doing, in the Prometheus text format.

Built with ``prometheus-client`` on a registry of the app's own (two apps in one process, as in
the tests, never share counters). The metrics (names as scraped):

- ``semsearch_requests_total{route,method,status}``: requests answered; ``route`` is the route's
  template (``/documents/{doc_id:path}``), never the raw path, so ids do not become labels;
- ``semsearch_request_seconds{route,method}``: latency histogram of every route (``/search``,
  ``/embed``, ``/faq/answer`` among them);
- ``semsearch_errors_total{route,kind}``: responses with an error status, ``kind`` client (4xx)
  or server (5xx);
- ``semsearch_batch_size``: histogram of the items in each micro-batch a worker ran;
- ``semsearch_model_calls_total{kind}``: model calls the workers made (one per batch holding
  searches or FAQ questions, ``kind="search"``; one per embed request, ``kind="embed"``);
- ``semsearch_write_seconds{kind}``: histogram of write durations (``add``, ``delete``);
- ``semsearch_index_generation``, ``semsearch_index_documents``, ``semsearch_index_passages``:
  read from the index's committed state at each scrape.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from index.errors import SemsearchError
from index.storage.listing import reading

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class IndexCollector:
    """The committed generation and the counts of the index, read at each scrape."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with reading(self.folder) as conn:
                row = conn.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
                generation = int(row[0]) if row else 0
                documents = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
                passages = conn.execute("SELECT count(*) FROM passages").fetchone()[0]
        except (SemsearchError, OSError, ValueError, sqlite3.Error):  # no index (yet): no index metrics
            return
        yield GaugeMetricFamily("semsearch_index_generation", "The index's committed generation.", value=generation)
        yield GaugeMetricFamily("semsearch_index_documents", "Documents in the index.", value=documents)
        yield GaugeMetricFamily("semsearch_index_passages", "Passages (vectors) in the index.", value=passages)


class Metrics:
    """The counters and histograms of one app."""

    def __init__(self, index_folder: Path):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("semsearch_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("semsearch_request_seconds", "Time to answer a request, by route.",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        self.errors = Counter("semsearch_errors", "Responses with an error status: client (4xx) or server (5xx).",
                              ["route", "kind"], registry=registry)
        self.batch_size = Histogram("semsearch_batch_size", "Items in each micro-batch a worker ran.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.model_calls = Counter("semsearch_model_calls", "Model calls made by the workers.", ["kind"],
                                   registry=registry)
        self.writes = Histogram("semsearch_write_seconds", "Time a write took (add, delete).", ["kind"],
                                buckets=LATENCY_BUCKETS, registry=registry)
        registry.register(IndexCollector(index_folder))

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
        if status >= 400:
            self.errors.labels(route, "server" if status >= 500 else "client").inc()

    def runner(self, run: Callable[[list[Any]], list[Any]]) -> Callable[[list[Any]], list[Any]]:
        """A worker's batch runner that counts its batches and model calls."""
        def counted(items: list[Any]) -> list[Any]:
            self.batch_size.observe(len(items))
            kinds = [getattr(item, "kind", None) for item in items]
            if any(k in ("search", "faq") for k in kinds):
                self.model_calls.labels("search").inc()
            if kinds.count("embed"):
                self.model_calls.labels("embed").inc(kinds.count("embed"))
            return run(items)

        return counted

    @contextmanager
    def write(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.writes.labels(kind).observe(time.perf_counter() - started)

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
