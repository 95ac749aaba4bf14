"""Prometheus metrics of one server process, on their own HTTP port (`serve --metrics-port`).

What is counted where:
- items by reward (the request's reward name) and status, scored items by reward and reason
  (for `code`, the sandboxes' outcomes), and refused items by reason: by the servicer, from
  the results it sends;
- per-item queue wait and run time by verifier: by the worker pool (a bulk job counts once,
  with its mean time per item);
- queue depth, ready workers, timeouts, worker deaths, respawns and recycled workers: read
  from the pool when scraped;
- health by service name (1 SERVING, 0 otherwise): whatever the server or a verifier (a
  judge's backend breaker, say) reports.
Nothing is recorded when metrics are off.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

MAX_SCRAPES = 16  # connections served at once; more are closed at once
SCRAPE_TIMEOUT_S = 5.0  # a connection that sends no complete request in this long is closed
_REASON = re.compile(r"[a-z0-9_:.-]{0,64}")
_MAX_REASON_LABELS = 1000
_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class PoolView(Protocol):
    stats: dict[str, int]

    @property
    def queued_items(self) -> int: ...

    @property
    def ready_workers(self) -> int: ...


class Metrics:
    """The server's metrics, in a registry of their own (several servers in one process, as
    in tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.items = Counter(
            "verifier_items", "Items answered, by reward and status.", ["reward", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.reasons = Counter(
            "verifier_item_reasons",
            "Items scored (status OK) by reward and reason: for `code`, the sandbox's outcome "
            "(time_limit, memory_limit, runtime_error, compile_error, wrong_answer, ...).",
            ["reward", "reason"],
            registry=self.registry,
        )
        self._reason_labels: set[tuple[str, str]] = set()
        self.refused = Counter(
            "verifier_refused_items",
            "Items answered OVERLOADED without being run, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "verifier_item_queue_seconds",
            "Time an item waited for a worker, by verifier.",
            ["verifier"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "verifier_item_run_seconds",
            "Time an item ran in a worker, by verifier.",
            ["verifier"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.health = Gauge(
            "verifier_health_serving",
            "1 when the health service reports SERVING for this service name, else 0.",
            ["service"],
            registry=self.registry,
        )
        self._http: Any = None

    def watch_pool(self, pool: PoolView) -> None:
        self.registry.register(_PoolCollector(pool))

    def count_results(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """`entries`: (reward name, status name, reason) of each item answered."""
        statuses: Tally[tuple[str, str]] = Tally()
        refused: Tally[str] = Tally()
        reasons: Tally[tuple[str, str]] = Tally()
        for reward, status, reason in entries:
            statuses[(reward, status)] += 1
            if status == "OVERLOADED":
                refused[reason] += 1
            elif status == "OK":
                reasons[(reward, reason)] += 1
        for (reward, status), n in statuses.items():
            self.items.labels(reward, status).inc(n)
        for reason, n in refused.items():
            self.refused.labels(reason).inc(n)
        for (reward, reason), n in reasons.items():
            self.reasons.labels(*self._reason_label(reward, reason)).inc(n)

    def _reason_label(self, reward: str, reason: str) -> tuple[str, str]:
        """Reasons are short codes, but a plugin may write anything: past
        `_MAX_REASON_LABELS` distinct pairs, or for a reason that is not a code, "other"."""
        key = (reward, reason if _REASON.fullmatch(reason) else "other")
        if key in self._reason_labels or len(self._reason_labels) < _MAX_REASON_LABELS:
            self._reason_labels.add(key)
            return key
        return reward, "other"

    def observe_job(self, verifier: str, queue_wait_s: float, run_s: float | None) -> None:
        """One item's (or a bulk job's mean per item) queue wait and run time."""
        self.queue_wait.labels(verifier).observe(queue_wait_s)
        if run_s is not None:
            self.run_time.labels(verifier).observe(run_s)

    def serve(self, port: int, host: str) -> int:
        """Starts the HTTP endpoint (a thread); returns the port it listens on.

        Not prometheus_client's start_http_server: its thread per connection waits forever
        for a request, so idle connections (a slowloris) added threads to the server's
        process without bound. Here a connection gets SCRAPE_TIMEOUT_S to send its request,
        and past MAX_SCRAPES at once, new ones are closed."""
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        server_class = type("_Server", (_ScrapeServer,), {"address_family": family[0][0]})
        app = make_wsgi_app(self.registry)
        self._http = make_server(host, port, app, server_class, handler_class=_ScrapeHandler)
        threading.Thread(
            target=self._http.serve_forever, name="verifier-metrics", daemon=True
        ).start()
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


class _ScrapeHandler(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT_S  # set on the connection's socket by StreamRequestHandler

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class _ScrapeServer(ThreadingWSGIServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_SCRAPES)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: closed at once
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that timed out or went away: nothing to print a traceback for."""


class _PoolCollector(Collector):
    def __init__(self, pool: PoolView) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Any]:
        stats = self._pool.stats
        yield GaugeMetricFamily(
            "verifier_queue_items", "Items waiting for a worker.", value=self._pool.queued_items
        )
        yield GaugeMetricFamily(
            "verifier_workers_ready", "Workers ready to take work.", value=self._pool.ready_workers
        )
        for key, name, help_text in (
            ("timeouts", "verifier_worker_timeouts", "Items killed at their time limit."),
            ("worker_deaths", "verifier_worker_deaths", "Workers that died (not timeouts)."),
            ("respawns", "verifier_worker_respawns", "Workers started to replace others."),
            ("retired", "verifier_workers_retired", "Workers replaced for their memory."),
        ):
            yield CounterMetricFamily(name, help_text, value=stats.get(key, 0))
