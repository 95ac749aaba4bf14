"""The standard gRPC services beside the verifier service: health (also a metric, and
NOT_SERVING while the worker pool has no capacity) and reflection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from verifier_server.config import ServerConfig
from verifier_server.registry import Registry
from verifier_server.server import SERVICE_NAME, parse_request

if TYPE_CHECKING:
    from verifier_server.metrics import Metrics

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Health(HealthServicer):
    """The standard health service, also shown as a metric when metrics are on."""

    def __init__(self, metrics: Metrics | None) -> None:
        super().__init__()
        self._metrics = metrics
        self._statuses: dict[str, Any] = {}
        self._shutting_down = False

    def serving(self, service: str) -> bool | None:
        """Whether `service` is SERVING; None for a name never set (for the HTTP /healthz)."""
        if service not in self._statuses:
            return None
        return not self._shutting_down and self._statuses[service] == SERVING

    async def enter_graceful_shutdown(self) -> None:
        self._shutting_down = True
        await super().enter_graceful_shutdown()

    async def set(self, service: str, status: Any) -> None:
        self._statuses[service] = status
        await super().set(service, status)
        if self._metrics is not None:
            serving = status == SERVING
            self._metrics.health.labels(service).set(1 if serving else 0)


def add_standard_services(
    health: HealthServicer, service_names: Sequence[str], server: grpc.aio.Server
) -> None:
    """Health and reflection, registered as their generated code would, except that requests
    arrive as bytes and are parsed here: bytes that are not the request message get
    INVALID_ARGUMENT, not UNKNOWN and an ERROR traceback in the log (health needs no token,
    so anyone who reaches the port could write those)."""
    from grpc_reflection.v1alpha import _async as reflection_aio
    from grpc_reflection.v1alpha import reflection_pb2

    check, response = health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    reflector = reflection_aio.ReflectionServicer(service_names)

    async def watch(payload: bytes, context: grpc.aio.ServicerContext) -> None:
        await health.Watch(
            await parse_request(check, payload, context), context
        )  # context.write()s

    async def reflect(
        payloads: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[Any]:
            async for payload in payloads:
                yield await parse_request(reflection_pb2.ServerReflectionRequest, payload, context)

        async for message in reflector.ServerReflectionInfo(requests(), context):
            yield message

    async def health_check(payload: bytes, context: grpc.aio.ServicerContext) -> Any:
        return await health.Check(await parse_request(check, payload, context), context)

    services = {
        HEALTH_SERVICE_NAME: {
            "Check": grpc.unary_unary_rpc_method_handler(
                health_check, response_serializer=response.SerializeToString
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch, response_serializer=response.SerializeToString
            ),
        },
        reflection.SERVICE_NAME: {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                reflect,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    }
    for name, handlers in services.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)


def capacity_reporter(
    health: HealthServicer, registry: Registry, config: ServerConfig, reported: set[str]
) -> Callable[[bool], None]:
    """The pool's capacity -> health: with no ready worker (a crash loop of respawns, say),
    the server, the named rewards and every verifier that runs in the pool are NOT_SERVING,
    so a load balancer or a probe stops sending work that could only time out."""
    names = [
        f"{SERVICE_NAME}/{name}"
        for name in [*registry.names(), *config.rewards]
        if name in config.rewards or registry.get(name).execution in ("process", "bulk")
    ]

    def report(has_capacity: bool) -> None:
        status = SERVING if has_capacity else NOT_SERVING

        async def apply() -> None:
            for service in ["", SERVICE_NAME, *names]:
                if service not in reported:  # a verifier's own word wins
                    await health.set(service, status)

        asyncio.get_running_loop().create_task(apply())

    return report
