"""Prometheus metrics of one server process, on their own HTTP port (`serve --metrics-port`).

What is counted where:
- items by reward (the request's reward name) and status, and refused items by reason: by
  the servicer, from the results it sends;
- per-item queue wait and run time by verifier: by the worker pool (a bulk job counts once,
  with its mean time per item);
- queue depth, ready workers, timeouts, worker deaths, respawns and recycled workers: read
  from the pool when scraped;
- health by service name (1 SERVING, 0 otherwise): whatever the server or a verifier (a
  judge's backend breaker, say) reports.
Nothing is recorded when metrics are off.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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
        for reward, status, reason in entries:
            statuses[(reward, status)] += 1
            if status == "OVERLOADED":
                refused[reason] += 1
        for (reward, status), n in statuses.items():
            self.items.labels(reward, status).inc(n)
        for reason, n in refused.items():
            self.refused.labels(reason).inc(n)

    def observe_job(self, verifier: str, queue_wait_s: float, run_s: float | None) -> None:
        """One item's (or a bulk job's mean per item) queue wait and run time."""
        self.queue_wait.labels(verifier).observe(queue_wait_s)
        if run_s is not None:
            self.run_time.labels(verifier).observe(run_s)

    def serve(self, port: int, host: str) -> int:
        """Starts the HTTP endpoint (a thread); returns the port it listens on."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


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
