"""A running server, assembled around the servicer (verifier_server.server): the worker pool,
stateful verifiers, the gRPC server with health and reflection, the HTTP/JSON front end
(verifier_server.http_api) on `server.http_port`, metrics; start, graceful stop, and `serve`
until SIGTERM.

The worker pool is started before any gRPC object exists (gRPC forbids forking after).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from aiohttp import web
from grpc_reflection.v1alpha import reflection

from verifier_server.access import AccessInterceptor, Quotas, load_tokens, server_credentials
from verifier_server.config import ServerConfig, ServerSettings
from verifier_server.dispatch import Dispatcher
from verifier_server.http_api import build_app
from verifier_server.lifecycle import ServerVerifiers
from verifier_server.registry import Registry
from verifier_server.resolver import Resolver
from verifier_server.scorer import Scorer
from verifier_server.server import SERVICE_NAME, VerifierServicer, add_servicer
from verifier_server.standard_services import (
    HEALTH_SERVICE_NAME,
    NOT_SERVING,
    SERVING,
    Health,
    add_standard_services,
    capacity_reporter,
)
from verifier_server.verifiers.code import sandbox_env

if TYPE_CHECKING:
    from verifier_server.metrics import Metrics
    from verifier_server.workers import WorkerPool

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A started server; `bound` lists the addresses it listens on."""

    server: grpc.aio.Server
    health: Health
    pool: WorkerPool
    threads: ThreadPoolExecutor
    bound: list[str]
    registry: Registry
    verifiers: ServerVerifiers | None = None
    metrics: Metrics | None = None
    http: web.AppRunner | None = None

    async def stop(self, grace_s: float) -> None:
        """Health NOT_SERVING, drain in-flight RPCs (and HTTP requests) for `grace_s`, then
        stop the workers."""
        await self.health.enter_graceful_shutdown()
        if self.http is None:
            await self.server.stop(grace_s)
        else:
            await asyncio.gather(self.server.stop(grace_s), self.http.cleanup())
        if self.verifiers is not None:
            await self.verifiers.close()
        await self.pool.close()
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self.metrics is not None:
            self.metrics.close()


async def start_server(config: ServerConfig, registry: Registry) -> RunningServer:
    """Starts the worker pool, then the gRPC server. Raises if a port cannot be bound."""
    settings, limits = config.server, config.limits
    # Files and secrets first: a bad path is a config error before anything starts.
    credentials = server_credentials(settings.tls) if settings.tls else None
    tokens = load_tokens(settings.auth) if settings.auth else None
    _warn_if_exposed(settings)
    resolver = Resolver(registry, config)
    pool = _start_pool(config)
    metrics = _pool_metrics(pool) if settings.metrics_port is not None else None
    health = Health(metrics)
    verifiers = ServerVerifiers(health, SERVICE_NAME, SERVING, NOT_SERVING)
    try:  # stateful verifiers (judge backends, reward models) set up before serving
        await verifiers.start(registry, config)
    except BaseException:
        await pool.close()
        raise
    threads = ThreadPoolExecutor(settings.threads, thread_name_prefix="verifier-thread")
    dispatcher = Dispatcher(resolver, Scorer(pool, threads, limits.max_queued_items), pool, limits)
    servicer = VerifierServicer(registry, config, dispatcher, Quotas(settings.auth), metrics)
    server = _grpc_server(servicer, health, tokens)
    try:
        bound, http = await _listen(server, servicer, health, credentials, tokens)
    except RuntimeError:
        await verifiers.close()
        await pool.close()
        raise
    await server.start()
    await _mark_serving(health, registry, config, verifiers.reported)
    pool.on_capacity = capacity_reporter(health, registry, config, verifiers.reported)
    return RunningServer(server, health, pool, threads, bound, registry, verifiers, metrics, http)


def _start_pool(config: ServerConfig) -> WorkerPool:
    """The worker pool, started: before any gRPC object exists, as gRPC forbids fork after."""
    from verifier_server.workers import WorkerPool

    settings = config.server
    sandbox_vars = sandbox_env.worker_env(config.sandbox, os.environ)
    sandbox_env.check_at_start({**os.environ, **sandbox_vars}, settings.workers)
    pool = WorkerPool(
        settings.workers,
        plugins=config.plugins,
        memory_mb=settings.worker_memory_mb,
        env=sandbox_vars,
    )
    pool.start(asyncio.get_running_loop())
    return pool


def _pool_metrics(pool: WorkerPool) -> Metrics:
    """Metrics (imported only when on), watching the pool."""
    from verifier_server.metrics import Metrics

    metrics = Metrics()
    metrics.watch_pool(pool)
    pool.observer = metrics
    return metrics


def _grpc_server(
    servicer: VerifierServicer, health: Health, tokens: dict[str, str] | None
) -> grpc.aio.Server:
    """The gRPC server (not yet bound) with the verifier service, health and reflection."""
    max_bytes = _max_message_bytes(servicer.config)
    # The interceptor costs a little per RPC: only when there are tokens or request ids to log.
    intercept = tokens is not None or servicer.config.server.log_format == "json"
    server = grpc.aio.server(
        interceptors=[AccessInterceptor(tokens)] if intercept else None,
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the port must fail, not share it
        ],
    )
    add_servicer(servicer, server)
    service_names = [SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME]
    add_standard_services(health, service_names, server)
    return server


async def _listen(
    server: grpc.aio.Server,
    servicer: VerifierServicer,
    health: Health,
    credentials: grpc.ServerCredentials | None,
    tokens: dict[str, str] | None,
) -> tuple[list[str], web.AppRunner | None]:
    """Binds every configured port -- gRPC (TCP, Unix socket), HTTP, metrics -- and returns
    the addresses bound and the HTTP front end; RuntimeError naming what could not be bound
    (with the HTTP front end, if started, stopped again)."""
    settings = servicer.config.server
    bound = []
    http: web.AppRunner | None = None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    where = f"{host}:{settings.port}"  # what could not be bound, for the error
    try:
        if settings.port is not None:
            port = (
                server.add_secure_port(where, credentials)
                if credentials is not None
                else server.add_insecure_port(where)
            )
            bound.append(f"{host}:{port}")
        if settings.unix:
            where = f"unix:{settings.unix}"
            server.add_insecure_port(where)
            bound.append(where)
        if settings.http_port is not None:
            where = f"{host}:{settings.http_port} (HTTP)"
            http = await _start_http(servicer, health, tokens)
            bound.append(f"{'https' if settings.tls else 'http'}://{host}:{http.addresses[0][1]}")
        if servicer.metrics is not None:
            assert settings.metrics_port is not None
            where = f"{host}:{settings.metrics_port} (metrics)"
            port = servicer.metrics.serve(settings.metrics_port, settings.host)
            bound.append(f"http://{host}:{port}/metrics")
    except (RuntimeError, OSError) as exc:
        if http is not None:
            await http.cleanup()
        raise RuntimeError(f"cannot listen on {where}: {exc}") from None
    return bound, http


async def _start_http(
    servicer: VerifierServicer, health: Health, tokens: dict[str, str] | None
) -> web.AppRunner:
    """The HTTP/JSON front end (verifier_server.http_api) on `server.http_port`, with the
    gRPC port's TLS and tokens."""
    settings = servicer.config.server
    ssl_context = None
    if settings.tls is not None:
        tls = settings.tls
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            ssl_context.load_verify_locations(tls.client_ca_file)
            ssl_context.verify_mode = ssl.CERT_REQUIRED
    app = build_app(servicer, health.serving, tokens, _max_message_bytes(servicer.config))
    # handler_cancellation: a client that hangs up cancels its request's work, as a cancelled
    # RPC does (aiohttp's default lets the handler run on for nobody).
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.http_port, ssl_context=ssl_context,
        shutdown_timeout=settings.grace_s, reuse_port=False,
    )  # fmt: skip
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _mark_serving(
    health: Health, registry: Registry, config: ServerConfig, reported: set[str]
) -> None:
    """The server, the service and each verifier and named reward SERVING, except where a
    stateful verifier has reported its own health (its word wins)."""
    await health.set("", SERVING)
    await health.set(SERVICE_NAME, SERVING)
    for name in [*registry.names(), *config.rewards]:
        if f"{SERVICE_NAME}/{name}" not in reported:
            await health.set(f"{SERVICE_NAME}/{name}", SERVING)


def _max_message_bytes(config: ServerConfig) -> int:
    """`limits.max_message_mb` in bytes: the cap on a message, gRPC or HTTP body."""
    return config.limits.max_message_mb * 1024 * 1024


def _warn_if_exposed(settings: ServerSettings) -> None:
    """Off loopback, anyone who reaches the port runs code in the sandboxes and spends judge
    budget: say so when TLS or tokens are missing."""
    if settings.host in ("127.0.0.1", "::1", "localhost") or settings.port is None:
        return
    missing = [
        what for what, on in (("TLS", settings.tls), ("auth tokens", settings.auth)) if not on
    ]
    if missing:
        message = (
            f"listening on {settings.host} without {' and '.join(missing)}: anyone who can reach "
            "the port can run code in the sandboxes and spend judge budget (see server.tls and "
            "server.auth in the README)"
        )
        log.warning(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


async def serve(
    config: ServerConfig, registry: Registry, ready: asyncio.Event | None = None
) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully within `config.server.grace_s`."""
    running = await start_server(config, registry)
    log.info(
        "verifier-server listening on %s with %d workers",
        ", ".join(running.bound),
        config.server.workers,
    )
    print(f"verifier-server listening on {', '.join(running.bound)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping: draining in-flight work for up to %.1f s", config.server.grace_s)
    with contextlib.suppress(asyncio.CancelledError):
        await running.stop(config.server.grace_s)
