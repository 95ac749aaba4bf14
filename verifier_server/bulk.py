"""Bulk scoring in a worker process: serialized items in, serialized results out.

For linear-time ("bulk") verifiers the per-item cost of converting protobuf to dataclasses
and back is as large as the verification itself; doing both in the worker keeps that work off
the server's event loop and its GIL. So this module, like the servicer, the dispatcher,
convert and the client, touches the generated protobuf code.
"""

from __future__ import annotations

from typing import Any

from verifier_server import convert
from verifier_server._proto.verifier.v1 import verifier_pb2 as pb
from verifier_server.execution import run_batch
from verifier_server.types import Item, Result, RewardSpec, Status
from verifier_server.verifiers.base import Verifier


def score_serialized(
    verifier: Verifier,
    params: Any,
    spec: RewardSpec,
    payload: bytes,
    indices: list[int],
    limits: convert.ItemLimits,
) -> bytes:
    """`payload`: a serialized ScoreRequest whose items all use `spec` (the caller's whole
    request, or just these items); `indices`: their positions in the caller's request (for
    error fields). Returns a serialized ScoreResponse with one result per item, in order."""
    messages = pb.ScoreRequest.FromString(payload).items
    results: list[Result | None] = [None] * len(messages)
    valid: list[Item] = []
    positions: list[int] = []
    for position, message in enumerate(messages):
        try:
            valid.append(convert.item_from_proto(message, limits, spec))
            positions.append(position)
        except convert.ItemError as exc:
            result = Result.failed(
                message.id, Status.INVALID_REQUEST, f"invalid_{exc.root}", exc.message
            )
            result.details["field"] = f"items[{indices[position]}].{exc.field}"
            results[position] = result
    for position, result in zip(positions, run_batch(verifier, valid, params), strict=True):
        results[position] = result
    return convert.results_to_response(results).SerializeToString()  # type: ignore[arg-type]
